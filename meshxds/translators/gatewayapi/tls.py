"""Listener TLS: an HTTPS or TLS-Terminate listener's certificateRefs → SDS secrets."""

from __future__ import annotations

from meshxds import ir
from meshxds.conditions import condition
from meshxds.model import gatewayapi
from meshxds.translators.certificates import resolve_certificate_ref
from meshxds.translators.gatewayapi.context import ListenerContext, Run

__all__ = ["resolve_listener_tls"]


def resolve_listener_tls(run: Run, gw: gatewayapi.Gateway, ctx: ListenerContext) -> None:
    """HTTPS and TLS-Terminate listeners: certificateRefs → SDS secrets (conditions on failure)."""
    generation = gw.metadata.generation
    tls = ctx.spec.tls
    if tls is None:
        ctx.conditions.append(
            condition(
                "Accepted",
                False,
                "Invalid",
                f"a {ctx.spec.protocol} listener needs tls",
                generation=generation,
            )
        )
        return
    if tls.mode == "Passthrough":
        if ctx.spec.protocol == "HTTPS":
            ctx.conditions.append(
                condition(
                    "Accepted",
                    False,
                    "Invalid",
                    "HTTPS listeners cannot pass TLS through",
                    generation=generation,
                )
            )
        return
    if gw.spec.tls is not None and gw.spec.tls.frontend is not None:
        # Security settings fail closed: serving this listener without the client-certificate
        # validation it asks for would admit every client.
        ctx.conditions.append(
            condition(
                "Accepted",
                False,
                "UnsupportedValue",
                "spec.tls.frontend (client certificate validation) is not supported by meshxds yet; "
                "the listener is not programmed rather than served without it",
                generation=generation,
            )
        )
        return
    if not tls.certificate_refs:
        ctx.conditions.append(
            condition(
                "ResolvedRefs",
                False,
                "InvalidCertificateRef",
                "tls.certificateRefs is empty",
                generation=generation,
            )
        )
        return
    names_: list[str] = []
    for index, ref in enumerate(tls.certificate_refs):
        found = resolve_certificate_ref(
            run.resources,
            run.backends,
            ref,
            gateway=gw,
            at=f"spec.listeners[{ctx.spec.name}].tls.certificateRefs[{index}]",
        )
        if isinstance(found, str):
            ctx.conditions.append(
                condition("ResolvedRefs", False, _certificate_reason(found), found, generation=generation)
            )
            continue
        run.secrets[gw.key][found.name] = found
        names_.append(found.name)
    if names_ and len(names_) == len(tls.certificate_refs):
        ctx.tls = ir.DownstreamTls(certificates=tuple(names_))


def _certificate_reason(message: str) -> str:
    return "RefNotPermitted" if "ReferenceGrant" in message else "InvalidCertificateRef"
