"""kgateway ``BackendConfigPolicy``: cluster settings (active health checks, connectTimeout,
tcpKeepalive, commonHttpProtocolOptions, http2ProtocolOptions with connectionKeepalive) for the
Services and Backends a policy targets. Fields not modelled (tls, loadBalancer,
outlierDetection, ...) are warned about when the manifest is read.

A policy applies in its own namespace, to every port of a Service or, with ``sectionName``, to
the one port it names (by name or number). Where several policies target one cluster, a
port-specific one beats a whole-Service one, and among equals the oldest wins (kgateway's rule);
the others are reported. kgateway policies have no status meshxds writes, so problems are warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from meshxds import ir
from meshxds.model import core, kgateway
from meshxds.model.istio import parse_istio_duration
from meshxds.model.manifests import ResourceSet
from meshxds.translators.protocol import decide_port_protocol
from meshxds.translators.upstream import ClusterPolicy, decide_upstream_protocol, service_port
from meshxds.translators.upstream.clusters import NO_POLICY

__all__ = ["BackendConfigs", "backend_configs", "health_check", "policy_of"]

_SERVICE = ("", "Service")
_BACKEND = (kgateway.GROUP, "Backend")

_Target = tuple[str, str, str, str]
"""``(kind, namespace, name, sectionName or "")``."""


def health_check(check: kgateway.HealthCheck) -> ir.HealthCheck:
    """The model's health check in the IR; unset thresholds are 1 (Envoy needs both)."""
    timing = ir.HealthCheck(
        kind="http",
        interval_s=parse_istio_duration(check.interval),
        timeout_s=parse_istio_duration(check.timeout),
        unhealthy_threshold=check.unhealthy_threshold or 1,
        healthy_threshold=check.healthy_threshold or 1,
    )
    if check.grpc is not None:
        return replace(
            timing, kind="grpc", service_name=check.grpc.service_name or "", host=check.grpc.authority or ""
        )
    assert check.http is not None  # the model requires one of the two
    return replace(timing, path=check.http.path, method=check.http.method or "", host=check.http.host or "")


def _seconds(value: str | None) -> float | None:
    return None if value is None else parse_istio_duration(value)


def _whole_seconds(value: str | None) -> int | None:
    return None if value is None else round(parse_istio_duration(value))


def policy_of(policy: kgateway.BackendConfigPolicy) -> ClusterPolicy:
    """What one policy sets on the clusters it targets, over meshxds's defaults."""
    spec = policy.spec
    out = NO_POLICY
    if spec.connect_timeout is not None:
        out = replace(out, connect_timeout_s=parse_istio_duration(spec.connect_timeout))
    keepalive = spec.tcp_keepalive
    if keepalive is not None:
        out = replace(
            out,
            tcp_keepalive=ir.TcpKeepalive(
                probes=keepalive.keep_alive_probes,
                time_s=_whole_seconds(keepalive.keep_alive_time),
                interval_s=_whole_seconds(keepalive.keep_alive_interval),
            ),
        )
    common = spec.common_http_protocol_options
    if common is not None and common.max_requests_per_connection:
        out = replace(out, max_requests_per_connection=common.max_requests_per_connection)
    h2 = spec.http2_protocol_options
    pings = h2.connection_keepalive if h2 is not None else None
    http = ir.UpstreamHttpOptions(
        idle_timeout_s=_seconds(common.idle_timeout) if common is not None else None,
        max_stream_duration_s=_seconds(common.max_stream_duration) if common is not None else None,
        max_headers_count=common.max_headers_count if common is not None else None,
        h2_max_concurrent_streams=h2.max_concurrent_streams if h2 is not None else None,
        h2_initial_stream_window_size=h2.initial_stream_window_size if h2 is not None else None,
        h2_initial_connection_window_size=h2.initial_connection_window_size if h2 is not None else None,
        h2_keepalive=ir.Http2Keepalive(
            timeout_s=parse_istio_duration(pings.timeout),
            interval_s=_seconds(pings.interval),
            connection_idle_interval_s=_seconds(pings.connection_idle_interval),
        )
        if pings is not None
        else None,
        h2_stream_error_on_invalid_http_message=(
            h2.override_stream_error_on_invalid_http_message if h2 is not None else None
        ),
    )
    if http != ir.UpstreamHttpOptions():
        out = replace(out, http_options=http)
    if spec.health_check is not None:
        out = replace(out, health_checks=(health_check(spec.health_check),))
    return out


