"""Listener TLS: an HTTPS or TLS-Terminate listener's certificateRefs → SDS secrets."""

from __future__ import annotations

from meshxds import ir
from meshxds.conditions import condition
from meshxds.model import gatewayapi
from meshxds.translators.certificates import resolve_ca_certificate_ref, resolve_certificate_ref
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
    if not names_ or len(names_) != len(tls.certificate_refs):
        return
    frontend = gw.spec.tls.frontend if gw.spec.tls is not None else None
    validation = (
        frontend.for_port(ctx.spec.port) if frontend is not None and ctx.spec.protocol == "HTTPS" else None
    )
    if validation is None:
        ctx.tls = ir.DownstreamTls(certificates=tuple(names_))
        return
    ca_secret = _frontend_ca(run, gw, ctx, validation)
    if ca_secret is None:
        return  # security settings fail closed: no usable CA, no listener that admits everyone
    insecure = validation.mode == "AllowInsecureFallback"
    if insecure:
        run.insecure_frontend.add(gw.key)
    ctx.tls = ir.DownstreamTls(
        certificates=tuple(names_),
        require_client_certificate=not insecure,
        ca_secret=ca_secret,
        accept_untrusted=insecure,
    )


def _frontend_ca(
    run: Run, gw: gatewayapi.Gateway, ctx: ListenerContext, validation: gatewayapi.FrontendTLSValidation
) -> str | None:
    """GEP-91: the listener's client CA bundle as an SDS secret (its name), from every valid
    ``caCertificateRefs``; each invalid one sets ``ResolvedRefs=False``, all of them
    ``Accepted=False`` (``NoValidCACertificate``)."""
    generation = gw.metadata.generation
    bundles: list[bytes] = []
    for index, ref in enumerate(validation.ca_certificate_refs):
        found = resolve_ca_certificate_ref(
            run.resources, run.backends, ref, gateway=gw, at=f"spec.tls.frontend caCertificateRefs[{index}]"
        )
        if isinstance(found, tuple):
            reason, message = found
            ctx.conditions.append(condition("ResolvedRefs", False, reason, message, generation=generation))
            continue
        bundles.append(found if found.endswith(b"\n") else found + b"\n")
    if not bundles:
        ctx.conditions.append(
            condition(
                "Accepted",
                False,
                "NoValidCACertificate",
                "no caCertificateRefs of spec.tls.frontend is usable: the listener is not served "
                "rather than served without client certificate validation",
                generation=generation,
            )
        )
        return None
    name = f"gateway-frontend-ca/{gw.namespace}/{gw.name}/{ctx.spec.port}"
    run.ca_secrets[gw.key][name] = ir.CaSecret(
        name=name,
        ca_certificates=b"".join(bundles),
        source=ir.ObjectRef(kind="Gateway", namespace=gw.namespace, name=gw.name),
    )
    return name


def _certificate_reason(message: str) -> str:
    return "RefNotPermitted" if "ReferenceGrant" in message else "InvalidCertificateRef"
