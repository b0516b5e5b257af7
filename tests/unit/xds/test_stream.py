"""The sans-IO xDS streams (SotW and Delta) and the connection registry, request by request."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from xds_protos import cluster_name, mesh_snapshot, node

from meshxds.identity import ProxyIdentity
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET, Snapshot
from meshxds.xds.registry import Connection, ConnectionRegistry
from meshxds.xds.stream import (
    NACK_LOG_BURST,
    NACK_MESSAGE_LIMIT,
    TYPES_PER_STREAM,
    Ack,
    Action,
    LogBudget,
    Nack,
    Send,
    Stale,
    XdsProtocolError,
    node_identity,
    truncate,
)
from meshxds.xds.stream_delta import DeltaAdsStream
from meshxds.xds.stream_sotw import AdsStream

WEB, API = cluster_name("web"), cluster_name("api")


def sotw(
    type_url: str = "",
    names: Sequence[str] = (),
    *,
    nonce: str = "",
    version: str = "",
    error: str | None = None,
    with_node: bool = False,
) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=names, response_nonce=nonce, version_info=version
    )
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    if with_node:
        request.node.CopyFrom(node("proxy-1", namespace="ns", app="gw"))
    return request


def delta(
    type_url: str,
    subscribe: Sequence[str] = (),
    unsubscribe: Sequence[str] = (),
    *,
    nonce: str = "",
    error: str | None = None,
    initial: dict[str, str] | None = None,
    with_node: bool = False,
) -> discovery_pb2.DeltaDiscoveryRequest:
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=subscribe,
        resource_names_unsubscribe=unsubscribe,
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    if with_node:
        request.node.CopyFrom(node("proxy-1", namespace="ns", app="gw"))
    return request


def sends(actions: Sequence[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def only_send(actions: Sequence[Action]) -> Send:
    found = sends(actions)
    assert len(found) == 1, actions
    return found[0]


def types_of(actions: Sequence[Action]) -> list[str]:
    return [s.type_url for s in sends(actions)]


def ack(stream: AdsStream, send: Send, names: Sequence[str] = ()) -> list[Action]:
    return stream.on_request(sotw(send.type_url, names, nonce=send.nonce, version=send.version))


def connected_sotw(snapshot: Snapshot) -> tuple[AdsStream, dict[str, Send]]:
    """A SotW stream that went through Envoy's start: CDS, EDS, LDS, RDS, each acked."""
    stream = AdsStream()
    assert stream.on_request(sotw(TYPE_CLUSTER, with_node=True)) == []
    last = {TYPE_CLUSTER: only_send(stream.on_snapshot(snapshot))}
    steps = [
        (TYPE_ENDPOINT, sorted(snapshot.names(TYPE_ENDPOINT))),
        (TYPE_LISTENER, []),
        (TYPE_ROUTE, sorted(snapshot.names(TYPE_ROUTE))),
    ]
    ack(stream, last[TYPE_CLUSTER])
    for type_url, names in steps:
        last[type_url] = only_send(stream.on_request(sotw(type_url, names)))
        assert isinstance(ack(stream, last[type_url], names)[0], Ack)
    return stream, last


# --- requests and nodes -------------------------------------------------------------------------


def test_ads_request_without_type_url_is_a_protocol_error() -> None:
    with pytest.raises(XdsProtocolError, match="type_url"):
        AdsStream().on_request(sotw())
    with pytest.raises(XdsProtocolError, match="type_url"):
        DeltaAdsStream().on_request(delta(""))


def test_per_type_stream_fills_in_its_type_and_refuses_others() -> None:
    stream = AdsStream(type_url=TYPE_LISTENER)
    stream.on_request(sotw(with_node=True))
    assert set(stream.types) == {TYPE_LISTENER}
    with pytest.raises(XdsProtocolError, match="stream"):
        stream.on_request(sotw(TYPE_CLUSTER))


def test_node_is_cached_from_the_first_request() -> None:
    stream = AdsStream()
    stream.on_request(sotw(TYPE_CLUSTER, with_node=True))
    stream.on_request(sotw(TYPE_LISTENER))
    assert stream.node is not None and stream.node.id == "proxy-1"
    assert stream.identity is not None
    assert stream.identity.namespace == "ns"
    assert stream.identity.label_map == {"app": "gw"}