@dataclass(slots=True, kw_only=True)
class BackendConfigs:
    """The policy of each targeted Service (port) and Backend, decided once per translation."""

    by_target: dict[_Target, tuple[kgateway.BackendConfigPolicy, ClusterPolicy]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def _find(self, kind: str, namespace: str, name: str, sections: tuple[str, ...]) -> ClusterPolicy:
        for section in (*sections, ""):
            found = self.by_target.get((kind, namespace, name, section))
            if found is not None:
                return found[1]
        return NO_POLICY

    def policy(self, kind: str, namespace: str, name: str, port: core.ServicePort | None) -> ClusterPolicy:
        """The cluster policy of a Service port (``port``) or a kgateway Backend (``None``)."""
        if port is None:
            return self._find(kind, namespace, name, ())
        sections = (port.name, str(port.port)) if port.name else (str(port.port),)
        return self._find(kind, namespace, name, sections)


def _needs_http2_warning(
    resources: ResourceSet,
    policy: kgateway.BackendConfigPolicy,
    kind: str,
    name: str,
    section: str,
    field: str,
) -> str | None:
    """A gRPC health check and HTTP/2 options need HTTP/2 to the endpoints: say so for a target
    that does not speak it by its own protocol (a GRPCRoute's HTTP/2 cluster of the port still
    gets them)."""
    slow: list[str] = []
    if kind == "Service":
        service = resources.get(core.Service, policy.namespace, name)
        assert service is not None
        for index, port in enumerate(service.spec.ports):
            if section and section not in (port.name, str(port.port)):
                continue
            own, _ = decide_upstream_protocol(service_port(service, index).decision)
            if own is not ir.UpstreamProtocol.HTTP2:
                slow.append(f"port {port.name or port.port}")
    else:
        backend = resources.get(kgateway.Backend, policy.namespace, name)
        assert backend is not None
        app_protocol = backend.spec.static.app_protocol if backend.spec.static is not None else None
        own, _ = decide_upstream_protocol(decide_port_protocol(port_name=None, app_protocol=app_protocol))
        if own is not ir.UpstreamProtocol.HTTP2:
            slow.append("its hosts")
    if not slow:
        return None
    return (
        f"{policy.ref}: {field}: {kind} {policy.namespace}/{name} "
        f"({', '.join(slow)}) is not reached over HTTP/2, which this needs; "
        "not applied there (set appProtocol to grpc, or kubernetes.io/h2c)"
    )


def _age(policy: kgateway.BackendConfigPolicy) -> tuple[str, str]:
    # RFC 3339 timestamps in UTC sort as strings; an object without one sorts first, then by name.
    return policy.metadata.creation_timestamp, policy.name


def backend_configs(resources: ResourceSet) -> BackendConfigs:
    """Every BackendConfigPolicy, resolved to the Services and Backends it targets."""
    out = BackendConfigs()
    for policy in sorted(resources.all(kgateway.BackendConfigPolicy), key=_age):
        cluster_policy = policy_of(policy)
        for index, ref in enumerate(policy.spec.target_refs):
            at = f"{policy.ref}: spec.targetRefs[{index}]"
            kind = (ref.group, ref.kind)
            if kind == _SERVICE:
                service = resources.get(core.Service, policy.namespace, ref.name)
                if service is None:
                    out.warnings.append(f"{at}: Service {policy.namespace}/{ref.name} not found")
                    continue
                section = ref.section_name or ""
                if section and not any(section in (p.name, str(p.port)) for p in service.spec.ports):
                    out.warnings.append(
                        f"{at}.sectionName: Service {service.namespace}/{service.name} has no port "
                        f"{section!r}; the policy is not applied"
                    )
                    continue
            elif kind == _BACKEND:
                if resources.get(kgateway.Backend, policy.namespace, ref.name) is None:
                    out.warnings.append(f"{at}: Backend {policy.namespace}/{ref.name} not found")
                    continue
                section = ""
                if ref.section_name:
                    out.warnings.append(f"{at}.sectionName: a Backend has no sections; ignored")
            else:
                out.warnings.append(
                    f"{at}: kind {ref.group or 'core'}/{ref.kind} is not supported "
                    "(give a core Service or a gateway.kgateway.dev Backend); ignored"
                )
                continue
            target = (ref.kind, policy.namespace, ref.name, section)
            earlier = out.by_target.get(target)
            if earlier is not None:
                out.warnings.append(
                    f"{at}: {ref.kind} {policy.namespace}/{ref.name}"
                    f"{f' port {section}' if section else ''} already has the older {earlier[0].ref}; "
                    "this policy is not applied to it"
                )
                continue
            out.by_target[target] = (policy, cluster_policy)
            spec = policy.spec
            needs_http2 = []
            if spec.health_check is not None and spec.health_check.grpc is not None:
                needs_http2.append("spec.healthCheck.grpc")
            if spec.http2_protocol_options is not None:
                needs_http2.append("spec.http2ProtocolOptions")
            for field_path in needs_http2:
                warning = _needs_http2_warning(resources, policy, ref.kind, ref.name, section, field_path)
                if warning is not None:
                    out.warnings.append(warning)
    return out
