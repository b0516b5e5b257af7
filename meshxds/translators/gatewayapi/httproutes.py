"""HTTPRoute rules → IR routes: matches, filters, backends (each match keyed for precedence.py),
with the retry and timeouts of the kgateway TrafficPolicies of the route and its rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from meshxds import ir
from meshxds.conditions import Condition, condition
from meshxds.model import gatewayapi, kgateway
from meshxds.translators.backends import BackendIndex, ResolvedBackend
from meshxds.translators.cors import translate_cors
from meshxds.translators.durations import parse_duration
from meshxds.translators.gatewayapi.precedence import SortableRoute, http_route_key
from meshxds.translators.headers import literal, mutation_problems
from meshxds.translators.kgateway import ListenerTraffic, TrafficPolicies
from meshxds.translators.regex import re2_error

__all__ = [
    "CompiledRoute",
    "OpenToDefaults",
    "RuleFilters",
    "compile_http_route",
    "forward_action",
    "header_matches",
    "resolved_refs_condition",
    "route_timeouts",
    "rule_filters",
    "with_listener_defaults",
]

_SUPPORTED_FILTERS = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "RequestMirror",
    "CORS",
    "ExtensionRef",
)
_BACKEND_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")


_REFS_RESOLVED = condition("ResolvedRefs", True, "ResolvedRefs")
"""Until a compiler says otherwise (immutable, so one instance serves every route)."""


@dataclass(frozen=True, slots=True)
class OpenToDefaults:
    """Which settings of a rule's routes nothing closer than a Gateway set, so that a Gateway
    listener's kgateway TrafficPolicy may (``with_listener_defaults``)."""

    retry: bool
    request: bool
    idle: bool


@dataclass(slots=True, kw_only=True)
class CompiledRoute:
    routes: list[SortableRoute] = field(default_factory=list)
    clusters: list[ir.Cluster] = field(default_factory=list)
    resolved_refs: Condition = _REFS_RESOLVED
    tcp_backends: tuple[ir.WeightedCluster, ...] = ()
    """TLSRoute/TCPRoute: where connections go (no HTTP routes)."""
    warnings: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    """Rules (or backends) that fail closed because a filter cannot be applied (PartiallyInvalid)."""
    unserved: Condition | None = None
    """The route's ``UnservedFields`` condition (``translators/unserved.py``), set by routes.py."""
    open_to_defaults: dict[int, OpenToDefaults] = field(default_factory=dict)
    """By rule index: the rules that forward, and what a listener's defaults may still set."""


def _path(match: gatewayapi.HTTPPathMatch) -> ir.PathMatch:
    if match.type == "Exact":
        return ir.PathMatch(kind="exact", value=match.value)
    if match.type == "RegularExpression":
        return ir.PathMatch(kind="regex", value=match.value)
    value = match.value.rstrip("/") or "/"
    # Segment semantics: prefix /v2 matches /v2 and /v2/x but never /v2example.
    return ir.PathMatch(kind="prefix" if value == "/" else "path_separated_prefix", value=value)


def _string(kind: str, value: str) -> ir.StringMatch:
    return ir.StringMatch(kind="regex" if kind == "RegularExpression" else "exact", value=value)


def header_matches(headers: Sequence[gatewayapi.HTTPHeaderMatch]) -> list[ir.HeaderMatch]:
    """Gateway API header matches (HTTPRoute and GRPCRoute): names compare case-insensitively."""
    return [ir.HeaderMatch(name=h.name.lower(), match=_string(h.type, h.value)) for h in headers]


def _match(match: gatewayapi.HTTPRouteMatch) -> ir.RouteMatch:
    if not match.headers and not match.method and not match.query_params:
        return ir.RouteMatch(path=_path(match.path))  # the common case: a path alone
    headers = header_matches(match.headers)
    if match.method:
        headers.append(ir.HeaderMatch(name=":method", match=ir.StringMatch(kind="exact", value=match.method)))
    return ir.RouteMatch(
        path=_path(match.path),
        headers=tuple(headers),
        query_params=tuple(
            ir.QueryParamMatch(name=q.name, match=_string(q.type, q.value)) for q in match.query_params
        ),
    )


