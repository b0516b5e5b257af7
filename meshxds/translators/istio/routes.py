"""VirtualService ``http``/``tcp``/``tls`` rules → IR routes and TCP backends, for one context
(a gateway server, or the mesh's sidecars) on one port.

Istio semantics kept: rules apply in order (first match wins, as Envoy evaluates routes); a
rule's match list is an OR; route timeouts are off unless ``timeout`` is set, and on every route
a gRPC client's ``grpc-timeout`` ends the call at the proxy, capped by ``timeout`` when set
(Istio's ``setTimeout``); retries default to 2 attempts on connect failures, refused streams and
``unavailable``/``cancelled``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from meshxds import ir
from meshxds.model import istio
from meshxds.translators.headers import envoy_value, mutation_problems
from meshxds.translators.istio.context import At, BuildContext
from meshxds.translators.istio.messages import (
    INVALID_HEADER_OPERATION,
    INVALID_REGEXP,
    REFERENCED_RESOURCE_NOT_FOUND,
    SCHEMA_VALIDATION_ERROR,
    UNSUPPORTED_FEATURE,
)
from meshxds.translators.labels import labels_match
from meshxds.translators.protocol import is_grpc
from meshxds.translators.regex import re2_error, route_match_regex_problems

__all__ = ["RouteContext", "http_routes", "l4_backends", "vs_gateways"]

MESH = "mesh"
_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
# gRPC status names → codes, in code order (OK = 0 ... UNAUTHENTICATED = 16).
_GRPC_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
_GRPC_CODES = {name: code for code, name in enumerate(_GRPC_NAMES)}
_PATH_KINDS: dict[str, Literal["exact", "prefix", "regex"]] = {
    "exact": "exact",
    "prefix": "prefix",
    "regex": "regex",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteContext:
    """Where rules are being applied: a gateway (``ns/name``) or the mesh, on one port, in one
    proxy's build (which they read the registry and clusters from and report to)."""

    build: BuildContext
    gateway: str
    """``namespace/name`` of an Istio Gateway, or ``mesh`` for sidecars."""
    port: int
    grpc_web: bool = False
    """Requests here may be gRPC-Web (an Istio ``GRPC-WEB`` or ``GRPC`` server or port): every
    forwarding route takes them, as Istio adds the grpc_web filter for such a server."""


def vs_gateways(vs: istio.VirtualService) -> list[str]:
    """The VirtualService's gateways as ``ns/name`` (or ``mesh``); none given means the mesh."""
    out = []
    for gw in vs.spec.gateways or [MESH]:
        out.append(gw if gw == MESH or "/" in gw else f"{vs.namespace}/{gw}")
    return out


def _match_applies(
    ctx: RouteContext,
    vs: istio.VirtualService,
    gateways: Sequence[str],
    port: int | None,
    source_labels: dict[str, str],
    source_namespace: str | None,
) -> bool:
    if gateways and ctx.gateway not in [
        g if g == MESH or "/" in g else f"{vs.namespace}/{g}" for g in gateways
    ]:
        return False
    if port is not None and port != ctx.port:
        return False
    if not labels_match(ctx.build.proxy_labels, source_labels):
        return False
    return source_namespace is None or source_namespace == ctx.build.proxy_namespace


def _string(sm: istio.StringMatch) -> ir.StringMatch | None:
    if sm.exact is not None:
        return ir.StringMatch(kind="exact", value=sm.exact)
    if sm.prefix is not None:
        return ir.StringMatch(kind="prefix", value=sm.prefix)
    if sm.regex is not None:
        return ir.StringMatch(kind="regex", value=sm.regex)
    return None  # {} in a headers map: the header must be present


def _header(name: str, sm: istio.StringMatch, *, invert: bool = False) -> ir.HeaderMatch:
    matcher = _string(sm) or ir.StringMatch(kind="present")
    # withoutHeaders must also match a request that lacks the header (Istio sets the same flag).
    return ir.HeaderMatch(name=name.lower(), match=matcher, invert=invert, treat_missing_as_empty=invert)


