"""An upstream port as every frontend sees it: its number and name, the protocol decision (with
its reason), where its endpoints come from, and the subsets that narrow them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from meshxds import ir
from meshxds.model import core
from meshxds.translators.protocol import Protocol, ProtocolDecision, decide_port_protocol
from meshxds.translators.upstream.endpoints import EndpointIndex, LabelledEndpoint

__all__ = ["UpstreamPort", "service_port"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamPort:
    """One port of a Kubernetes Service or an Istio ServiceEntry."""

    number: int
    name: str
    decision: ProtocolDecision
    endpoint_key: ir.EndpointKey | None = None
    """Where the endpoints come from in the shared ``EndpointIndex``; clusters keep it when EDS."""
    endpoints: tuple[LabelledEndpoint, ...] = ()
    """With their labels, for frontends that select subsets here (Istio); empty when the
    frontend asks the index by ``endpoint_key`` (Gateway API)."""

    @property
    def protocol(self) -> Protocol:
        return self.decision.protocol

    def subset(self, labels: Mapping[str, str]) -> tuple[tuple[ir.LbEndpoint, ...], ir.EndpointKey | None]:
        """The endpoints carrying ``labels`` (each once, sorted) and the key that names them
        (an empty selector: every endpoint, under the port's own key)."""
        chosen = {e.endpoint for e in self.endpoints if e.has(labels)}
        key = self.endpoint_key
        if labels and key is not None:
            key = replace(key, subset=tuple(sorted(labels.items())))
        return tuple(sorted(chosen)), key


def service_port(
    service: core.Service, index: int, *, endpoints: EndpointIndex | None = None
) -> UpstreamPort:
    """``spec.ports[index]`` of a Service; with ``endpoints``, the port carries its labelled
    endpoints (what subsets select from)."""
    port = service.spec.ports[index]
    decision = decide_port_protocol(
        port_name=port.name or None,
        app_protocol=port.app_protocol,
        transport=port.protocol,
        field_prefix=f"spec.ports[{index}]",
    )
    target = port.target_port if isinstance(port.target_port, int) else None
    key = ir.EndpointKey(
        namespace=service.namespace, service=service.name, port_name=port.name, target_port=target
    )
    found = endpoints.labelled(service.namespace, service.name, port.name, target) if endpoints else ()
    return UpstreamPort(
        number=port.port, name=port.name, decision=decision, endpoint_key=key, endpoints=found
    )