def _regex_problems(match: gatewayapi.HTTPRouteMatch, at: str) -> list[str]:
    found: list[tuple[str, str]] = []
    if match.path.type == "RegularExpression":
        found.append((f"{at}.path.value", match.path.value))
    found += [
        (f"{at}.headers[{i}].value", h.value)
        for i, h in enumerate(match.headers)
        if h.type == "RegularExpression"
    ]
    found += [
        (f"{at}.queryParams[{i}].value", q.value)
        for i, q in enumerate(match.query_params)
        if q.type == "RegularExpression"
    ]
    return [f"{where}: {err}" for where, value in found if (err := re2_error(value))]


def _headers(mod: gatewayapi.HTTPHeaderFilter | None) -> ir.HeaderMutation:
    if mod is None:
        return ir.NO_HEADER_CHANGES
    # Gateway API values are literal: a '%' must not reach Envoy's substitution formatter.
    return ir.HeaderMutation(
        set=tuple((h.name, literal(h.value)) for h in mod.set),
        add=tuple((h.name, literal(h.value)) for h in mod.add),
        remove=tuple(mod.remove),
    )


def _path_modifier(mod: gatewayapi.HTTPPathModifier | None) -> tuple[str | None, str | None]:
    if mod is None:
        return None, None
    if mod.type == "ReplaceFullPath":
        return mod.replace_full_path or "/", None
    return None, mod.replace_prefix_match or "/"


def _redirect(f: gatewayapi.HTTPRequestRedirectFilter) -> ir.Redirect:
    full, prefix = _path_modifier(f.path)
    return ir.Redirect(
        scheme=f.scheme,
        host=f.hostname,
        port=f.port,
        full_path=full,
        prefix=prefix,
        status_code=f.status_code,
    )


def _rewrite(f: gatewayapi.HTTPURLRewriteFilter) -> ir.UrlRewrite:
    full, prefix = _path_modifier(f.path)
    return ir.UrlRewrite(host=f.hostname, full_path=full, prefix=prefix)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleFilters:
    """What a rule's filters ask for (shared by HTTPRoute and GRPCRoute)."""

    request_headers: ir.HeaderMutation = ir.NO_HEADER_CHANGES
    response_headers: ir.HeaderMutation = ir.NO_HEADER_CHANGES
    redirect: ir.Redirect | None = None
    rewrite: ir.UrlRewrite | None = None
    mirrors: tuple[gatewayapi.HTTPRequestMirrorFilter, ...] = ()
    cors: ir.Cors | None = None
    traffic_policies: tuple[tuple[int, str], ...] = ()
    """ExtensionRef filters naming a kgateway TrafficPolicy: (filter index, policy name)."""
    invalid: tuple[str, ...] = ()
    """Why a filter cannot be applied as written (Envoy would refuse it): the rule (or backend)
    must fail closed, never run without the filter."""


_NO_FILTERS = RuleFilters()
"""What most rules have: one immutable instance."""


def rule_filters(
    filters: Sequence[gatewayapi.HTTPRouteFilter], *, at: str, out: CompiledRoute, allowed: tuple[str, ...]
) -> RuleFilters:
    if not filters:
        return _NO_FILTERS
    request_headers = response_headers = ir.NO_HEADER_CHANGES
    redirect: ir.Redirect | None = None
    rewrite: ir.UrlRewrite | None = None
    mirrors: list[gatewayapi.HTTPRequestMirrorFilter] = []
    cors: ir.Cors | None = None
    traffic_policies: list[tuple[int, str]] = []
    invalid: list[str] = []
    for f_index, flt in enumerate(filters):
        if flt.type not in allowed:
            out.warnings.append(
                f"{at}.filters[{f_index}]: filter type {flt.type} is not supported yet; ignored"
            )
        elif flt.type == "RequestHeaderModifier":
            request_headers = _headers(flt.request_header_modifier)
            invalid += [f"{at}.filters[{f_index}]: {p}" for p in mutation_problems(request_headers)]
        elif flt.type == "ResponseHeaderModifier":
            response_headers = _headers(flt.response_header_modifier)
            invalid += [f"{at}.filters[{f_index}]: {p}" for p in mutation_problems(response_headers)]
        elif flt.type == "RequestRedirect" and flt.request_redirect is not None:
            redirect = _redirect(flt.request_redirect)
        elif flt.type == "URLRewrite" and flt.url_rewrite is not None:
            rewrite = _rewrite(flt.url_rewrite)
        elif flt.type == "RequestMirror" and flt.request_mirror is not None:
            mirrors.append(flt.request_mirror)
        elif flt.type == "CORS" and flt.cors is not None:
            cors = translate_cors(flt.cors)
        elif flt.type == "ExtensionRef":
            ref = flt.extension_ref
            if ref is not None and (ref.group, ref.kind) == (kgateway.GROUP, "TrafficPolicy"):
                traffic_policies.append((f_index, ref.name))  # resolved by compile_http_route
            else:
                kind = f"{ref.group or 'core'}/{ref.kind}" if ref is not None else "no extensionRef"
                out.warnings.append(
                    f"{at}.filters[{f_index}]: filter type ExtensionRef ({kind}) is not supported yet; "
                    "ignored"
                )
    if invalid:  # nothing of it reaches Envoy, which would refuse the whole route table
        return RuleFilters(invalid=tuple(invalid))
    return RuleFilters(
        request_headers=request_headers,
        response_headers=response_headers,
        redirect=redirect,
        rewrite=rewrite,
        mirrors=tuple(mirrors),
        cors=cors,
        traffic_policies=tuple(traffic_policies),
    )


