"""kgateway TrafficPolicy ``retry`` and ``timeouts`` on HTTPRoute routes: what each attachment
(HTTPRoute, rule by sectionName, ExtensionRef filter, Gateway, listener) sets, which policy wins
(the more specific, then the older; ``retry`` and ``timeouts`` each whole), the rule's own Gateway
API fields beating every policy, Gateway policies as defaults, and what is reported."""

from __future__ import annotations

import copy
from typing import Any

from meshxds import ir
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.pipeline import Pipeline
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs
from meshxds.translators.gatewayapi import GatewayAPIResult, translate_gateway_api
from meshxds.xds.resources import build_route

GW_NS, NS = "gateway-system", "default"
HTTPROUTE = {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "web"}
RETRY_503 = {"retryOn": ["retriable-status-codes"], "statusCodes": [503], "attempts": 2}


def gateway_ref(section: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "http"}
    if section is not None:
        ref["sectionName"] = section
    return ref


def route_ref(section: str | None = None) -> dict[str, Any]:
    return {**HTTPROUTE, "sectionName": section} if section is not None else dict(HTTPROUTE)


def traffic_policy(
    name: str, spec: dict[str, Any], *, namespace: str = NS, created: str = ""
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": meta,
        "spec": spec,
    }


def base(rules: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Gateway ``http`` (listeners ``a`` :8000, ``b`` :8001) and HTTPRoute ``web`` whose rules
    (default: ``fast`` on /fast, ``slow`` on /slow) reach Service ``web``."""
    docs = gateway_api_docs([gateway_listener(8000, name="a"), gateway_listener(8001, name="b")])
    docs += routed_service_docs("web", upstream_port=9999, hostnames=["web.example"])
    backend = [{"name": "web", "port": 8080}]
    route = docs[-1]
    route["spec"]["rules"] = rules or [
        {
            "name": "fast",
            "matches": [{"path": {"type": "PathPrefix", "value": "/fast"}}],
            "backendRefs": backend,
        },
        {
            "name": "slow",
            "matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
            "backendRefs": backend,
        },
    ]
    return docs


def translate(*docs: dict[str, Any]) -> GatewayAPIResult:
    resources = parse_documents(SourcedDocument(path="m.yaml", index=i, body=d) for i, d in enumerate(docs))
    result = translate_gateway_api(resources)
    for config in result.gateways.values():
        assert config.validate() == []
    return result


def routes(result: GatewayAPIResult) -> dict[int, dict[str, ir.Route]]:
    """Every route by listener port and route name (``<route kind>/<rule>``: ``httproute/0``)."""
    found: dict[int, dict[str, ir.Route]] = {}
    for config in result.gateways.values():
        for listener in config.listeners:
            for chain in listener.chains:
                assert chain.route_table is not None
                for vhost in chain.route_table.virtual_hosts:
                    for route in vhost.routes:
                        parts = route.name.split("/")  # kind/ns/name/rule/N/match/M
                        found.setdefault(listener.port, {})[f"{parts[0]}/{parts[4]}"] = route
    return found


def forward(route: ir.Route) -> ir.ForwardAction:
    assert isinstance(route.action, ir.ForwardAction), route.action
    return route.action


def test_a_policy_on_the_httproute_sets_every_rules_retry_and_timeouts() -> None:
    spec = {
        "targetRefs": [route_ref()],
        "retry": {
            "retryOn": ["unavailable", "5xx"],
            "statusCodes": [504, 503],
            "attempts": 3,
            "perTryTimeout": "250ms",
            "backoffBaseInterval": "100ms",
        },
        "timeouts": {"request": "5s", "streamIdle": "1m"},
    }
    result = translate(*base(), traffic_policy("tp", spec))
    assert result.warnings == ()
    expected = ir.RetryPolicy(
        attempts=3,
        per_try_timeout_s=0.25,
        retry_on="5xx,retriable-status-codes,unavailable",
        retriable_status_codes=(503, 504),
        backoff_base_s=0.1,
    )
    for port in (8000, 8001):
        for rule in ("0", "1"):
            route = routes(result)[port][f"httproute/{rule}"]
            assert route.retries == expected
            assert (forward(route).timeout_s, forward(route).idle_timeout_s) == (5.0, 60.0)


def test_retry_defaults_one_attempt_and_envoys_backoff() -> None:
    result = translate(
        *base(), traffic_policy("tp", {"targetRefs": [route_ref()], "retry": {"retryOn": ["reset"]}})
    )
    route = routes(result)[8000]["httproute/0"]
    assert route.retries == ir.RetryPolicy(attempts=1, retry_on="reset")
    assert forward(route).timeout_s is None and forward(route).idle_timeout_s is None  # untouched


def test_section_name_targets_the_rule_of_that_name_only() -> None:
    spec = {"targetRefs": [route_ref("slow")], "retry": RETRY_503, "timeouts": {"request": "500ms"}}
    found = routes(translate(*base(), traffic_policy("tp", spec)))[8000]
    assert found["httproute/0"].retries is None and forward(found["httproute/0"]).timeout_s is None
    assert found["httproute/1"].retries is not None and forward(found["httproute/1"]).timeout_s == 0.5


def test_the_rule_beats_the_route_and_each_top_level_field_comes_whole_from_one_policy() -> None:
    route_wide = traffic_policy(
        "route-wide",
        {"targetRefs": [route_ref()], "retry": RETRY_503, "timeouts": {"request": "9s", "streamIdle": "9s"}},
        created="2020-01-01T00:00:00Z",  # older, yet less specific
    )
    rule = traffic_policy(
        "rule",
        {"targetRefs": [route_ref("fast")], "timeouts": {"streamIdle": "2s"}},
        created="2025-01-01T00:00:00Z",
    )
    result = translate(*base(), route_wide, rule)
    fast, slow = routes(result)[8000]["httproute/0"], routes(result)[8000]["httproute/1"]
    # The rule's policy gives ``timeouts`` whole: no request timeout from the route-wide one.
    assert (forward(fast).timeout_s, forward(fast).idle_timeout_s) == (None, 2.0)
    assert fast.retries is not None and fast.retries.retriable_status_codes == (503,)  # retry still merges in
    assert (forward(slow).timeout_s, forward(slow).idle_timeout_s) == (9.0, 9.0)
    assert result.warnings == (
        "TrafficPolicy/default/route-wide: spec.timeouts: not applied to HTTPRoute default/web "
        "spec.rules[0]: TrafficPolicy/default/rule, which names the rule 'fast', sets it",
    )


def test_among_equals_the_oldest_wins_then_the_name() -> None:
    newer = traffic_policy(
        "a-newer",
        {"targetRefs": [route_ref()], "timeouts": {"request": "1s"}},
        created="2025-06-01T00:00:00Z",
    )
    older = traffic_policy(
        "z-older",
        {"targetRefs": [route_ref()], "timeouts": {"request": "2s"}},
        created="2024-06-01T00:00:00Z",
    )
    result = translate(*base(), newer, older)
    assert forward(routes(result)[8000]["httproute/0"]).timeout_s == 2.0
    assert result.warnings[0] == (
        "TrafficPolicy/default/a-newer: spec.timeouts: not applied to HTTPRoute default/web spec.rules[0]: "
        "the older TrafficPolicy/default/z-older sets it"
    )
    undated = translate(
        *base(),
        traffic_policy("b", {"targetRefs": [route_ref()], "timeouts": {"request": "1s"}}),
        traffic_policy("a", {"targetRefs": [route_ref()], "timeouts": {"request": "2s"}}),
    )
    assert forward(routes(undated)[8000]["httproute/0"]).timeout_s == 2.0
    assert "TrafficPolicy/default/a sets it and comes first (as old; by name)" in undated.warnings[0]


def test_the_rules_own_retry_and_request_timeout_beat_a_policy_naming_both_objects() -> None:
    backend = [{"name": "web", "port": 8080}]
    rules = [
        {
            "name": "own",
            "backendRefs": backend,
            "retry": {"codes": [500], "attempts": 4},
            "timeouts": {"request": "3s"},
        },
        {"name": "per-try", "backendRefs": backend, "timeouts": {"backendRequest": "1s"}},
    ]
    spec = {
        "targetRefs": [route_ref()],
        "retry": RETRY_503,
        "timeouts": {"request": "500ms", "streamIdle": "7s"},
    }
    result = translate(*base(rules), traffic_policy("tp", spec))
    own, per_try = routes(result)[8000]["httproute/0"], routes(result)[8000]["httproute/1"]
    assert own.retries is not None and (own.retries.attempts, own.retries.retriable_status_codes) == (
        4,
        (500,),
    )
    assert (forward(own).timeout_s, forward(own).idle_timeout_s) == (3.0, 7.0)  # streamIdle still applies
    # backendRequest is a retry policy of the rule's own; the policy's request bounds the whole request.
    assert per_try.retries == ir.RetryPolicy(attempts=0, per_try_timeout_s=1.0, retry_on="")
    assert forward(per_try).timeout_s == 0.5
    assert result.warnings == (
        "TrafficPolicy/default/tp: spec.retry: not applied to HTTPRoute default/web spec.rules[0]: the "
        "rule's own retry (or timeouts.backendRequest) of HTTPRoute/default/web wins over a kgateway policy",
        "TrafficPolicy/default/tp: spec.timeouts.request: not applied to HTTPRoute default/web "
        "spec.rules[0]: the rule's own timeouts.request of HTTPRoute/default/web wins over a kgateway policy",
        "TrafficPolicy/default/tp: spec.retry: not applied to HTTPRoute default/web spec.rules[1]: the "
        "rule's own retry (or timeouts.backendRequest) of HTTPRoute/default/web wins over a kgateway policy",
    )


def extension_ref(name: str) -> dict[str, Any]:
    return {
        "type": "ExtensionRef",
        "extensionRef": {"group": "gateway.kgateway.dev", "kind": "TrafficPolicy", "name": name},
    }


def test_an_extension_ref_filter_attaches_a_policy_to_its_rule_above_a_section_name() -> None:
    backend = [{"name": "web", "port": 8080}]
    rules = [
        {"name": "fast", "filters": [extension_ref("by-filter")], "backendRefs": backend},
        {"name": "slow", "backendRefs": backend},
    ]
    by_filter = traffic_policy("by-filter", {"timeouts": {"request": "1s"}}, created="2025-01-01T00:00:00Z")
    by_section = traffic_policy(
        "by-section",
        {"targetRefs": [route_ref("fast")], "timeouts": {"request": "2s"}},
        created="2020-01-01T00:00:00Z",
    )
    result = translate(*base(rules), by_filter, by_section)
    found = routes(result)[8000]
    assert forward(found["httproute/0"]).timeout_s == 1.0
    assert forward(found["httproute/1"]).timeout_s is None
    assert result.warnings == (
        "TrafficPolicy/default/by-section: spec.timeouts: not applied to HTTPRoute default/web "
        "spec.rules[0]: TrafficPolicy/default/by-filter, which an ExtensionRef filter of the rule names, "
        "sets it",
    )
    (status,) = [s for s in result.statuses if s.kind == "HTTPRoute"]
    assert "UnservedFields" not in str(status.as_dict())  # the filter is served, not reported


def test_an_extension_ref_naming_no_traffic_policy_fails_the_rule_closed() -> None:
    backend = [{"name": "web", "port": 8080}]
    rules = [{"filters": [extension_ref("gone")], "backendRefs": backend}, {"backendRefs": backend}]
    result = translate(*base(rules))
    found = routes(result)[8000]
    assert found["httproute/0"].action == ir.DirectResponse(status=500)
    assert isinstance(found["httproute/1"].action, ir.ForwardAction)
    assert result.warnings == (
        "HTTPRoute/default/web: spec.rules[0].filters[0].extensionRef: TrafficPolicy default/gone not found; "
        "this rule answers 500",
    )


def test_gateway_and_listener_policies_are_defaults_for_their_routes() -> None:
    gateway_wide = traffic_policy(
        "gateway-wide",
        {"targetRefs": [gateway_ref()], "timeouts": {"request": "4s", "streamIdle": "40s"}},
        namespace=GW_NS,
    )
    listener_a = traffic_policy(
        "listener-a", {"targetRefs": [gateway_ref("a")], "retry": RETRY_503}, namespace=GW_NS
    )
    # Route-level: the slow rule's own idle timeout; the request timeout stays open to defaults.
    rule = traffic_policy("rule", {"targetRefs": [route_ref("slow")], "timeouts": {"streamIdle": "3s"}})
    result = translate(*base(), gateway_wide, listener_a, rule)
    assert result.warnings == ()
    found = routes(result)
    for port in (8000, 8001):
        fast, slow = found[port]["httproute/0"], found[port]["httproute/1"]
        assert (forward(fast).timeout_s, forward(fast).idle_timeout_s) == (4.0, 40.0)
        assert (forward(slow).timeout_s, forward(slow).idle_timeout_s) == (4.0, 3.0)
        retries = fast.retries if port == 8000 else None
        assert fast.retries == retries and slow.retries == retries
    assert found[8000]["httproute/0"].retries == ir.RetryPolicy(
        attempts=2, retry_on="retriable-status-codes", retriable_status_codes=(503,)
    )


def test_a_listener_policy_beats_a_gateway_wide_one_and_route_settings_beat_both() -> None:
    gateway_wide = traffic_policy(
        "gateway-wide",
        {"targetRefs": [gateway_ref()], "timeouts": {"request": "4s"}},
        namespace=GW_NS,
        created="2020-01-01T00:00:00Z",
    )
    listener_b = traffic_policy(
        "listener-b", {"targetRefs": [gateway_ref("b")], "timeouts": {"request": "6s"}}, namespace=GW_NS
    )
    route_wide = traffic_policy("route", {"targetRefs": [route_ref("fast")], "timeouts": {"request": "1s"}})
    result = translate(*base(), gateway_wide, listener_b, route_wide)
    found = routes(result)
    assert [forward(found[p]["httproute/1"]).timeout_s for p in (8000, 8001)] == [4.0, 6.0]
    assert [forward(found[p]["httproute/0"]).timeout_s for p in (8000, 8001)] == [1.0, 1.0]
    assert result.warnings == (
        "TrafficPolicy/gateway-system/gateway-wide: spec.timeouts: not applied to Gateway "
        "gateway-system/http listener b: TrafficPolicy/gateway-system/listener-b, which names listener "
        "'b', sets it",
    )


def test_a_listener_retry_reaches_grpc_routes_and_its_timeouts_do_not() -> None:
    docs = base()
    docs += routed_service_docs(
        "echo", upstream_port=9998, hostnames=["grpc.example"], port=9000, app_protocol="grpc"
    )
    grpc_route = docs[-1]
    grpc_route["kind"] = "GRPCRoute"
    grpc_route["spec"]["rules"] = [{"backendRefs": [{"name": "echo", "port": 9000}]}]
    spec = {
        "targetRefs": [gateway_ref("a")],
        "retry": {"retryOn": ["unavailable"]},
        "timeouts": {"request": "2s"},
    }
    found = routes(translate(*docs, traffic_policy("tp", spec, namespace=GW_NS)))[8000]
    grpc = found["grpcroute/0"]
    assert grpc.retries == ir.RetryPolicy(attempts=1, retry_on="unavailable")
    assert (forward(grpc).timeout_s, forward(grpc).grpc_timeout_header_max_s) == (
        0.0,
        0.0,
    )  # no limit, as before
    assert forward(found["httproute/0"]).timeout_s == 2.0


def test_a_request_timeout_to_an_http2_backend_caps_the_grpc_timeout_too() -> None:
    docs = gateway_api_docs([gateway_listener(8000, name="a")])
    docs += routed_service_docs(
        "h2", upstream_port=9999, hostnames=["h2.example"], app_protocol="kubernetes.io/h2c"
    )
    docs.append(
        traffic_policy("tp", {"targetRefs": [{**HTTPROUTE, "name": "h2"}], "timeouts": {"request": "3s"}})
    )
    action = forward(routes(translate(*docs))[8000]["httproute/0"])
    assert (action.timeout_s, action.grpc_timeout_header_max_s) == (3.0, 3.0)


def test_targets_that_attach_to_nothing_are_reported() -> None:
    refs = [
        {**HTTPROUTE, "name": "missing"},
        route_ref("no-such-rule"),
        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": "web"},
    ]
    result = translate(
        *base(),
        traffic_policy("tp", {"targetRefs": refs, "timeouts": {"request": "1s"}}),
        traffic_policy(
            "gw",
            {
                "targetRefs": [gateway_ref("c"), {**gateway_ref(), "name": "other"}],
                "timeouts": {"request": "1s"},
            },
            namespace=GW_NS,
        ),
        traffic_policy("loose", {"timeouts": {"request": "1s"}}),
    )
    assert sorted(result.warnings) == [
        "TrafficPolicy/default/loose: targets nothing (no targetRefs, and no HTTPRoute rule in default "
        "names it in an ExtensionRef filter); not applied",
        "TrafficPolicy/default/tp: spec.targetRefs[0]: HTTPRoute default/missing not found",
        "TrafficPolicy/default/tp: spec.targetRefs[1].sectionName: HTTPRoute default/web has no rule named "
        "'no-such-rule'; not applied",
        "TrafficPolicy/default/tp: spec.targetRefs[2]: kind gateway.networking.k8s.io/GRPCRoute is not "
        "supported (give a gateway.networking.k8s.io HTTPRoute or Gateway); ignored",
        "TrafficPolicy/gateway-system/gw: spec.targetRefs[0].sectionName: Gateway gateway-system/http has no "
        "listener 'c'; not applied",
        "TrafficPolicy/gateway-system/gw: spec.targetRefs[1]: Gateway gateway-system/other not found",
    ]
    assert all(forward(r).timeout_s is None for r in routes(result)[8000].values())


def test_a_policy_in_another_namespace_does_not_attach() -> None:
    result = translate(
        *base(),
        traffic_policy("tp", {"targetRefs": [route_ref()], "timeouts": {"request": "1s"}}, namespace="other"),
    )
    assert result.warnings == ("TrafficPolicy/other/tp: spec.targetRefs[0]: HTTPRoute other/web not found",)
    assert forward(routes(result)[8000]["httproute/0"]).timeout_s is None


def test_envoy_gets_the_idle_timeout_and_a_backoff_capped_at_ten_times_its_base() -> None:
    spec = {
        "targetRefs": [route_ref()],
        "retry": {"retryOn": ["reset"], "backoffBaseInterval": "50ms", "perTryTimeout": "1s"},
        "timeouts": {"streamIdle": "0s", "request": "2s"},
    }
    proto = build_route(routes(translate(*base(), traffic_policy("tp", spec)))[8000]["httproute/0"])
    action = proto.route
    assert action.idle_timeout.ToMilliseconds() == 0 and action.HasField("idle_timeout")  # 0s: never
    assert action.timeout.ToMilliseconds() == 2000
    policy = action.retry_policy
    assert (policy.retry_on, policy.num_retries.value, policy.per_try_timeout.ToMilliseconds()) == (
        "reset",
        1,
        1000,
    )
    assert policy.retry_back_off.base_interval.ToMilliseconds() == 50
    assert policy.retry_back_off.max_interval.ToMilliseconds() == 500


def test_a_policy_edit_alone_retranslates_the_routes_it_shapes() -> None:
    """A TrafficPolicy shapes compiled routes: editing only it is no reuse case."""
    docs = [*base(), traffic_policy("tp", {"targetRefs": [route_ref()], "timeouts": {"request": "1s"}})]
    pipeline = Pipeline()
    parsed = parse_documents(SourcedDocument(path=f"m{i}.yaml", index=0, body=d) for i, d in enumerate(docs))
    first = pipeline.update(parsed).translation.gateway_api
    assert forward(routes(first)[8000]["httproute/0"]).timeout_s == 1.0
    edited = copy.deepcopy(docs)
    edited[-1]["spec"]["timeouts"]["request"] = "2s"
    reparsed = parse_documents(
        SourcedDocument(path=f"m{i}.yaml", index=0, body=d) for i, d in enumerate(edited)
    )
    # The objects that did not change stay the same objects, as both sources keep them.
    objects = {
        model: {
            k: parsed.objects[model].get(k, o) if parsed.objects[model].get(k) == o else o
            for k, o in found.items()
        }
        for model, found in reparsed.objects.items()
    }
    kept = type(reparsed)(objects=objects, origins=reparsed.origins, warnings=reparsed.warnings)
    second = pipeline.update(kept).translation.gateway_api
    assert forward(routes(second)[8000]["httproute/0"]).timeout_s == 2.0
