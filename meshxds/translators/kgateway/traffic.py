"""kgateway ``TrafficPolicy``: its ``retry`` and ``timeouts`` on the routes of HTTPRoute rules.

A policy attaches, in its own namespace, to an HTTPRoute (every rule, or with ``sectionName`` the
rule of that name), to the HTTPRoute rules whose ExtensionRef filter names it, and to a Gateway
(every listener, or with ``sectionName`` one; ``retry`` needs the listener, as kgateway's CRD
says). As kgateway merges them (its docs: "Policy priority and merging rules"):

- ``retry`` and ``timeouts`` are each taken whole from one policy (a shallow merge): the most
  specific that sets it (an ExtensionRef filter, then the rule by name, then the whole HTTPRoute;
  a listener by name, then the whole Gateway), and among equals the oldest (``creationTimestamp``,
  then name). A policy whose value loses is reported.
- The rule's own Gateway API fields beat every policy: its ``retry`` (or
  ``timeouts.backendRequest``, a retry policy in Envoy) keeps the policy's ``retry`` away, its
  ``timeouts.request`` the policy's ``timeouts.request``; reported, naming both objects.
- A Gateway's policies are defaults for the routes attached through the listener: each of the
  route's retry policy, request timeout and stream idle timeout that nothing closer set. Retries
  reach every route of the listener, GRPCRoutes' included (kgateway puts them on the virtual
  host); timeouts reach HTTPRoutes only (GRPCRoute timeouts are none of Gateway API's).

``for_rule`` answers for one rule (listener-independent: the route compiler asks it), and
``for_listener`` for a Gateway's listener (asked when routes attach). kgateway policies have no
status meshxds writes: problems are warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meshxds import ir
from meshxds.model import gatewayapi, kgateway
from meshxds.model.gatewayapi import parse_duration
from meshxds.model.manifests import ResourceSet

__all__ = [
    "ListenerTraffic",
    "RuleTraffic",
    "TrafficPolicies",
    "retry_policy",
    "traffic_policies",
]

_HTTPROUTE = (gatewayapi.GROUP, "HTTPRoute")
_GATEWAY = (gatewayapi.GROUP, "Gateway")
_TOP_LEVEL = (("retry", "spec.retry"), ("timeouts", "spec.timeouts"))


def retry_policy(retry: kgateway.Retry) -> ir.RetryPolicy:
    """Envoy's retry policy as kgateway builds it: the conditions as a set, sorted, with
    ``retriable-status-codes`` when codes are given; ``attempts`` retries; no base interval keeps
    Envoy's default (25ms, kgateway's too)."""
    conditions = set(retry.retry_on or ())
    codes = sorted(set(retry.status_codes or ()))
    if codes:
        conditions.add("retriable-status-codes")
    return ir.RetryPolicy(
        attempts=retry.attempts,
        per_try_timeout_s=parse_duration(retry.per_try_timeout) if retry.per_try_timeout else None,
        retry_on=",".join(sorted(conditions)),
        retriable_status_codes=tuple(codes),
        backoff_base_s=parse_duration(retry.backoff_base_interval) if retry.backoff_base_interval else None,
    )


def _seconds(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


@dataclass(frozen=True, slots=True)
class _Attachment:
    policy: kgateway.TrafficPolicy
    level: int
    """How specific the attachment is, most specific 0."""
    how: str
    """Completes "the policy, which ..., sets it": ``names the rule 'x'``, ``targets the Gateway``."""

    @property
    def rank(self) -> tuple[int, str, str]:
        # RFC 3339 timestamps in UTC sort as strings; an object without one sorts first. One
        # namespace: the name decides between equals.
        meta = self.policy.metadata
        return (self.level, meta.creation_timestamp, meta.name)


def _why_first(winner: _Attachment, loser: _Attachment) -> str:
    if winner.level < loser.level:
        return f"{winner.policy.ref}, which {winner.how}, sets it"
    if winner.policy.metadata.creation_timestamp != loser.policy.metadata.creation_timestamp:
        return f"the older {winner.policy.ref} sets it"
    # Manifests read from files usually have no creationTimestamp.
    return f"{winner.policy.ref} sets it and comes first (as old; by name)"


def _winners(attachments: list[_Attachment], where: str, warnings: list[str]) -> dict[str, _Attachment]:
    """The attachment each top-level field (``retry``, ``timeouts``) comes from; a policy whose
    value of it loses is reported."""
    ranked: dict[int, _Attachment] = {}  # a policy once, by its most specific attachment
    for attachment in attachments:
        known = ranked.get(id(attachment.policy))
        if known is None or attachment.rank < known.rank:
            ranked[id(attachment.policy)] = attachment
    chosen: dict[str, _Attachment] = {}
    for attachment in sorted(ranked.values(), key=lambda a: a.rank):
        for name, path in _TOP_LEVEL:
            value = getattr(attachment.policy.spec, name)
            if value is None:
                continue
            winner = chosen.get(name)
            if winner is None:
                chosen[name] = attachment
            elif getattr(winner.policy.spec, name) != value:
                why = _why_first(winner, attachment)
                warnings.append(f"{attachment.policy.ref}: {path}: not applied to {where}: {why}")
    return chosen


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleTraffic:
    """What the TrafficPolicies of one HTTPRoute rule set, the rule's own fields respected."""

    retry: ir.RetryPolicy | None = None
    request_s: float | None = None
    idle_s: float | None = None
    missing: tuple[str, ...] = ()
    """ExtensionRef filters naming no TrafficPolicy: the rule must fail closed (Gateway API:
    a filter that cannot be resolved is never skipped)."""
    warnings: tuple[str, ...] = ()