def fail_closed(filters: RuleFilters, out: CompiledRoute) -> ir.DirectResponse:
    """A rule whose filter cannot be applied: never served without it (the spec), so it answers
    500, and the route reports it (``PartiallyInvalid``). HTTPRoute and GRPCRoute alike."""
    out.warnings.extend(f"{p}; this rule answers 500" for p in filters.invalid)
    out.invalid.extend(filters.invalid)
    return ir.DirectResponse(status=500)


def _mirror_percent(mirror: gatewayapi.HTTPRequestMirrorFilter) -> float:
    if mirror.fraction is not None:
        return 100.0 * mirror.fraction.numerator / mirror.fraction.denominator
    return float(mirror.percent if mirror.percent is not None else 100)


def _resolve(
    ref: gatewayapi.BackendObjectReference | gatewayapi.BackendRef,
    route: gatewayapi.HTTPRoute | gatewayapi.GRPCRoute | gatewayapi.TLSRoute | gatewayapi.TCPRoute,
    backends: BackendIndex,
    out: CompiledRoute,
    force_protocol: tuple[ir.UpstreamProtocol, str] | None,
    default_protocol: ir.UpstreamProtocol,
) -> ResolvedBackend:
    """Resolve one reference from ``route``; a resolved cluster joins the route's clusters."""
    namespace = route.metadata.namespace
    resolved = backends.resolve_backend_ref(
        group=ref.group,
        kind=ref.kind,
        name=ref.name,
        namespace=ref.namespace or namespace,
        port=ref.port,
        from_kind=route.KIND,
        from_namespace=namespace,
        force_protocol=force_protocol,
        default_protocol=default_protocol,
    )
    if resolved.warnings:
        out.warnings.extend(resolved.warnings)
    cluster = resolved.cluster
    if cluster is not None:
        _add_cluster(out.clusters, cluster)
    return resolved


def _add_cluster(clusters: list[ir.Cluster], cluster: ir.Cluster) -> None:
    # Clusters are memoized per run, so identity almost always decides; names spare the full
    # comparison of two different clusters (a dataclass ``==`` compares every field).
    for known in clusters:
        if known is cluster:
            return
    for known in clusters:
        if known.name == cluster.name and known == cluster:
            return
    clusters.append(cluster)