def _route_match(match: istio.HTTPMatchRequest | None) -> ir.RouteMatch:
    if match is None:
        return ir.RouteMatch()
    path = ir.PathMatch()
    if match.uri is not None and (uri := _string(match.uri)) is not None:
        kind = _PATH_KINDS[uri.kind]
        path = ir.PathMatch(kind=kind, value=uri.value, ignore_case=bool(match.ignore_uri_case))
    headers = [_header(n, sm) for n, sm in sorted(match.headers.items())]
    headers += [_header(n, sm, invert=True) for n, sm in sorted(match.without_headers.items())]
    for pseudo, sm in ((":scheme", match.scheme), (":method", match.method), (":authority", match.authority)):
        if sm is not None:
            headers.append(_header(pseudo, sm))
    params = [
        ir.QueryParamMatch(name=n, match=_string(sm) or ir.StringMatch(kind="present"))
        for n, sm in sorted(match.query_params.items())
    ]
    return ir.RouteMatch(path=path, headers=tuple(headers), query_params=tuple(params))


def _mutation(ops: istio.HeaderOperations | None, at: At, build: BuildContext) -> ir.HeaderMutation:
    """The header operations as Envoy takes them: Envoy's command operators kept (Istio users rely
    on ``%DOWNSTREAM_REMOTE_ADDRESS%``), any other ``%`` sent literally, with a warning."""
    if ops is None:
        return ir.NO_HEADER_CHANGES

    def value(verb: str, name: str, raw: str) -> str:
        sent, escaped = envoy_value(raw)
        if escaped:
            build.warn(
                at.sub(f".{verb}[{name!r}]"),
                INVALID_HEADER_OPERATION,
                "'%' that starts no Envoy command operator is sent literally",
            )
        return sent

    return ir.HeaderMutation(
        set=tuple((n, value("set", n, v)) for n, v in sorted(ops.set.items())),
        add=tuple((n, value("add", n, v)) for n, v in sorted(ops.add.items())),
        remove=tuple(ops.remove),
    )


def _percent(value: istio.Percent | None, legacy: int | None = None) -> float:
    if value is not None:
        return value.value
    return float(legacy) if legacy is not None else 100.0


def _retries(rule: istio.HTTPRoute) -> ir.RetryPolicy | None:
    retries = rule.retries
    if retries is None:
        return ir.RetryPolicy(attempts=2, retry_on=_DEFAULT_RETRY_ON)
    if not retries.attempts:
        return None  # attempts: 0 turns retries off
    codes, conditions = [], []
    for item in (retries.retry_on or _DEFAULT_RETRY_ON).split(","):
        item = item.strip()
        if item.isdigit():
            codes.append(int(item))
        elif item:
            conditions.append(item)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    return ir.RetryPolicy(
        attempts=retries.attempts,
        per_try_timeout_s=istio.parse_istio_duration(retries.per_try_timeout)
        if retries.per_try_timeout
        else None,
        retry_on=",".join(conditions),
        retriable_status_codes=tuple(codes),
        # Istio's backoff is Envoy's base interval (which must be above zero).
        backoff_base_s=max(istio.parse_istio_duration(retries.backoff), 0.001) if retries.backoff else None,
    )


def _fault(rule: istio.HTTPRoute, at: At, build: BuildContext) -> ir.Fault | None:
    fault = rule.fault
    if fault is None:
        return None
    delay_s: float | None = None
    delay_percent = abort_percent = 100.0
    abort_http: int | None = None
    abort_grpc: int | None = None
    if fault.delay is not None:
        if fault.delay.fixed_delay:
            delay_s = istio.parse_istio_duration(fault.delay.fixed_delay)
        else:
            build.warn(at.sub(".fault.delay"), UNSUPPORTED_FEATURE, "only fixedDelay is supported")
        delay_percent = _percent(fault.delay.percentage, fault.delay.percent)
    if fault.abort is not None:
        abort_percent = _percent(fault.abort.percentage)
        if fault.abort.grpc_status:
            code = fault.abort.grpc_status.upper()
            abort_grpc = int(code) if code.isdigit() else _GRPC_CODES.get(code)
            if abort_grpc is None:
                build.warn(
                    at.sub(".fault.abort.grpcStatus"),
                    SCHEMA_VALIDATION_ERROR,
                    f"{fault.abort.grpc_status!r} is not a gRPC status",
                )
        elif fault.abort.http_status:
            abort_http = fault.abort.http_status
        else:
            build.warn(at.sub(".fault.abort"), UNSUPPORTED_FEATURE, "http2Error is not supported")
    if delay_s is None and abort_http is None and abort_grpc is None:
        return None
    return ir.Fault(
        delay_s=delay_s,
        delay_percent=delay_percent,
        abort_http_status=abort_http,
        abort_grpc_status=abort_grpc,
        abort_percent=abort_percent,
    )


