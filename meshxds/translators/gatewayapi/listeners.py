"""Gateway listeners: which route kinds each admits, their TLS (tls.py), and conflicts between
listeners of one port. What a listener becomes in IR is assembled in proxyconfigs.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from meshxds.conditions import condition
from meshxds.model import gatewayapi
from meshxds.translators.gatewayapi.context import ListenerContext, Run
from meshxds.translators.gatewayapi.tls import resolve_listener_tls

__all__ = ["process_listeners"]

# Listener protocol → route kinds it can carry (the spec's defaults for allowedRoutes.kinds).
_ROUTE_KINDS_BY_PROTOCOL: dict[str, tuple[str, ...]] = {
    "HTTP": ("HTTPRoute", "GRPCRoute"),
    "HTTPS": ("HTTPRoute", "GRPCRoute"),
    "TLS": ("TLSRoute",),
    "TCP": ("TCPRoute",),
}
# A TLS listener that terminates can hand the decrypted stream to a TCPRoute too.
_TLS_TERMINATE_KINDS = ("TLSRoute", "TCPRoute")


def process_listeners(run: Run, gateways: Iterable[gatewayapi.Gateway]) -> None:
    """Each Gateway's listeners: the route kinds each admits, its TLS, conflicts between them."""
    for gw in gateways:
        contexts: list[ListenerContext] = []
        generation = gw.metadata.generation
        seen_names: set[str] = set()
        for listener in gw.spec.listeners:
            ctx = ListenerContext(gateway=gw, spec=listener, kinds=())
            supported = _ROUTE_KINDS_BY_PROTOCOL.get(listener.protocol)
            if listener.name in seen_names:
                ctx.conditions.append(
                    condition(
                        "Accepted",
                        False,
                        "Invalid",
                        f"listener name {listener.name} is used twice",
                        generation=generation,
                    )
                )
            seen_names.add(listener.name)
            if supported is None:
                ctx.conditions.append(
                    condition(
                        "Accepted",
                        False,
                        "UnsupportedProtocol",
                        f"protocol {listener.protocol} is not supported by meshxds yet",
                        generation=generation,
                    )
                )
                run.warnings.append(
                    f"{gw.ref}: listener {listener.name}: protocol {listener.protocol} is not supported"
                )
            else:
                if (
                    listener.protocol == "TLS"
                    and listener.tls is not None
                    and listener.tls.mode == "Terminate"
                ):
                    supported = _TLS_TERMINATE_KINDS
                if listener.protocol in ("HTTPS", "TLS"):
                    resolve_listener_tls(run, gw, ctx)
                requested = listener.allowed_routes.kinds
                if requested:
                    ok = tuple(
                        k.kind for k in requested if k.group == gatewayapi.GROUP and k.kind in supported
                    )
                    if len(ok) != len(requested):
                        ctx.conditions.append(
                            condition(
                                "ResolvedRefs",
                                False,
                                "InvalidRouteKinds",
                                "some allowedRoutes.kinds are not supported",
                                generation=generation,
                            )
                        )
                    ctx.kinds = ok
                else:
                    ctx.kinds = supported
            contexts.append(ctx)
        _detect_port_conflicts(contexts, generation)
        run.listeners[gw.key] = contexts


def _detect_port_conflicts(contexts: list[ListenerContext], generation: int) -> None:
    by_port: dict[int, list[ListenerContext]] = defaultdict(list)
    for ctx in contexts:
        by_port[ctx.spec.port].append(ctx)
    for group in by_port.values():
        protocols = {c.spec.protocol for c in group}
        hostnames = [c.spec.hostname or "" for c in group]
        if len(protocols) > 1:
            reason, msg = "ProtocolConflict", "listeners on one port must share a protocol"
        elif len(set(hostnames)) != len(hostnames):
            reason, msg = "HostnameConflict", "listeners on one port must have distinct hostnames"
        else:
            continue
        for ctx in group:
            ctx.conditions.append(condition("Conflicted", True, reason, msg, generation=generation))
            ctx.conditions.append(condition("Accepted", False, reason, msg, generation=generation))