def forward_action(
    refs: Sequence[gatewayapi.BackendRef],
    *,
    route: gatewayapi.HTTPRoute | gatewayapi.GRPCRoute | gatewayapi.TLSRoute | gatewayapi.TCPRoute,
    at: str,
    backends: BackendIndex,
    out: CompiledRoute,
    bad_refs: list[tuple[str, str]],
    timeout: float | None = None,
    rewrite: ir.UrlRewrite | None = None,
    force_protocol: tuple[ir.UpstreamProtocol, str] | None = None,
    default_protocol: ir.UpstreamProtocol = ir.UpstreamProtocol.HTTP1,
    mirrors: Sequence[gatewayapi.HTTPRequestMirrorFilter] = (),
    grpc: bool = False,
    idle_timeout: float | None = None,
) -> ir.ForwardAction | ir.DirectResponse:
    """Resolve a rule's backendRefs into weighted clusters; unresolved weight answers 500.

    ``timeout`` is the rule's request timeout (``None``: none set); see :func:`route_timeouts`.
    ``idle_timeout``: the route's stream idle timeout (``None``: the listener's).
    ``grpc``: the route kind is gRPC (GRPCRoute); otherwise the action takes gRPC-Web when a
    backend it sends requests to speaks gRPC."""
    weighted: list[ir.WeightedCluster] = []
    invalid_weight = 0
    http2 = False
    for b_index, ref in enumerate(refs):
        filters = getattr(ref, "filters", None)
        request_headers = response_headers = ir.NO_HEADER_CHANGES
        if filters:
            found = rule_filters(
                filters, at=f"{at}.backendRefs[{b_index}]", out=out, allowed=_BACKEND_FILTERS
            )
            if found.invalid:  # this backend's share fails closed (500), as an unresolved one
                out.warnings.extend(
                    f"{p}; this backend's share of requests answers 500" for p in found.invalid
                )
                out.invalid.extend(found.invalid)
                invalid_weight += ref.weight
                continue
            request_headers, response_headers = found.request_headers, found.response_headers
        resolved = _resolve(ref, route, backends, out, force_protocol, default_protocol)
        if resolved.cluster is None:
            bad_refs.append((resolved.reason, resolved.message))
            invalid_weight += ref.weight
            continue
        if ref.weight > 0:
            http2 = http2 or resolved.cluster.upstream_protocol is ir.UpstreamProtocol.HTTP2
            grpc = grpc or resolved.grpc
            weighted.append(
                ir.WeightedCluster(
                    cluster=resolved.cluster.name,
                    weight=ref.weight,
                    request_headers=request_headers,
                    response_headers=response_headers,
                )
            )
    mirror_targets: list[ir.Mirror] = []
    for m_index, mirror in enumerate(mirrors):
        resolved = _resolve(mirror.backend_ref, route, backends, out, force_protocol, default_protocol)
        if resolved.cluster is None:
            # An unusable mirror never affects the real request; it is reported, not served.
            bad_refs.append((resolved.reason, f"mirror {m_index}: {resolved.message}"))
            continue
        mirror_targets.append(ir.Mirror(cluster=resolved.cluster.name, percent=_mirror_percent(mirror)))
    if not weighted:
        # No usable backend: the spec asks for 500 (an empty rule, or only invalid refs).
        return ir.DirectResponse(status=500)
    timeout_s, grpc_timeout_max = route_timeouts(timeout, http2=http2)
    return ir.ForwardAction(
        backends=tuple(weighted),
        invalid_weight=invalid_weight,
        timeout_s=timeout_s,
        grpc_timeout_header_max_s=grpc_timeout_max,
        idle_timeout_s=idle_timeout,
        rewrite=rewrite,
        mirrors=tuple(mirror_targets),
        grpc_web=grpc,
    )


def route_timeouts(request: float | None, *, http2: bool) -> tuple[float | None, float | None]:
    """``(route timeout, grpc-timeout cap)`` of a rule whose request timeout is ``request``.

    To an HTTP/1.1 backend, an unset timeout is Envoy's default (15 s). An HTTP/2 backend (gRPC,
    h2c) may stream for as long as it likes, which a default would cut: it gets no limit unless
    the rule sets one, and a gRPC client's own deadline (``grpc-timeout``) ends the call at the
    proxy, capped by the rule's timeout when there is one (as Istio caps it)."""
    if not http2:
        return request, None
    if request is None:
        return 0.0, 0.0
    return request, request


def with_listener_defaults(
    compiled: CompiledRoute, defaults: ListenerTraffic, cache: dict[tuple[int, int], SortableRoute]
) -> list[SortableRoute]:
    """``compiled``'s routes with a Gateway listener's TrafficPolicy defaults wherever the rule
    left them open (``CompiledRoute.open_to_defaults``). The same route under the same defaults is
    the same object (``cache``, for the run), so two parentRefs to one listener give one route."""
    found: list[SortableRoute] = []
    for sortable in compiled.routes:
        slots = compiled.open_to_defaults.get(sortable.key.rule_index)
        if slots is None:
            found.append(sortable)
            continue
        key = (id(sortable), id(defaults))
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = _with_defaults(sortable, slots, defaults)
        found.append(hit)
    return found