def _cors(policy: istio.CorsPolicy | None, at: At, build: BuildContext) -> ir.Cors | None:
    if policy is None:
        return None
    origins = []
    for index, sm in enumerate(policy.allow_origins):
        match = _string(sm)
        if match is None:
            continue
        if match.kind == "regex" and (err := re2_error(match.value)) is not None:
            # Left out, so that origin is not allowed: CORS fails closed, the route still serves.
            build.warn(
                at.sub(f".corsPolicy.allowOrigins[{index}]"),
                INVALID_REGEXP,
                f"{match.value!r}: {err}; this origin is not allowed",
            )
            continue
        origins.append(match)
    origins += [ir.StringMatch(kind="exact", value=o) for o in policy.allow_origin]
    return ir.Cors(
        allow_origins=tuple(origins),
        allow_methods=tuple(policy.allow_methods),
        allow_headers=tuple(policy.allow_headers),
        expose_headers=tuple(policy.expose_headers),
        max_age_s=istio.parse_istio_duration(policy.max_age) if policy.max_age else None,
        allow_credentials=policy.allow_credentials,
    )


def _cluster(
    ctx: RouteContext, vs: istio.VirtualService, dest: istio.Destination, at: At
) -> ir.Cluster | None:
    host = ctx.build.registry.resolve(dest.host, vs.namespace)
    found = ctx.build.clusters.cluster(host, dest.port.number if dest.port else None, dest.subset)
    if isinstance(found, str):  # why: the host, its port or the subset is not there for this proxy
        ctx.build.warn(at, REFERENCED_RESOURCE_NOT_FOUND, found)
        return None
    return found


def _speaks_grpc(ctx: RouteContext, vs: istio.VirtualService, dest: istio.Destination) -> bool:
    """The destination's port is GRPC or GRPC-Web (Istio's protocol selection)."""
    registry = ctx.build.registry
    service = registry.get(registry.resolve(dest.host, vs.namespace))
    port = service.port(dest.port.number if dest.port else None) if service is not None else None
    return port is not None and is_grpc(port.protocol)


def _forward(ctx: RouteContext, vs: istio.VirtualService, rule: istio.HTTPRoute, at: At) -> ir.ForwardAction:
    backends: list[ir.WeightedCluster] = []
    invalid = 0
    grpc_web = ctx.grpc_web
    for index, dest in enumerate(rule.route):
        weight = dest.weight if dest.weight is not None else (100 if len(rule.route) == 1 else 0)
        cluster = _cluster(ctx, vs, dest.destination, at.sub(f".route[{index}]"))
        if cluster is None:
            invalid += weight
            continue
        if weight > 0:
            headers = dest.headers
            where = at.sub(f".route[{index}].headers")
            request = _mutation(headers.request if headers else None, where.sub(".request"), ctx.build)
            response = _mutation(headers.response if headers else None, where.sub(".response"), ctx.build)
            problems = [*mutation_problems(request), *mutation_problems(response)]
            if problems:  # this destination's share fails closed (500), as an unknown one
                for problem in problems:
                    ctx.build.warn(
                        where, INVALID_HEADER_OPERATION, f"{problem}; this destination's share answers 500"
                    )
                invalid += weight
                continue
            backends.append(
                ir.WeightedCluster(
                    cluster=cluster.name, weight=weight, request_headers=request, response_headers=response
                )
            )
            grpc_web = grpc_web or _speaks_grpc(ctx, vs, dest.destination)
    mirrors = []
    targets = [(rule.mirror, _percent(rule.mirror_percentage, rule.mirror_percent))] if rule.mirror else []
    targets += [(m.destination, _percent(m.percentage)) for m in rule.mirrors]
    for index, (target, percent) in enumerate(targets):
        cluster = _cluster(ctx, vs, target, at.sub(f".mirror[{index}]"))
        if cluster is not None:
            mirrors.append(ir.Mirror(cluster=cluster.name, percent=percent))
    rewrite = None
    if rule.rewrite is not None:
        regex = rule.rewrite.uri_regex_rewrite
        rewrite = ir.UrlRewrite(
            host=rule.rewrite.authority,
            prefix=rule.rewrite.uri,
            regex=(regex.match, regex.rewrite) if regex is not None else None,
        )
    timeout = istio.parse_istio_duration(rule.timeout) if rule.timeout else 0.0
    return ir.ForwardAction(
        backends=tuple(backends),
        invalid_weight=invalid,
        timeout_s=timeout,
        grpc_timeout_header_max_s=timeout,
        rewrite=rewrite,
        mirrors=tuple(mirrors),
        hash_policies=ctx.build.clusters.hash_policies(b.cluster for b in backends),
        grpc_web=grpc_web,
    )