def test_node_identity_reads_namespace_and_label_map() -> None:
    assert node_identity(node("x")) == ProxyIdentity.of(namespace="default")
    assert node_identity(node("x", namespace="")).namespace == "default"
    identity = node_identity(node("x", namespace="prod", **{"gateway.networking.k8s.io/gateway-name": "gw"}))
    assert identity.namespace == "prod"
    assert identity.label_map == {"gateway.networking.k8s.io/gateway-name": "gw"}
    assert node_identity(node("x", app="")).label_map == {"app": ""}  # an empty label value is valid


def _node_with(metadata: dict[str, object], node_id: str = "x") -> base_pb2.Node:
    proxy = base_pb2.Node(id=node_id)
    proxy.metadata.update(metadata)
    return proxy


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        pytest.param(base_pb2.Node(), "node.id is empty", id="node-id-empty"),
        pytest.param(_node_with({}, "x" * 1025), "node.id has 1025 characters", id="node-id-too-long"),
        pytest.param(
            _node_with({"namespace": 7}), "namespace must be a string, not a number", id="ns-number"
        ),
        pytest.param(
            _node_with({"namespace": {"a": "b"}}), "namespace must be a string, not a map", id="ns-map"
        ),
        pytest.param(
            _node_with({"namespace": "Prod_1"}), "'Prod_1' is not a Kubernetes namespace", id="ns-syntax"
        ),
        pytest.param(
            _node_with({"labels": "app=gw"}),
            "labels must be a map of strings, not a string",
            id="labels-string",
        ),
        pytest.param(
            _node_with({"labels": ["app", "gw"]}),
            "labels must be a map of strings, not a list",
            id="labels-list",
        ),
        pytest.param(
            _node_with({"labels": None}), "labels must be a map of strings, not null", id="labels-null"
        ),
        pytest.param(
            _node_with({"labels": {"version": 1.1}}),
            "labels['version'] must be a string (quote it), not a number",
            id="label-value-number",
        ),
        pytest.param(
            _node_with({"labels": {"canary": True}}),
            "labels['canary'] must be a string",
            id="label-value-bool",
        ),
        pytest.param(
            _node_with({"labels": {"app": {"x": "y"}}}),
            "labels['app'] must be a string",
            id="label-value-map",
        ),
        pytest.param(
            _node_with({"labels": {"bad key": "x"}}), "'bad key']: not a Kubernetes label key", id="label-key"
        ),
        pytest.param(
            _node_with({"labels": {"Bad.Prefix/app": "x"}}), "not a Kubernetes label key", id="label-prefix"
        ),
        pytest.param(
            _node_with({"labels": {"app": "a b"}}), "'a b' is not a Kubernetes label value", id="label-value"
        ),
        pytest.param(
            _node_with({"labels": {"app": "v" * 100_000}}),
            "is not a Kubernetes label value",
            id="label-value-too-long",
        ),
    ],
)
def test_node_with_malformed_identity_is_a_protocol_error(proxy: base_pb2.Node, message: str) -> None:
    with pytest.raises(XdsProtocolError) as caught:
        node_identity(proxy)
    assert message in caught.value.message
    assert len(caught.value.message) < 300  # client text is quoted bounded, never whole


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_first_request_without_node_is_a_protocol_error_and_later_ones_need_none(mode: str) -> None:
    if mode == "sotw":
        stream: AdsStream | DeltaAdsStream = AdsStream()
        bare, with_node = sotw(TYPE_CLUSTER), sotw(TYPE_CLUSTER, with_node=True)
    else:
        stream = DeltaAdsStream()
        bare, with_node = delta(TYPE_CLUSTER), delta(TYPE_CLUSTER, with_node=True)
    with pytest.raises(XdsProtocolError, match="first request of a stream must carry node"):
        stream.on_request(bare)
    assert stream.node is None and stream.identity is None and dict(stream.types) == {}
    stream.on_request(with_node)
    stream.on_request(bare if mode == "delta" else sotw(TYPE_LISTENER))
    assert stream.identity == ProxyIdentity.of(namespace="ns", labels={"app": "gw"})


