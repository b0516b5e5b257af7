"""Gateway API status, as data: the conditions of GatewayClasses (with ``supportedFeatures``,
features.py), Gateways (with ``addresses``, addresses.py) and their listeners, and each route's
``status.parents``. The Kubernetes source writes them (``meshxds.conditions``)."""

from __future__ import annotations

from typing import Any

from meshxds.conditions import Condition, ObjectStatus, condition, merge_conditions
from meshxds.model import gatewayapi
from meshxds.options import GATEWAY_NAME_LABEL
from meshxds.translators.gatewayapi.addresses import decide_gateway_addresses
from meshxds.translators.gatewayapi.context import AnyRoute, Run
from meshxds.translators.gatewayapi.features import supported_features
from meshxds.translators.gatewayapi.httproutes import CompiledRoute
from meshxds.translators.unserved import unserved_condition

__all__ = ["clash_condition", "gateway_class_status", "gateway_status", "route_parent_status"]


def gateway_class_status(gc: gatewayapi.GatewayClass) -> ObjectStatus:
    accepted = condition(
        "Accepted", True, "Accepted", "handled by meshxds", generation=gc.metadata.generation
    )
    unserved = unserved_condition(gc)
    conditions = [accepted.as_dict(), *([unserved.as_dict()] if unserved is not None else [])]
    return ObjectStatus(
        kind="GatewayClass",
        namespace="",
        name=gc.name,
        status={"conditions": conditions, "supportedFeatures": supported_features()},
    )


def route_parent_status(
    route: AnyRoute,
    ref: gatewayapi.ParentReference,
    namespace: str,
    *,
    controller_name: str,
    accepted: Condition,
    resolved: Condition,
    compiled: CompiledRoute,
) -> dict[str, Any]:
    """One entry of a route's ``status.parents``: the Gateway ``ref`` names (in ``namespace``)."""
    parent_ref: dict[str, Any] = {
        "group": ref.group,
        "kind": ref.kind,
        "namespace": namespace,
        "name": ref.name,
    }
    if ref.section_name:
        parent_ref["sectionName"] = ref.section_name
    if ref.port:
        parent_ref["port"] = ref.port
    return {
        "parentRef": parent_ref,
        "controllerName": controller_name,
        # Accepted, ResolvedRefs (and PartiallyInvalid): distinct types, nothing to merge.
        "conditions": [
            accepted.as_dict(),
            resolved.as_dict(),
            *_partially_invalid(route, compiled),
            *([compiled.unserved.as_dict()] if compiled.unserved is not None else []),
        ],
    }


def _partially_invalid(route: AnyRoute, compiled: CompiledRoute) -> list[dict[str, Any]]:
    """GEP-1364's condition for a route some of whose rules fail closed (their filter cannot be
    applied, so they answer 500): the rest of the route is served."""
    if not compiled.invalid:
        return []
    message = "; ".join(compiled.invalid) + "; those rules answer 500"
    found = condition(
        "PartiallyInvalid", True, "UnsupportedValue", message, generation=route.metadata.generation
    )
    return [found.as_dict()]


def clash_condition(route: AnyRoute, clashes: list[str], resolved: Condition) -> Condition:
    """ResolvedRefs=False for a route whose backend cluster another route defined differently."""
    message = (
        f"cluster {', '.join(clashes)} is already defined differently by another route to the "
        "same backend port; that definition is served"
    )
    reason = "BackendConflict"
    if not resolved.status:  # the earlier problem keeps its reason
        reason, message = resolved.reason, f"{resolved.message.rstrip('.')}; {message}"
    return condition("ResolvedRefs", False, reason, message, generation=route.metadata.generation)


def gateway_status(run: Run, gw: gatewayapi.Gateway) -> ObjectStatus:
    generation = gw.metadata.generation
    listener_status = []
    for ctx in run.listeners[gw.key]:
        defaults = [
            condition("Accepted", True, "Accepted", "listener accepted", generation=generation),
            condition("ResolvedRefs", True, "ResolvedRefs", "all references resolved", generation=generation),
            condition("Conflicted", False, "NoConflicts", "no conflicts", generation=generation),
        ]
        # Defaults only fill in types nothing reported: merge_conditions lets False win, which
        # would hide a Conflicted=True (a problem, unlike the other types' False) behind the default.
        reported = {c.type for c in ctx.conditions}
        merged = merge_conditions([*ctx.conditions, *(d for d in defaults if d.type not in reported)])
        listener_programmed = ctx.valid
        merged += (
            condition(
                "Programmed",
                listener_programmed,
                "Programmed" if listener_programmed else "Invalid",
                "listener is programmed" if listener_programmed else "listener is invalid",
                generation=generation,
            ),
        )
        listener_status.append(
            {
                "name": ctx.spec.name,
                "supportedKinds": [{"group": gatewayapi.GROUP, "kind": k} for k in ctx.kinds],
                "attachedRoutes": ctx.attached,
                "conditions": [c.as_dict() for c in merged],
            }
        )
    any_valid = any(ctx.valid for ctx in run.listeners[gw.key])
    addresses = decide_gateway_addresses(gw, run.options)
    served = f"served to proxies labelled {GATEWAY_NAME_LABEL}={gw.name} in namespace {gw.namespace}"
    if addresses.unsupported:
        accepted = condition(
            "Accepted", False, "UnsupportedAddress", "; ".join(addresses.unsupported), generation=generation
        )
    else:
        accepted = condition(
            "Accepted", True, "Accepted", "Gateway accepted by meshxds", generation=generation
        )
    if not any_valid:
        programmed = condition("Programmed", False, "Invalid", "no listener is valid", generation=generation)
    elif addresses.unsupported or addresses.unusable or addresses.unassigned:
        # The spec's reasons; the listeners are still served (addresses.py says why).
        reason = "AddressNotUsable" if addresses.unsupported or addresses.unusable else "AddressNotAssigned"
        problems = [*addresses.unsupported, *addresses.unusable, *addresses.unassigned]
        programmed = condition(
            "Programmed",
            False,
            reason,
            f"{'; '.join(problems)}; listeners still {served}",
            generation=generation,
        )
    else:
        programmed = condition("Programmed", True, "Programmed", served, generation=generation)
    conditions = [accepted.as_dict(), programmed.as_dict()]
    if gw.key in run.insecure_frontend:
        # GEP-91: say, on the Gateway itself, that clients without a valid certificate get in.
        conditions.append(
            condition(
                "InsecureFrontendValidationMode",
                True,
                "ConfigurationChanged",
                "Mode AllowInsecureFallback of spec.tls.frontend: clients without a valid certificate "
                "are let through, their authorization is the backends'",
                generation=generation,
            ).as_dict()
        )
    unserved = unserved_condition(gw)
    if unserved is not None:
        conditions.append(unserved.as_dict())
    return ObjectStatus(
        kind="Gateway",
        namespace=gw.namespace,
        name=gw.name,
        status={
            "addresses": [a.as_dict() for a in addresses.addresses],
            "conditions": conditions,
            "listeners": listener_status,
        },
    )