def _action(
    ctx: RouteContext, vs: istio.VirtualService, rule: istio.HTTPRoute, at: At
) -> ir.ForwardAction | ir.DirectResponse | ir.Redirect:
    if rule.redirect is not None:
        r = rule.redirect
        port = r.port
        if r.derive_port == "FROM_REQUEST_PORT":
            port = ctx.port  # routes are built per port, so the request's port is this listener's
        elif r.derive_port == "FROM_PROTOCOL_DEFAULT":
            port = 443 if r.scheme == "https" else 80
        return ir.Redirect(
            scheme=r.scheme,
            host=r.authority,
            port=port,
            full_path=r.uri,
            status_code=r.redirect_code or 301,
        )
    if rule.direct_response is not None:
        body = rule.direct_response.body
        status = rule.direct_response.status
        if body is not None and body.bytes_ is not None:
            # base64 on the wire (the model checked it): the client gets the bytes.
            return ir.DirectResponse(status=status, body_bytes=base64.b64decode(body.bytes_))
        return ir.DirectResponse(status=status, body=body.string or "" if body is not None else "")
    action = _forward(ctx, vs, rule, at)
    if not action.backends:
        ctx.build.warn(
            at, REFERENCED_RESOURCE_NOT_FOUND, "no destination could be resolved; the rule answers 500"
        )
        return ir.DirectResponse(status=500)
    return action


def _with_exact_rewrite(action: ir.ForwardAction, match: ir.RouteMatch) -> ir.ForwardAction:
    """Istio's ``rewrite.uri`` replaces the matched prefix, or the whole path after an exact match."""
    if action.rewrite is None or action.rewrite.prefix is None or match.path.kind == "prefix":
        return action
    rewrite = ir.UrlRewrite(
        host=action.rewrite.host, full_path=action.rewrite.prefix, regex=action.rewrite.regex
    )
    return replace(action, rewrite=rewrite)


def http_routes(
    ctx: RouteContext,
    vs: istio.VirtualService,
    *,
    rules: Sequence[istio.HTTPRoute] | None = None,
    depth: int = 0,
) -> list[ir.Route]:
    """The VirtualService's ``http`` rules that apply in this context, in order."""
    out: list[ir.Route] = []
    for r_index, rule in enumerate(rules if rules is not None else vs.spec.http):
        at = At.of(vs, f"spec.http[{r_index}]")
        matches: list[istio.HTTPMatchRequest | None] = list(rule.match) or [None]
        applicable = [
            m
            for m in matches
            if m is None or _match_applies(ctx, vs, m.gateways, m.port, m.source_labels, m.source_namespace)
        ]
        if not applicable:
            continue
        if rule.delegate is not None:
            out.extend(_delegate(ctx, vs, rule, at, depth))
            continue
        action = _action(ctx, vs, rule, at)
        headers = rule.headers
        request_at, response_at = at.sub(".headers.request"), at.sub(".headers.response")
        request_headers = _mutation(headers.request if headers else None, request_at, ctx.build)
        response_headers = _mutation(headers.response if headers else None, response_at, ctx.build)
        invalid = [(request_at, p) for p in mutation_problems(request_headers)]
        invalid += [(response_at, p) for p in mutation_problems(response_headers)]
        if invalid:
            # Never served without its header operations, never sent where Envoy refuses them.
            for where, problem in invalid:
                ctx.build.warn(where, INVALID_HEADER_OPERATION, f"{problem}; this rule answers 500")
            action = ir.DirectResponse(status=500)
            request_headers = response_headers = ir.NO_HEADER_CHANGES
        cors = _cors(rule.cors_policy, at, ctx.build)
        for m_index, match in enumerate(applicable):
            route_match = _route_match(match)
            problems = route_match_regex_problems(route_match)
            if problems:
                for problem in problems:
                    ctx.build.warn(
                        at.sub(f".match[{m_index}]"), INVALID_REGEXP, f"{problem}; this match is dropped"
                    )
                continue
            out.append(
                ir.Route(
                    name=f"{vs.namespace}/{vs.name}/{rule.name or r_index}/{m_index}",
                    match=route_match,
                    action=_with_exact_rewrite(action, route_match)
                    if isinstance(action, ir.ForwardAction)
                    else action,
                    request_headers=request_headers,
                    response_headers=response_headers,
                    retries=_retries(rule) if isinstance(action, ir.ForwardAction) else None,
                    fault=_fault(rule, at, ctx.build),
                    cors=cors,
                    source=ir.ObjectRef(kind="VirtualService", namespace=vs.namespace, name=vs.name),
                )
            )
    return out