def test_malformed_node_is_not_cached_and_a_later_good_one_is_not_taken() -> None:
    stream = AdsStream()
    bad = sotw(TYPE_CLUSTER)
    bad.node.CopyFrom(_node_with({"labels": "app=gw"}))
    with pytest.raises(XdsProtocolError, match="labels"):
        stream.on_request(bad)
    assert stream.node is None and stream.identity is None


def test_type_urls_are_bounded_in_length_and_number_per_stream() -> None:
    stream = AdsStream()
    with pytest.raises(XdsProtocolError, match="type_url has 300 characters"):
        stream.on_request(sotw("t" * 300, with_node=True))
    stream.on_request(sotw(TYPE_CLUSTER, with_node=True))
    for index in range(TYPES_PER_STREAM - 1):
        stream.on_request(sotw(f"type.googleapis.com/unknown.T{index}"))
    stream.on_request(sotw(TYPE_CLUSTER))  # a known type is not counted again
    with pytest.raises(XdsProtocolError, match=f"more than {TYPES_PER_STREAM} type_urls"):
        stream.on_request(sotw("type.googleapis.com/unknown.one-too-many"))


# --- bounded client text ------------------------------------------------------------------------


def test_truncate_marks_the_cut_and_the_original_length() -> None:
    assert truncate("short") == "short"
    assert truncate("x" * NACK_MESSAGE_LIMIT) == "x" * NACK_MESSAGE_LIMIT
    cut = truncate("é" * 3_900_000)
    assert cut.startswith("é" * NACK_MESSAGE_LIMIT)
    assert cut.endswith("[truncated, 3900000 characters in all]")
    assert len(cut) < NACK_MESSAGE_LIMIT + 64