def _with_defaults(
    sortable: SortableRoute, slots: OpenToDefaults, defaults: ListenerTraffic
) -> SortableRoute:
    route = sortable.route
    action = route.action
    assert isinstance(action, ir.ForwardAction)  # only forwarding rules are open to defaults
    retries = defaults.retry if slots.retry and defaults.retry is not None else route.retries
    if slots.request and defaults.request_s is not None:
        # A gRPC-timeout cap is there exactly when the backends speak HTTP/2 (route_timeouts).
        timeout, cap = route_timeouts(defaults.request_s, http2=action.grpc_timeout_header_max_s is not None)
        action = replace(action, timeout_s=timeout, grpc_timeout_header_max_s=cap)
    if slots.idle and defaults.idle_s is not None:
        action = replace(action, idle_timeout_s=defaults.idle_s)
    if retries is route.retries and action is route.action:
        return sortable
    return SortableRoute(key=sortable.key, route=replace(route, action=action, retries=retries))


def resolved_refs_condition(bad_refs: list[tuple[str, str]], generation: int) -> Condition:
    if bad_refs:
        return condition(
            "ResolvedRefs", False, bad_refs[0][0], "; ".join(m for _, m in bad_refs), generation=generation
        )
    return condition("ResolvedRefs", True, "ResolvedRefs", "all references resolved", generation=generation)


def compile_http_route(
    route: gatewayapi.HTTPRoute, *, backends: BackendIndex, traffic: TrafficPolicies | None = None
) -> CompiledRoute:
    """Every rule and match of one HTTPRoute as IR routes (listener-independent), with the
    kgateway TrafficPolicies that target the route or its rules (``traffic``)."""
    out = CompiledRoute()
    meta = route.metadata
    namespace, name = meta.namespace, meta.name
    age = meta.creation_timestamp or "~"  # routes without a timestamp sort after dated ones
    source = ir.ObjectRef(kind="HTTPRoute", namespace=namespace, name=name)
    bad_refs: list[tuple[str, str]] = []
    ref = route.ref
    for r_index, rule in enumerate(route.spec.rules):
        at = f"{ref}: spec.rules[{r_index}]"
        filters = rule_filters(rule.filters, at=at, out=out, allowed=_SUPPORTED_FILTERS)
        timeout, per_try = _rule_timeouts(rule.timeouts, at, out.warnings)
        retries = _rule_retries(rule.retry, per_try)
        idle: float | None = None
        if traffic or filters.traffic_policies:
            policies = (traffic or TrafficPolicies()).for_rule(
                route,
                r_index,
                extension_refs=filters.traffic_policies,
                native_retry=retries is not None,
                native_request=rule.timeouts is not None and rule.timeouts.request is not None,
            )
            out.warnings.extend(policies.warnings)
            if policies.missing:
                filters = replace(filters, invalid=(*filters.invalid, *policies.missing))
            retries = retries if retries is not None else policies.retry
            if policies.request_s is not None:
                timeout = policies.request_s
            idle = policies.idle_s
        action: ir.ForwardAction | ir.DirectResponse | ir.Redirect
        if filters.invalid:
            action = fail_closed(filters, out)
        elif filters.redirect is not None:
            action = filters.redirect
        else:
            action = forward_action(
                rule.backend_refs,
                route=route,
                at=at,
                backends=backends,
                out=out,
                bad_refs=bad_refs,
                timeout=timeout,
                rewrite=filters.rewrite,
                mirrors=filters.mirrors,
                idle_timeout=idle,
            )
            if isinstance(action, ir.ForwardAction):
                # ``timeout`` None: neither the rule nor a policy of it set one (``backendRequest``
                # alone sets none on purpose: a default must not cut the tries short).
                out.open_to_defaults[r_index] = OpenToDefaults(
                    retry=retries is None, request=timeout is None, idle=idle is None
                )
        for m_index, match in enumerate(rule.matches):
            if match.path.type == "RegularExpression" or match.headers or match.query_params:  # RE2 to check
                problems = _regex_problems(match, f"{at}.matches[{m_index}]")
                if problems:
                    out.warnings.extend(f"{p}; this match is dropped" for p in problems)
                    continue
            out.routes.append(
                SortableRoute(
                    key=http_route_key(match, age, namespace, name, r_index, m_index),
                    route=ir.Route(
                        name=f"httproute/{namespace}/{name}/rule/{r_index}/match/{m_index}",
                        match=_match(match),
                        action=action,
                        request_headers=filters.request_headers,
                        response_headers=filters.response_headers,
                        retries=retries if isinstance(action, ir.ForwardAction) else None,
                        cors=filters.cors,
                        source=source,
                    ),
                )
            )
    out.resolved_refs = resolved_refs_condition(bad_refs, route.metadata.generation)
    return out