def _delegate(
    ctx: RouteContext, vs: istio.VirtualService, rule: istio.HTTPRoute, at: At, depth: int
) -> list[ir.Route]:
    """A delegate rule hands its matches to another VirtualService's rules (one level, as Istio)."""
    assert rule.delegate is not None
    where = at.sub(".delegate")
    if depth > 0:
        ctx.build.warn(where, SCHEMA_VALIDATION_ERROR, "a delegate VirtualService cannot delegate again")
        return []
    name, namespace = rule.delegate.name, rule.delegate.namespace or vs.namespace
    child = next(
        (
            c
            for c in ctx.build.clusters.resources.all(istio.VirtualService)
            if (c.namespace, c.name) == (namespace, name)
        ),
        None,
    )
    if child is None:
        ctx.build.warn(where, REFERENCED_RESOURCE_NOT_FOUND, f"VirtualService {namespace}/{name} not found")
        return []
    if child.spec.hosts:
        ctx.build.warn(
            where,
            SCHEMA_VALIDATION_ERROR,
            f"VirtualService {namespace}/{name} has hosts, so it cannot be a delegate",
        )
        return []
    parent_matches = list(rule.match)
    merged_rules = []
    for child_rule in child.spec.http:
        if not parent_matches:
            merged_rules.append(child_rule)
            continue
        combined = [
            _merge_match(parent, c)
            for parent in parent_matches
            for c in (child_rule.match or [istio.HTTPMatchRequest()])
        ]
        merged_rules.append(child_rule.model_copy(update={"match": combined}))
    return http_routes(ctx, child, rules=merged_rules, depth=depth + 1)


def _merge_match(parent: istio.HTTPMatchRequest, child: istio.HTTPMatchRequest) -> istio.HTTPMatchRequest:
    """The child's conditions narrow the parent's (Istio requires the child's uri within the parent's)."""
    return child.model_copy(
        update={
            "uri": child.uri or parent.uri,
            "headers": {**parent.headers, **child.headers},
            "query_params": {**parent.query_params, **child.query_params},
            "without_headers": {**parent.without_headers, **child.without_headers},
            "gateways": parent.gateways,
            "port": parent.port,
        }
    )


def l4_backends(
    ctx: RouteContext, vs: istio.VirtualService, *, sni: str | None = None
) -> tuple[ir.WeightedCluster, ...] | None:
    """The first ``tcp`` rule (or ``tls`` rule for ``sni``) that applies here, as weighted clusters."""
    rules: Sequence[istio.TCPRoute | istio.TLSRoute] = vs.spec.tls if sni is not None else vs.spec.tcp
    kind = "tls" if sni is not None else "tcp"
    for r_index, rule in enumerate(rules):
        at = At.of(vs, f"spec.{kind}[{r_index}]")
        matches: list[istio.L4MatchAttributes | istio.TLSMatchAttributes | None] = [*rule.match] or [None]
        for match in matches:
            if match is not None:
                if not _match_applies(
                    ctx, vs, match.gateways, match.port, match.source_labels, match.source_namespace
                ):
                    continue
                if (
                    sni is not None
                    and isinstance(match, istio.TLSMatchAttributes)
                    and sni not in match.sni_hosts
                ):
                    continue
                if match.destination_subnets:
                    ctx.build.warn(
                        at, UNSUPPORTED_FEATURE, "destinationSubnets are not supported; matching on the rest"
                    )
            backends = []
            for d_index, dest in enumerate(rule.route):
                cluster = _cluster(ctx, vs, dest.destination, at.sub(f".route[{d_index}]"))
                weight = dest.weight if dest.weight is not None else (100 if len(rule.route) == 1 else 0)
                if cluster is not None and weight > 0:
                    backends.append(ir.WeightedCluster(cluster=cluster.name, weight=weight))
            return tuple(backends) if backends else None
    return None
