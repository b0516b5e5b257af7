"""kgateway listener policies: ``HTTPListenerPolicy`` and ``ListenerPolicy``, attached to a
Gateway (or, with ``sectionName``, one of its listeners).

Envoy has one listener per port, so a setting reaches every Gateway listener on the port of the
listener a policy names. Access logs (HTTPListenerPolicy ``accessLog``) add up: every policy's
apply. Every other setting is one value per port, merged field by field as kgateway does: a
policy naming a listener of the port beats a Gateway-wide one, and among equals the oldest
(``creationTimestamp``, then kind and name) wins; a policy whose value loses is reported. A
ListenerPolicy gives a port its ``perPort`` entry for that port when any ListenerPolicy on the
port has one (it replaces ``default`` entirely, fields it leaves unset included), else its
``default``. HTTP settings reach HTTP(S) listeners only; the buffer limit and TCP keepalive
reach every listener. kgateway policies have no status meshxds writes: problems are warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from meshxds import ir
from meshxds.model import gatewayapi, kgateway
from meshxds.model.istio import parse_istio_duration
from meshxds.model.manifests import ResourceSet

__all__ = ["ListenerPolicies", "PortSettings", "listener_policies", "policy_target_warnings"]

_HTTP_PROTOCOLS = ("HTTP", "HTTPS")
_GATEWAY = (gatewayapi.GROUP, "Gateway")

AnyListenerPolicy = kgateway.HTTPListenerPolicy | kgateway.ListenerPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class PortSettings:
    """What the listener policies set on one port's Envoy listener."""

    http: ir.DownstreamHttpOptions | None = None
    per_connection_buffer_limit_bytes: int | None = None
    tcp_keepalive: ir.TcpKeepalive | None = None

    def apply(self, listener: ir.Listener, *, http: bool) -> ir.Listener:
        return replace(
            listener,
            http_options=self.http if http else None,
            per_connection_buffer_limit_bytes=self.per_connection_buffer_limit_bytes,
            tcp_keepalive=self.tcp_keepalive,
        )


@dataclass(slots=True, kw_only=True)
class ListenerPolicies:
    """Access logs per listener name of one Gateway (key ``None``: every listener), and the
    merged settings of each of its ports."""

    access_logs: dict[str | None, list[ir.AccessLog]] = field(default_factory=dict)
    ports: dict[int, PortSettings] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def for_listeners(self, listener_names: list[str]) -> tuple[ir.AccessLog, ...]:
        """The access logs of a port that carries these listeners, each once, in policy order."""
        found: list[ir.AccessLog] = []
        for key in (None, *listener_names):
            for log in self.access_logs.get(key, []):
                if log not in found:
                    found.append(log)
        return tuple(found)

    def apply(self, listener: ir.Listener, *, http: bool) -> ir.Listener:
        """``listener`` (of this Gateway) with its port's settings."""
        settings = self.ports.get(listener.port)
        return listener if settings is None else settings.apply(listener, http=http)


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


def _add_access_logs(out: ListenerPolicies, policy: kgateway.HTTPListenerPolicy, section: str | None) -> None:
    for index, entry in enumerate(policy.spec.access_log):
        # grpcService and filter are marked Unserved in the model: reading the object warned.
        log = _access_log(policy, index, entry)
        if log is not None:
            out.access_logs.setdefault(section, []).append(log)


# --- settings --------------------------------------------------------------------------------

_Value = tuple[Any, str]
"""A setting's value and the manifest field it came from (``spec.default.httpSettings.idleTimeout``)."""

_HTTP_FIELDS = frozenset(f.name for f in fields(ir.DownstreamHttpOptions))


def _seconds(value: str | None) -> float | None:
    return None if value is None else parse_istio_duration(value)


def _whole_seconds(value: str | None) -> int | None:
    return None if value is None else round(parse_istio_duration(value))


def _config_values(config: kgateway.ListenerConfig, at: str) -> dict[str, _Value]:
    """The settings a ListenerConfig gives, by ``PortSettings`` / ``DownstreamHttpOptions`` field."""
    out: dict[str, _Value] = {}
    if config.per_connection_buffer_limit_bytes is not None:
        out["per_connection_buffer_limit_bytes"] = (
            config.per_connection_buffer_limit_bytes,
            f"{at}.perConnectionBufferLimitBytes",
        )
    keepalive = config.tcp_keepalive
    if keepalive is not None:
        tcp = ir.TcpKeepalive(
            probes=keepalive.keep_alive_probes,
            time_s=_whole_seconds(keepalive.keep_alive_time),
            interval_s=_whole_seconds(keepalive.keep_alive_interval),
        )
        out["tcp_keepalive"] = (tcp, f"{at}.tcpKeepalive")
    http = config.http_settings
    if http is None:
        return out
    at = f"{at}.httpSettings"
    candidates: list[tuple[str, object, str]] = [
        ("stream_idle_timeout_s", _seconds(http.stream_idle_timeout), "streamIdleTimeout"),
        ("idle_timeout_s", _seconds(http.idle_timeout), "idleTimeout"),
        # 0 is kgateway's "unlimited", which is Envoy's unset.
        ("max_requests_per_connection", http.max_requests_per_connection or None, "maxRequestsPerConnection"),
        ("max_headers_count", http.max_headers_count, "maxHeadersCount"),
    ]
    h2 = http.http2_protocol_options
    if h2 is not None:
        h2_at = "http2ProtocolOptions."
        candidates += [
            ("h2_max_concurrent_streams", h2.max_concurrent_streams, f"{h2_at}maxConcurrentStreams"),
            (
                "h2_initial_stream_window_size",
                h2.initial_stream_window_size,
                f"{h2_at}initialStreamWindowSize",
            ),
            (
                "h2_initial_connection_window_size",
                h2.initial_connection_window_size,
                f"{h2_at}initialConnectionWindowSize",
            ),
            ("h2_allow_connect", h2.allow_connect, f"{h2_at}allowConnect"),
        ]
    for name, value, path in candidates:
        if value is not None:
            out[name] = (value, f"{at}.{path}")
    return out