DEFAULT_RETRY_ATTEMPTS = 2
"""Retries of a ``retry`` stanza with no ``attempts`` (implementation-specific: Envoy Gateway's
and Istio's default)."""

RETRY_ON_CONNECTION = "connect-failure,refused-stream,reset,unavailable"
"""GEP-1731: with a ``retry`` stanza, "retry on connection errors (disconnect, reset, timeout,
TCP failure)": Envoy's ``reset`` is a try that got no response at all (a disconnect, a reset, a
per-try timeout: conformance's RetryConnectionError and RetryBackendTimeout), ``connect-failure``
and ``refused-stream`` the request that never reached the backend, gRPC ``unavailable`` a
backend that asks to be tried again. A response with a status is retried only for ``codes``."""


def _rule_retries(
    retry: gatewayapi.HTTPRouteRetry | None, per_try: ir.RetryPolicy | None
) -> ir.RetryPolicy | None:
    """GEP-1731 as Envoy's retry policy: ``attempts`` retries (``0``: none) on connection
    errors (``RETRY_ON_CONNECTION``) and on ``codes``, ``backoff`` apart, each try bounded by
    ``backendRequest`` (a try that times out is retried: it got no response)."""
    if retry is None:
        return per_try
    per_try_timeout = per_try.per_try_timeout_s if per_try is not None else None
    attempts = DEFAULT_RETRY_ATTEMPTS if retry.attempts is None else retry.attempts
    if attempts == 0:
        return per_try  # an explicit zero disables retries; a per-try timeout still bounds the try
    retry_on = RETRY_ON_CONNECTION + (",retriable-status-codes" if retry.codes else "")
    return ir.RetryPolicy(
        attempts=attempts,
        per_try_timeout_s=per_try_timeout,
        retry_on=retry_on,
        retriable_status_codes=tuple(sorted(retry.codes)),
        # Envoy needs a base above zero: "0s" (no backoff) is its smallest, a millisecond.
        backoff_base_s=max(parse_duration(retry.backoff), 0.001) if retry.backoff is not None else None,
    )


def _rule_timeouts(
    timeouts: gatewayapi.HTTPRouteTimeouts | None, at: str, warnings: list[str]
) -> tuple[float | None, ir.RetryPolicy | None]:
    """GEP-1742: ``request`` bounds the whole request (``0s``: no limit); ``backendRequest``
    bounds each try to the backend, Envoy's per-try timeout. With only ``backendRequest`` set
    there is no overall limit beyond the tries (a default could be shorter than the tries, which
    the spec forbids). A malformed duration is ignored, with a warning."""
    if timeouts is None:
        return None, None
    parsed: dict[str, float] = {}
    for field_name, raw in (("request", timeouts.request), ("backendRequest", timeouts.backend_request)):
        if raw is None:
            continue
        try:
            parsed[field_name] = parse_duration(raw)
        except ValueError as exc:
            warnings.append(f"{at}.timeouts.{field_name}: {exc}; ignored")
    request = parsed.get("request")
    backend = parsed.get("backendRequest")
    if backend is None or backend == 0:  # 0s: no per-try limit, Envoy's own default
        return request, None
    per_try = ir.RetryPolicy(attempts=0, per_try_timeout_s=backend, retry_on="")
    return (0.0 if request is None else request), per_try