def test_log_budget_allows_a_burst_then_one_per_interval_and_counts_the_rest() -> None:
    budget = LogBudget(burst=3, interval=10.0)
    assert [budget.take(100.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.take(105.0) is None  # half a token
    assert budget.take(110.0) == 3  # the three refused since the last line
    assert budget.take(110.0) is None
    assert budget.take(1000.0) == 1
    # Refilled to the burst, not beyond it.
    assert [budget.take(1000.0) for _ in range(3)] == [0, 0, None]


def test_a_huge_nack_is_truncated_in_the_action_and_the_status() -> None:
    stream, _ = connected_sotw(mesh_snapshot())
    bad = only_send(stream.on_snapshot(mesh_snapshot(listeners={8080: "web", 8081: "web"})))
    huge = "bad listener " + "x" * 3_900_000
    (nack,) = stream.on_request(sotw(TYPE_LISTENER, nonce=bad.nonce, error=huge))
    assert isinstance(nack, Nack)
    assert nack.message == truncate(huge) and len(nack.message) < NACK_MESSAGE_LIMIT + 64
    assert (nack.log, nack.suppressed) == (True, 0)
    assert stream.type_status()[TYPE_LISTENER]["last_nack"] == nack.message


def test_nack_log_lines_are_rate_limited_per_stream_and_type() -> None:
    stream, _ = connected_sotw(mesh_snapshot())
    # Each request NACKs the latest EDS response and asks for other names, so it gets a new one.
    send = only_send(stream.on_request(sotw(TYPE_ENDPOINT, [WEB, "other"])))
    nacks: list[Nack] = []
    for index in range(NACK_LOG_BURST + 4):
        names = [WEB] if index % 2 == 0 else [WEB, "other"]
        actions = stream.on_request(sotw(TYPE_ENDPOINT, names, nonce=send.nonce, error=f"no {index}"))
        assert isinstance(actions[0], Nack)
        nacks.append(actions[0])
        send = only_send(actions)
    assert [n.log for n in nacks] == [True] * NACK_LOG_BURST + [False] * 4
    assert all(n.suppressed == 0 for n in nacks)
    budget = stream.types[TYPE_ENDPOINT].nack_log
    assert budget is not None and budget.suppressed == 4
    assert stream.types[TYPE_CLUSTER].nack_log is None  # another type has a budget of its own


# --- SotW ---------------------------------------------------------------------------------------


def test_sotw_waits_for_a_snapshot_then_answers_the_outstanding_request() -> None:
    stream = AdsStream()
    assert stream.on_request(sotw(TYPE_CLUSTER, with_node=True)) == []
    snapshot = mesh_snapshot(services=["web", "api"])
    send = only_send(stream.on_snapshot(snapshot))
    assert send.type_url == TYPE_CLUSTER
    assert send.version == snapshot.version(TYPE_CLUSTER)
    assert send.resources == (API, WEB)
    response = discovery_pb2.DiscoveryResponse.FromString(send.response)
    assert response.nonce == send.nonce and response.version_info == send.version
    assert list(response.resources) == [snapshot.resources[TYPE_CLUSTER][n].any for n in (API, WEB)]


def test_streams_of_one_snapshot_share_one_response_while_its_nonce_is_new_to_them() -> None:
    snapshot = mesh_snapshot(services=["web", "api"])
    first, second, late = AdsStream(), AdsStream(), AdsStream()
    for stream in (first, second, late):
        stream.on_request(sotw(TYPE_CLUSTER, with_node=True))
    earlier = only_send(second.on_snapshot(mesh_snapshot(services=["web"])))
    assert ack(second, earlier) == [Ack(type_url=TYPE_CLUSTER, version=earlier.version, nonce=earlier.nonce)]
    sends_ = [only_send(stream.on_snapshot(snapshot)) for stream in (first, second)]
    # One response object, nonce included: it is above every nonce either stream used before.
    assert sends_[0].response is sends_[1].response
    assert int(sends_[1].nonce) > int(earlier.nonce)
    body = snapshot.select(TYPE_CLUSTER, None).sotw_body
    assert sends_[0].response.startswith(body)
    # A stream that has used a later nonce since gets its own, on the same body.
    later = only_send(late.on_snapshot(mesh_snapshot(services=["api"])))
    assert int(later.nonce) > int(sends_[0].nonce)
    ack(late, later)
    own = only_send(late.on_snapshot(snapshot))
    assert int(own.nonce) > int(later.nonce)
    assert own.response is not sends_[0].response and own.response.startswith(body)

    deltas = []
    for _ in range(2):
        delta_stream = DeltaAdsStream()
        delta_stream.on_request(delta(TYPE_CLUSTER, with_node=True))
        deltas.append(only_send(delta_stream.on_snapshot(snapshot)).response)
    entries = snapshot.select(TYPE_CLUSTER, None).delta_entries
    assert all(entries in response for response in deltas)
    assert deltas[0] is deltas[1]


def test_sotw_ack_records_the_version_and_syncs() -> None:
    stream, last = connected_sotw(mesh_snapshot())
    status = stream.type_status()
    for type_url, send in last.items():
        assert status[type_url] == {
            "version_sent": send.version,
            "version_acked": send.version,
            "nonce": send.nonce,
            "state": "SYNCED",
            "last_nack": None,
        }


def test_sotw_does_not_push_while_the_previous_response_is_unanswered() -> None:
    stream = AdsStream()
    stream.on_request(sotw(TYPE_CLUSTER, with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web"])))
    assert stream.on_snapshot(mesh_snapshot(services=["web", "api"])) == []
    assert stream.type_status()[TYPE_CLUSTER]["state"] == "STALE"
    actions = ack(stream, first)
    assert isinstance(actions[0], Ack)
    assert only_send(actions).resources == (API, WEB)


def test_sotw_nack_keeps_the_acked_version_and_does_not_resend_it() -> None:
    stream, last = connected_sotw(mesh_snapshot())
    good = last[TYPE_LISTENER].version
    bad = only_send(stream.on_snapshot(mesh_snapshot(listeners={8080: "web", 8081: "web"})))
    assert bad.type_url == TYPE_LISTENER
    actions = stream.on_request(sotw(TYPE_LISTENER, nonce=bad.nonce, version=good, error="port in use"))
    assert actions == [
        Nack(type_url=TYPE_LISTENER, version=bad.version, nonce=bad.nonce, message="port in use")
    ]
    status = stream.type_status()[TYPE_LISTENER]
    assert status["state"] == "NACKED"
    assert (status["version_acked"], status["version_sent"], status["last_nack"]) == (
        good,
        bad.version,
        "port in use",
    )
    # A fix is pushed; the listener stays NACKED until the fix is acked.
    fixed = only_send(stream.on_snapshot(mesh_snapshot(listeners={8080: "web", 8082: "web"})))
    assert stream.type_status()[TYPE_LISTENER]["state"] == "NACKED"
    ack(stream, fixed)
    assert stream.type_status()[TYPE_LISTENER]["state"] == "SYNCED"


def test_sotw_stale_nonce_is_ignored() -> None:
    stream = AdsStream()
    stream.on_request(sotw(TYPE_CLUSTER, with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web"])))
    stream.on_snapshot(mesh_snapshot(services=["web", "api"]))
    second = only_send(ack(stream, first))
    before = stream.type_status()
    # Envoy answers `first` again (say, a NACK racing the push): ignore it entirely.
    assert stream.on_request(sotw(TYPE_CLUSTER, nonce=first.nonce, error="late")) == [
        Stale(type_url=TYPE_CLUSTER, nonce=first.nonce)
    ]
    assert stream.on_request(sotw(TYPE_CLUSTER, nonce="no-such-nonce")) == [
        Stale(type_url=TYPE_CLUSTER, nonce="no-such-nonce")
    ]
    assert stream.type_status() == before
    assert ack(stream, second) == [Ack(type_url=TYPE_CLUSTER, version=second.version, nonce=second.nonce)]


def test_sotw_named_types_carry_only_subscribed_names_that_exist() -> None:
    stream = AdsStream()
    stream.on_request(sotw(TYPE_ENDPOINT, [WEB, "missing"], with_node=True))
    send = only_send(stream.on_snapshot(mesh_snapshot(services=["web", "api"])))
    assert send.resources == (WEB,)


def test_sotw_a_subscription_change_is_answered_even_if_content_is_the_same() -> None:
    stream = AdsStream()
    stream.on_request(sotw(TYPE_ENDPOINT, [WEB], with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web"])))
    actions = ack(stream, first, [WEB, "not-yet"])
    assert isinstance(actions[0], Ack)
    assert only_send(actions).resources == (WEB,)


def test_sotw_new_subscription_after_an_ack_reuses_that_nonce() -> None:
    stream = AdsStream()
    stream.on_request(sotw(TYPE_ENDPOINT, [WEB], with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web", "api"])))
    ack(stream, first, [WEB])
    actions = stream.on_request(sotw(TYPE_ENDPOINT, [WEB, API], nonce=first.nonce, version=first.version))
    assert only_send(actions).resources == (API, WEB)


def test_sotw_nothing_is_sent_for_an_empty_named_subscription() -> None:
    stream = AdsStream()
    stream.on_request(sotw(TYPE_ENDPOINT, [WEB], with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web"])))
    assert sends(ack(stream, first, [])) == []
    # Subscribing again needs a fresh answer: the client forgot what it had.
    assert only_send(stream.on_request(sotw(TYPE_ENDPOINT, [WEB], nonce=first.nonce))).resources == (WEB,)


def test_sotw_wildcard_lds_sends_everything_so_omission_deletes() -> None:
    stream, _ = connected_sotw(mesh_snapshot(listeners={8080: "web", 9090: "web"}))
    send = sends(stream.on_snapshot(mesh_snapshot(listeners={8080: "web"})))[0]
    assert (send.type_url, send.resources) == (TYPE_LISTENER, ("0.0.0.0_8080",))


def test_sotw_an_equal_snapshot_pushes_nothing() -> None:
    stream, _ = connected_sotw(mesh_snapshot())
    assert stream.on_snapshot(mesh_snapshot()) == []


def test_sotw_a_snapshot_change_pushes_only_changed_types() -> None:
    stream, _ = connected_sotw(mesh_snapshot())
    assert types_of(stream.on_snapshot(mesh_snapshot(route_prefix="/v2"))) == [TYPE_ROUTE]
    stream2, _ = connected_sotw(mesh_snapshot())
    assert types_of(stream2.on_snapshot(mesh_snapshot(endpoint_port=9001))) == [TYPE_ENDPOINT]


def test_sotw_an_endpoint_push_carries_only_the_changed_load_assignment() -> None:
    before = mesh_snapshot(services=["web", "api"])
    stream, _ = connected_sotw(before)
    moved = mesh_snapshot(services=["web", "api"], endpoint_port=9001).get(TYPE_ENDPOINT)[WEB]
    after = Snapshot(resources={**before.resources, TYPE_ENDPOINT: {**before.get(TYPE_ENDPOINT), WEB: moved}})
    send = only_send(stream.on_snapshot(after))
    assert (send.type_url, send.resources) == (TYPE_ENDPOINT, (WEB,))
    response = discovery_pb2.DiscoveryResponse.FromString(send.response)
    assert [r.value for r in response.resources] == [moved.any.value]
    # The version is that of everything the client holds once it applies the response.
    assert response.version_info == send.version == after.select(TYPE_ENDPOINT, None).version
    assert isinstance(ack(stream, send, sorted(after.names(TYPE_ENDPOINT)))[0], Ack)
    assert stream.on_snapshot(after) == []


def test_sotw_pushes_in_ads_order() -> None:
    stream, _ = connected_sotw(mesh_snapshot())
    empty = only_send(stream.on_request(sotw(TYPE_SECRET, ["cert"])))
    assert empty.resources == ()
    ack(stream, empty, ["cert"])
    changed = mesh_snapshot(endpoint_port=9001, route_prefix="/v2", secrets=["cert"])
    actions = stream.on_snapshot(changed)
    assert types_of(actions) == [TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET][1:]


def test_sotw_a_type_waiting_for_its_ack_holds_back_later_types() -> None:
    stream, _ = connected_sotw(mesh_snapshot())
    cds = only_send(stream.on_snapshot(mesh_snapshot(services=["web", "api"])))
    # Clusters are unanswered; new listeners must not overtake the clusters they may use.
    assert stream.on_snapshot(mesh_snapshot(services=["web", "api", "db"], listeners={8080: "db"})) == []
    assert types_of(ack(stream, cds)) == [TYPE_CLUSTER, TYPE_ROUTE]


def test_sotw_clusters_are_removed_after_endpoints_and_routes_are_acked() -> None:
    db = cluster_name("db")
    stream, last = connected_sotw(mesh_snapshot(services=["web", "api"], listeners={8080: "api"}))
    after = mesh_snapshot(services=["web", "db"], listeners={8080: "db"})
    actions = stream.on_snapshot(after)
    assert types_of(actions) == [TYPE_CLUSTER, TYPE_ROUTE]
    cds, rds = sends(actions)
    # First CDS: the new clusters plus the one about to go.
    assert cds.resources == (API, db, WEB)
    assert sends(ack(stream, cds)) == []
    # Envoy asks for the new cluster's endpoints; those of the leaving cluster stay.
    eds = only_send(stream.on_request(sotw(TYPE_ENDPOINT, [WEB, API, db], nonce=last[TYPE_ENDPOINT].nonce)))
    assert eds.resources == (API, db, WEB)
    assert sends(ack(stream, rds, ["http.8080"])) == []
    final, eds_final = sends(ack(stream, eds, [WEB, API, db]))
    assert (final.type_url, final.resources) == (TYPE_CLUSTER, (db, WEB))
    assert final.version == after.version(TYPE_CLUSTER)
    # Endpoints of the removed cluster go after it.
    assert (eds_final.type_url, eds_final.resources) == (TYPE_ENDPOINT, (db, WEB))


def test_sotw_removal_waits_even_when_the_cluster_list_needs_no_other_change() -> None:
    stream, _ = connected_sotw(mesh_snapshot(services=["web", "api"], listeners={8080: "api"}))
    rds = only_send(stream.on_snapshot(mesh_snapshot(services=["web"], listeners={8080: "web"})))
    assert rds.type_url == TYPE_ROUTE
    actions = ack(stream, rds, ["http.8080"])
    assert [(s.type_url, s.resources) for s in sends(actions)] == [
        (TYPE_CLUSTER, (WEB,)),
        (TYPE_ENDPOINT, (WEB,)),
    ]


def test_sotw_clusters_are_removed_at_once_when_nothing_else_changes() -> None:
    stream, _ = connected_sotw(mesh_snapshot(services=["web", "api"]))
    actions = stream.on_snapshot(mesh_snapshot(services=["web"]))
    assert [(s.type_url, s.resources) for s in sends(actions)] == [
        (TYPE_CLUSTER, (WEB,)),
        (TYPE_ENDPOINT, (WEB,)),
    ]


def test_sotw_a_nacked_route_holds_cluster_removal() -> None:
    stream, _ = connected_sotw(mesh_snapshot(services=["web", "api"], listeners={8080: "api"}))
    rds = only_send(stream.on_snapshot(mesh_snapshot(services=["web"], listeners={8080: "web"})))
    assert sends(stream.on_request(sotw(TYPE_ROUTE, ["http.8080"], nonce=rds.nonce, error="bad"))) == []
    assert stream.type_status()[TYPE_CLUSTER]["state"] == "SYNCED"
    fixed = only_send(
        stream.on_snapshot(mesh_snapshot(services=["web"], listeners={8080: "web"}, route_prefix="/ok"))
    )
    assert fixed.type_url == TYPE_ROUTE
    assert sends(ack(stream, fixed, ["http.8080"]))[0].resources == (WEB,)


# --- Delta --------------------------------------------------------------------------------------


def test_delta_wildcard_gets_a_first_response_even_when_empty() -> None:
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_LISTENER, with_node=True))
    send = only_send(stream.on_snapshot(Snapshot(resources={})))
    response = discovery_pb2.DeltaDiscoveryResponse.FromString(send.response)
    assert list(response.resources) == [] and response.system_version_info == send.version


def test_delta_sends_resources_with_their_versions_and_the_shared_any() -> None:
    snapshot = mesh_snapshot(services=["web", "api"])
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_CLUSTER, with_node=True))
    send = only_send(stream.on_snapshot(snapshot))
    response = discovery_pb2.DeltaDiscoveryResponse.FromString(send.response)
    for resource in response.resources:
        cached = snapshot.resources[TYPE_CLUSTER][resource.name]
        assert resource.version == cached.version and resource.resource == cached.any
    assert response.system_version_info == snapshot.version(TYPE_CLUSTER)


def test_delta_sends_only_what_changed_and_removes_what_went() -> None:
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_ENDPOINT, [WEB, API], with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web", "api"])))
    ack_actions = stream.on_request(delta(TYPE_ENDPOINT, nonce=first.nonce))
    assert ack_actions == [Ack(type_url=TYPE_ENDPOINT, version=first.version, nonce=first.nonce)]
    changed = only_send(stream.on_snapshot(mesh_snapshot(services=["web", "api"], endpoint_port=1)))
    assert changed.resources == (API, WEB)
    stream.on_request(delta(TYPE_ENDPOINT, nonce=changed.nonce))
    removed = only_send(stream.on_snapshot(mesh_snapshot(services=["web"], endpoint_port=1)))
    assert (removed.resources, removed.removed) == ((), (API,))


def test_delta_initial_resource_versions_are_not_resent_and_stale_ones_removed() -> None:
    snapshot = mesh_snapshot(services=["web", "api"])
    held = {WEB: snapshot.resources[TYPE_CLUSTER][WEB].version, "gone": "v0", API: "old"}
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_CLUSTER, initial=held, with_node=True))
    send = only_send(stream.on_snapshot(snapshot))
    assert (send.resources, send.removed) == ((API,), ("gone",))


def test_delta_subscribe_and_unsubscribe() -> None:
    snapshot = mesh_snapshot(services=["web", "api"])
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_ENDPOINT, [WEB], with_node=True))
    first = only_send(stream.on_snapshot(snapshot))
    assert first.resources == (WEB,)
    # One request both acks and subscribes.
    actions = stream.on_request(delta(TYPE_ENDPOINT, [API], [WEB], nonce=first.nonce))
    assert isinstance(actions[0], Ack)
    assert (only_send(actions).resources, only_send(actions).removed) == ((API,), ())
    assert stream.types[TYPE_ENDPOINT].names == {API}


def test_delta_one_unanswered_response_per_type() -> None:
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_CLUSTER, with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web"])))
    assert stream.on_snapshot(mesh_snapshot(services=["web", "api"])) == []
    second = only_send(stream.on_request(delta(TYPE_CLUSTER, nonce=first.nonce)))
    assert second.resources == (API,)


def test_delta_nack_keeps_the_acked_version_and_stale_nonces_only_lose_their_ack() -> None:
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_CLUSTER, with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web"])))
    stream.on_request(delta(TYPE_CLUSTER, nonce=first.nonce))
    bad = only_send(stream.on_snapshot(mesh_snapshot(services=["web", "api"])))
    assert stream.on_request(delta(TYPE_CLUSTER, nonce="9999", error="nope")) == [
        Stale(type_url=TYPE_CLUSTER, nonce="9999")
    ]
    actions = stream.on_request(delta(TYPE_CLUSTER, nonce=bad.nonce, error="bad cluster"))
    assert actions == [
        Nack(type_url=TYPE_CLUSTER, version=bad.version, nonce=bad.nonce, message="bad cluster")
    ]
    assert stream.type_status()[TYPE_CLUSTER] == {
        "version_sent": bad.version,
        "version_acked": first.version,
        "nonce": bad.nonce,
        "state": "NACKED",
        "last_nack": "bad cluster",
    }


def test_delta_a_stale_nonce_still_changes_the_subscription() -> None:
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_ENDPOINT, [WEB], with_node=True))
    first = only_send(stream.on_snapshot(mesh_snapshot(services=["web", "api"])))
    stream.on_request(delta(TYPE_ENDPOINT, nonce=first.nonce))
    actions = stream.on_request(delta(TYPE_ENDPOINT, [API], nonce="old"))
    assert actions[0] == Stale(type_url=TYPE_ENDPOINT, nonce="old")
    assert only_send(actions).resources == (API,)


def test_delta_clusters_are_removed_after_listeners_and_routes_are_acked() -> None:
    before = mesh_snapshot(services=["web", "api"], listeners={8080: "api"})
    stream = DeltaAdsStream()
    stream.on_request(delta(TYPE_CLUSTER, with_node=True))
    cds = only_send(stream.on_snapshot(before))
    stream.on_request(delta(TYPE_CLUSTER, nonce=cds.nonce))
    for type_url, names in ((TYPE_ENDPOINT, [WEB, API]), (TYPE_LISTENER, []), (TYPE_ROUTE, ["http.8080"])):
        send = only_send(stream.on_request(delta(type_url, names)))
        stream.on_request(delta(type_url, nonce=send.nonce))
    actions = stream.on_snapshot(mesh_snapshot(services=["web"], listeners={8080: "web"}))
    # Nothing is removed yet: not the cluster, not its endpoints.
    assert [(s.type_url, s.removed) for s in sends(actions)] == [(TYPE_ROUTE, ())]
    final = sends(stream.on_request(delta(TYPE_ROUTE, nonce=sends(actions)[0].nonce)))
    assert [(s.type_url, s.resources, s.removed) for s in final] == [
        (TYPE_CLUSTER, (), (API,)),
        (TYPE_ENDPOINT, (), (API,)),
    ]


# --- registry -----------------------------------------------------------------------------------


def test_registry_syncz_reports_each_connection_and_type() -> None:
    registry = ConnectionRegistry()
    stream, last = connected_sotw(mesh_snapshot())
    conn = Connection(id=1, stream=stream, peer="ipv4:127.0.0.1:5555", connected_at=1700000000.0)
    registry.on_stream_open(conn)
    idle = Connection(id=2, stream=DeltaAdsStream(), connected_at=1700000001.0)
    registry.register(idle)
    records = registry.syncz()
    assert [r["node_id"] for r in records] == ["", "proxy-1"]
    record = records[1]
    assert {k: v for k, v in record.items() if k != "types"} == {
        "node_id": "proxy-1",
        "namespace": "ns",
        "labels": {"app": "gw"},
        "mode": "sotw",
        "connected_at": 1700000000.0,
    }
    assert record["types"][TYPE_ROUTE]["version_acked"] == last[TYPE_ROUTE].version
    assert records[0]["mode"] == "delta" and records[0]["types"] == {}
    assert registry.find("proxy-1") is conn
    registry.on_stream_close(conn)
    registry.unregister(idle)
    assert registry.syncz() == []