def _http_listener_policy_values(policy: kgateway.HTTPListenerPolicy) -> dict[str, _Value]:
    spec = policy.spec
    out: dict[str, _Value] = {}
    if spec.stream_idle_timeout is not None:
        out["stream_idle_timeout_s"] = (
            parse_istio_duration(spec.stream_idle_timeout),
            "spec.streamIdleTimeout",
        )
    if spec.idle_timeout is not None:
        out["idle_timeout_s"] = (parse_istio_duration(spec.idle_timeout), "spec.idleTimeout")
    return out


@dataclass(frozen=True, slots=True)
class _Attachment:
    policy: AnyListenerPolicy
    section: str | None
    """The listener the targetRef names; ``None``: the whole Gateway."""

    @property
    def rank(self) -> tuple[bool, str, str, str, str]:
        # RFC 3339 timestamps in UTC sort as strings; an object without one sorts first.
        p = self.policy
        return (self.section is None, p.metadata.creation_timestamp, p.KIND, p.namespace, p.name)


def _per_port(policy: kgateway.ListenerPolicy, port: int) -> tuple[int, kgateway.ListenerPortConfig] | None:
    for index, entry in enumerate(policy.spec.per_port):
        if entry.port == port:
            return index, entry
    return None


def _layers(
    attachments: list[_Attachment], port: int, names: list[str], out: ListenerPolicies
) -> list[tuple[_Attachment, dict[str, _Value], bool]]:
    """Each attachment's values on ``port``, highest priority first, with whether they are meant
    for this port in particular (a sectionName or a perPort entry)."""
    per_port = any(
        isinstance(a.policy, kgateway.ListenerPolicy) and _per_port(a.policy, port) is not None
        for a in attachments
    )
    layers: list[tuple[_Attachment, dict[str, _Value], bool]] = []
    for attachment in attachments:
        policy = attachment.policy
        specific = attachment.section is not None
        if isinstance(policy, kgateway.HTTPListenerPolicy):
            values = _http_listener_policy_values(policy)
        elif per_port:
            found = _per_port(policy, port)
            if found is None:
                if policy.spec.default is not None:
                    out.warnings.append(
                        f"{policy.ref}: spec.default: not applied on port {port} "
                        f"(listener {', '.join(names)}): a ListenerPolicy's perPort entry for the port "
                        "replaces every default there"
                    )
                continue
            index, entry = found
            values = _config_values(entry.listener, f"spec.perPort[{index}].listener")
            specific = True
        elif policy.spec.default is not None:
            values = _config_values(policy.spec.default, "spec.default")
        else:
            continue
        if values:
            layers.append((attachment, values, specific))
    return layers


def _why_first(winner: _Attachment, loser: _Attachment) -> str:
    if winner.section is not None and loser.section is None:
        return f"{winner.policy.ref}, which names listener {winner.section}, sets it"
    if winner.policy.metadata.creation_timestamp != loser.policy.metadata.creation_timestamp:
        return f"the older {winner.policy.ref} sets it"
    # Manifests read from files usually have no creationTimestamp.
    return f"{winner.policy.ref} sets it and comes first (as old; by kind, then name)"