_NOTHING = RuleTraffic()


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTraffic:
    """The defaults a Gateway listener's TrafficPolicies give its routes."""

    retry: ir.RetryPolicy | None = None
    request_s: float | None = None
    idle_s: float | None = None


@dataclass(slots=True)
class TrafficPolicies:
    """Every TrafficPolicy of one translation, by what it targets."""

    by_route: dict[tuple[str, str], list[tuple[kgateway.TrafficPolicy, str | None]]] = field(
        default_factory=dict
    )
    by_gateway: dict[tuple[str, str], list[tuple[kgateway.TrafficPolicy, str | None]]] = field(
        default_factory=dict
    )
    by_name: dict[tuple[str, str], kgateway.TrafficPolicy] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Targets that do not exist, and conflicts between a Gateway's policies."""
    _listeners: dict[tuple[str, str, str], ListenerTraffic | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def for_rule(
        self,
        route: gatewayapi.HTTPRoute,
        index: int,
        *,
        extension_refs: Sequence[tuple[int, str]] = (),
        native_retry: bool,
        native_request: bool,
    ) -> RuleTraffic:
        """The policies of rule ``index``: ``extension_refs`` are its ExtensionRef filters naming
        TrafficPolicies (filter index, name); ``native_retry`` / ``native_request``: the rule sets
        its own retry policy / request timeout, which policies do not replace."""
        targeting = self.by_route.get(route.key, ())
        if not targeting and not extension_refs:
            return _NOTHING
        rule = route.spec.rules[index]
        at = f"spec.rules[{index}]"
        where = f"HTTPRoute {route.namespace}/{route.name} {at}"
        attachments: list[_Attachment] = []
        missing: list[str] = []
        for f_index, name in extension_refs:
            found = self.by_name.get((route.namespace, name))
            if found is None:
                missing.append(
                    f"{route.ref}: {at}.filters[{f_index}].extensionRef: TrafficPolicy "
                    f"{route.namespace}/{name} not found"
                )
            else:
                attachments.append(_Attachment(found, 0, "an ExtensionRef filter of the rule names"))
        for policy, section in targeting:
            if section is None:
                attachments.append(_Attachment(policy, 2, "targets the HTTPRoute"))
            elif section == rule.name:
                attachments.append(_Attachment(policy, 1, f"names the rule {section!r}"))
        warnings: list[str] = []
        chosen = _winners(attachments, where, warnings)
        retry: ir.RetryPolicy | None = None
        if "retry" in chosen:
            source = chosen["retry"].policy
            if native_retry:
                warnings.append(
                    f"{source.ref}: spec.retry: not applied to {where}: the rule's own retry (or "
                    f"timeouts.backendRequest) of {route.ref} wins over a kgateway policy"
                )
            else:
                assert source.spec.retry is not None
                retry = retry_policy(source.spec.retry)
        request = idle = None
        if "timeouts" in chosen:
            source = chosen["timeouts"].policy
            timeouts = source.spec.timeouts
            assert timeouts is not None
            idle = _seconds(timeouts.stream_idle)
            if timeouts.request is not None and native_request:
                warnings.append(
                    f"{source.ref}: spec.timeouts.request: not applied to {where}: the rule's own "
                    f"timeouts.request of {route.ref} wins over a kgateway policy"
                )
            else:
                request = _seconds(timeouts.request)
        return RuleTraffic(
            retry=retry, request_s=request, idle_s=idle, missing=tuple(missing), warnings=tuple(warnings)
        )

    def for_listener(self, gateway: gatewayapi.Gateway, listener: str) -> ListenerTraffic | None:
        """The defaults of the Gateway's listener ``listener``; ``None``: none."""
        key = (gateway.namespace, gateway.name, listener)
        if key in self._listeners:
            return self._listeners[key]
        attachments = [
            _Attachment(policy, 0, f"names listener {section!r}")
            if section is not None
            else _Attachment(policy, 1, "targets the Gateway")
            for policy, section in self.by_gateway.get(gateway.key, ())
            if section is None or section == listener
        ]
        chosen = _winners(
            attachments, f"Gateway {gateway.namespace}/{gateway.name} listener {listener}", self.warnings
        )
        found: ListenerTraffic | None = None
        if chosen:
            retry = chosen["retry"].policy.spec.retry if "retry" in chosen else None
            timeouts = chosen["timeouts"].policy.spec.timeouts if "timeouts" in chosen else None
            found = ListenerTraffic(
                retry=retry_policy(retry) if retry is not None else None,
                request_s=_seconds(timeouts.request) if timeouts is not None else None,
                idle_s=_seconds(timeouts.stream_idle) if timeouts is not None else None,
            )
        self._listeners[key] = found
        return found


def _extension_named(resources: ResourceSet, policy: kgateway.TrafficPolicy) -> bool:
    """Does an HTTPRoute rule of the policy's namespace name it in an ExtensionRef filter?"""
    for route in resources.all(gatewayapi.HTTPRoute):
        if route.namespace != policy.namespace:
            continue
        for rule in route.spec.rules:
            for flt in rule.filters:
                ref = flt.extension_ref
                if ref is not None and (ref.group, ref.kind, ref.name) == (
                    kgateway.GROUP,
                    "TrafficPolicy",
                    policy.name,
                ):
                    return True
    return False


def _check_target(
    resources: ResourceSet,
    policy: kgateway.TrafficPolicy,
    index: int,
    ref: kgateway.LocalPolicyTargetReference,
) -> str | None:
    """Why targetRef ``index`` attaches to nothing; ``None`` when it attaches."""
    at = f"{policy.ref}: spec.targetRefs[{index}]"
    ns = policy.namespace
    if (ref.group, ref.kind) == _HTTPROUTE:
        route = resources.get(gatewayapi.HTTPRoute, ns, ref.name)
        if route is None:
            return f"{at}: HTTPRoute {ns}/{ref.name} not found"
        if ref.section_name is not None and all(r.name != ref.section_name for r in route.spec.rules):
            return (
                f"{at}.sectionName: HTTPRoute {ns}/{ref.name} has no rule named {ref.section_name!r}; "
                "not applied"
            )
        return None
    if (ref.group, ref.kind) == _GATEWAY:
        gateway = resources.get(gatewayapi.Gateway, ns, ref.name)
        if gateway is None:
            return f"{at}: Gateway {ns}/{ref.name} not found"
        if ref.section_name is not None and all(
            listener.name != ref.section_name for listener in gateway.spec.listeners
        ):
            return (
                f"{at}.sectionName: Gateway {ns}/{ref.name} has no listener {ref.section_name!r}; not applied"
            )
        return None
    return (
        f"{at}: kind {ref.group or 'core'}/{ref.kind} is not supported (give a {gatewayapi.GROUP} "
        "HTTPRoute or Gateway); ignored"
    )


def traffic_policies(resources: ResourceSet) -> TrafficPolicies:
    """Every TrafficPolicy indexed by what it targets, with a warning for each target that does
    not exist (or is no HTTPRoute or Gateway) and each policy that targets nothing."""
    out = TrafficPolicies()
    for policy in resources.all(kgateway.TrafficPolicy):
        out.by_name[policy.key] = policy
        for index, ref in enumerate(policy.spec.target_refs):
            problem = _check_target(resources, policy, index, ref)
            if problem is not None:
                out.warnings.append(problem)
                continue
            by_kind = out.by_route if ref.kind == "HTTPRoute" else out.by_gateway
            by_kind.setdefault((policy.namespace, ref.name), []).append((policy, ref.section_name))
        if not policy.spec.target_refs and not _extension_named(resources, policy):
            out.warnings.append(
                f"{policy.ref}: targets nothing (no targetRefs, and no HTTPRoute rule in "
                f"{policy.namespace} names it in an ExtensionRef filter); not applied"
            )
    return out
