"""kgateway ``HTTPListenerPolicy``: policies attached to a Gateway (or one of its listeners)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshxds import ir
from meshxds.model import gatewayapi, kgateway
from meshxds.model.manifests import ResourceSet

__all__ = ["ListenerPolicies", "listener_policies"]


@dataclass(slots=True, kw_only=True)
class ListenerPolicies:
    """Access logs per listener name of one Gateway (key ``None``: every listener)."""

    access_logs: dict[str | None, list[ir.AccessLog]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def for_listeners(self, listener_names: list[str]) -> tuple[ir.AccessLog, ...]:
        """The access logs of a port that carries these listeners, each once, in policy order."""
        found: list[ir.AccessLog] = []
        for key in (None, *listener_names):
            for log in self.access_logs.get(key, []):
                if log not in found:
                    found.append(log)
        return tuple(found)


def _access_log(
    policy: kgateway.HTTPListenerPolicy, index: int, entry: kgateway.AccessLog
) -> ir.AccessLog | None:
    sink = entry.file_sink
    if sink is None:
        return None
    source = ir.ObjectRef(kind="HTTPListenerPolicy", namespace=policy.namespace, name=policy.name)
    if sink.json_format is not None:
        # Envoy's json_format takes nested values too, but kgateway's examples are flat strings.
        pairs = tuple((str(k), str(v)) for k, v in sink.json_format.items())
        return ir.AccessLog(path=sink.path, json_format=pairs, source=source)
    return ir.AccessLog(path=sink.path, text_format=sink.string_format, source=source)


def listener_policies(resources: ResourceSet, gateway: gatewayapi.Gateway) -> ListenerPolicies:
    """Every HTTPListenerPolicy in the Gateway's namespace that targets it."""
    out = ListenerPolicies()
    for policy in resources.all(kgateway.HTTPListenerPolicy):
        if policy.namespace != gateway.namespace:
            continue
        for ref in policy.spec.target_refs:
            if (ref.group, ref.kind, ref.name) != (gatewayapi.GROUP, "Gateway", gateway.name):
                continue
            for index, entry in enumerate(policy.spec.access_log):
                at = f"{policy.ref}: spec.accessLog[{index}]"
                if entry.grpc_service is not None:
                    out.warnings.append(f"{at}.grpcService: gRPC access logs are not supported yet; ignored")
                if entry.filter is not None:
                    out.warnings.append(
                        f"{at}.filter: access log filters are not supported yet; logging everything"
                    )
                log = _access_log(policy, index, entry)
                if log is not None:
                    out.access_logs.setdefault(ref.section_name, []).append(log)
    return out