def _port_settings(
    attachments: list[_Attachment], port: int, names: list[str], is_http: bool, out: ListenerPolicies
) -> PortSettings | None:
    chosen: dict[str, tuple[_Attachment, _Value]] = {}
    for attachment, values, specific in _layers(attachments, port, names, out):
        ref = attachment.policy.ref
        http_paths = [path for name, (_, path) in values.items() if name in _HTTP_FIELDS]
        if not is_http and specific and http_paths:
            out.warnings.append(
                f"{ref}: {', '.join(http_paths)}: port {port} (listener {', '.join(names)}) is not an "
                "HTTP(S) listener; ignored there"
            )
        for name, (value, path) in values.items():
            if not is_http and name in _HTTP_FIELDS:
                continue
            earlier = chosen.get(name)
            if earlier is None:
                chosen[name] = (attachment, (value, path))
            elif earlier[1][0] != value:
                out.warnings.append(
                    f"{ref}: {path}: not applied on port {port} (listener {', '.join(names)}): "
                    f"{_why_first(earlier[0], attachment)} ({earlier[1][1]})"
                )
    if not chosen:
        return None
    http = {name: value for name, (_, (value, _)) in chosen.items() if name in _HTTP_FIELDS}
    return PortSettings(
        http=ir.DownstreamHttpOptions(**http) if http else None,
        per_connection_buffer_limit_bytes=chosen["per_connection_buffer_limit_bytes"][1][0]
        if "per_connection_buffer_limit_bytes" in chosen
        else None,
        tcp_keepalive=chosen["tcp_keepalive"][1][0] if "tcp_keepalive" in chosen else None,
    )


def _check_per_port(
    policy: kgateway.ListenerPolicy, gateway: gatewayapi.Gateway, out: ListenerPolicies
) -> None:
    ports = {listener.port for listener in gateway.spec.listeners}
    seen: set[int] = set()
    for index, entry in enumerate(policy.spec.per_port):
        at = f"{policy.ref}: spec.perPort[{index}].port"
        if entry.port in seen:
            out.warnings.append(f"{at}: port {entry.port} is given twice; the first entry applies")
        elif entry.port not in ports:
            out.warnings.append(
                f"{at}: Gateway {gateway.namespace}/{gateway.name} has no listener on port {entry.port}; "
                "not applied there"
            )
        seen.add(entry.port)


def listener_policies(resources: ResourceSet, gateway: gatewayapi.Gateway) -> ListenerPolicies:
    """Every HTTPListenerPolicy and ListenerPolicy in the Gateway's namespace that targets it."""
    out = ListenerPolicies()
    listeners = {listener.name: listener for listener in gateway.spec.listeners}
    attachments: list[_Attachment] = []
    policies: list[AnyListenerPolicy] = [
        *resources.all(kgateway.HTTPListenerPolicy),
        *resources.all(kgateway.ListenerPolicy),
    ]
    for policy in policies:
        if policy.namespace != gateway.namespace:
            continue
        targeted = False
        for index, ref in enumerate(policy.spec.target_refs):
            if (ref.group, ref.kind, ref.name) != (*_GATEWAY, gateway.name):
                continue
            if ref.section_name is not None and ref.section_name not in listeners:
                out.warnings.append(
                    f"{policy.ref}: spec.targetRefs[{index}].sectionName: Gateway "
                    f"{gateway.namespace}/{gateway.name} has no listener {ref.section_name!r}; not applied"
                )
                continue
            targeted = True
            attachments.append(_Attachment(policy, ref.section_name))
            if isinstance(policy, kgateway.HTTPListenerPolicy):
                _add_access_logs(out, policy, ref.section_name)
        if targeted and isinstance(policy, kgateway.ListenerPolicy):
            _check_per_port(policy, gateway, out)
    if not attachments:
        return out
    by_port: dict[int, list[gatewayapi.GatewayListener]] = {}
    for listener in gateway.spec.listeners:
        by_port.setdefault(listener.port, []).append(listener)
    for port in sorted(by_port):
        names = sorted(listener.name for listener in by_port[port])
        # A policy on the port once, by its most specific targetRef.
        best: dict[int, _Attachment] = {}
        for attachment in attachments:
            if attachment.section is not None and attachment.section not in names:
                continue
            known = best.get(id(attachment.policy))
            if known is None or attachment.rank < known.rank:
                best[id(attachment.policy)] = attachment
        ranked = sorted(best.values(), key=lambda a: a.rank)
        is_http = by_port[port][0].protocol in _HTTP_PROTOCOLS
        settings = _port_settings(ranked, port, names, is_http, out)
        if settings is not None:
            out.ports[port] = settings
    return out


def policy_target_warnings(resources: ResourceSet) -> list[str]:
    """Listener policies whose targetRefs name something other than a Gateway, or a Gateway that
    does not exist (once per translation: ``listener_policies`` works per Gateway)."""
    warnings: list[str] = []
    policies: list[AnyListenerPolicy] = [
        *resources.all(kgateway.HTTPListenerPolicy),
        *resources.all(kgateway.ListenerPolicy),
    ]
    for policy in policies:
        for index, ref in enumerate(policy.spec.target_refs):
            at = f"{policy.ref}: spec.targetRefs[{index}]"
            if (ref.group, ref.kind) != _GATEWAY:
                warnings.append(
                    f"{at}: kind {ref.group or 'core'}/{ref.kind} is not supported (give a "
                    f"{gatewayapi.GROUP} Gateway); ignored"
                )
            elif resources.get(gatewayapi.Gateway, policy.namespace, ref.name) is None:
                warnings.append(f"{at}: Gateway {policy.namespace}/{ref.name} not found")
    return warnings
