"""Hypothesis drives the SotW and Delta streams with an Envoy-like client and random snapshots.

Invariants, after every step:
- a stale nonce is never answered: the request yields only ``Stale`` and changes no status;
- the acked version is one we sent (or none), and a NACK keeps it;
- SotW sends a type only while the client has a request outstanding; Delta keeps at most one
  unanswered response per type;
- a batch goes out in ADS order, nonces increase, and a cluster disappears only once every
  endpoint, listener and route response has been acked;
- once the client has acked everything (and never NACKed), it holds exactly the snapshot (a
  SotW client merges EDS/RDS responses into what it holds, as Envoy does: they may carry only
  what changed);
- the same snapshot object again sends nothing, and a type's ``synced_to`` (the short cut that
  diffs through ``Snapshot.changed_since``) always names a snapshot whose in-scope resources are
  exactly what the stream sent.

Snapshots are built either from scratch (new objects, equal versions) or from the previous one
(unchanged resources are the same objects), as the pipeline does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from xds_protos import cluster_name, mesh_snapshot, node

from meshxds.xds.cache import PUSH_ORDER, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, Snapshot
from meshxds.xds.stream import Ack, Action, Nack, Send, Stale, XdsStream
from meshxds.xds.stream_delta import DeltaAdsStream, DeltaTypeState
from meshxds.xds.stream_sotw import AdsStream, SotwTypeState

SERVICES = ("a", "b", "c")
TYPES = (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE)
WILDCARD = frozenset({TYPE_CLUSTER, TYPE_LISTENER})
GATE = (TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE)
NAME_POOL = {
    TYPE_ENDPOINT: tuple(cluster_name(s) for s in SERVICES),
    TYPE_ROUTE: ("http.8080", "http.9090"),
}


@st.composite
def snapshots(draw: st.DrawFn, previous: Snapshot | None = None) -> Snapshot:
    services = draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True))
    ports = draw(st.lists(st.sampled_from((8080, 9090)), max_size=2, unique=True))
    listeners = {port: draw(st.sampled_from(services)) for port in ports}
    return mesh_snapshot(
        services=sorted(services),
        listeners=listeners,
        endpoint_port=draw(st.sampled_from((1, 2))),
        route_prefix=draw(st.sampled_from(("/", "/v2"))),
        previous=previous,
    )


@dataclass
class ClientType:
    """What the simulated Envoy knows about one type."""

    requested: bool = False
    names: tuple[str, ...] = ()
    unanswered: Send | None = None
    latest: Send | None = None
    nonces: list[str] = field(default_factory=list)
    sent_versions: set[str] = field(default_factory=set)
    acked: str = ""
    nacked: bool = False
    view: dict[str, str] = field(default_factory=dict)
    """name -> resource version the client holds (what it acked)."""


class StreamMachine(RuleBasedStateMachine):
    delta = False

    def __init__(self) -> None:
        super().__init__()
        self.stream: XdsStream = DeltaAdsStream() if self.delta else AdsStream()
        self.client = {t: ClientType() for t in TYPES}
        self.snapshot: Snapshot | None = None
        self.last_nonce = 0
        self.ever_nacked = False
        self.clusters_now: set[str] = set()
        """Clusters the client holds once it has processed every response sent so far."""
        self.endpoints_now: set[str] = set()
        """SotW: the load assignments the client holds (responses merge into what it has)."""

    # --- requests ---------------------------------------------------------------------------

    def request(
        self,
        type_url: str,
        *,
        nonce: str = "",
        error: str | None = None,
        names: tuple[str, ...] | None = None,
    ) -> list[Action]:
        state = self.client[type_url]
        first = not state.requested
        new_names = state.names if names is None else names
        if self.delta:
            request: discovery_pb2.DeltaDiscoveryRequest | discovery_pb2.DiscoveryRequest = (
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url,
                    response_nonce=nonce,
                    resource_names_subscribe=sorted(
                        set(new_names) - set(state.names) if not first else new_names
                    ),
                    resource_names_unsubscribe=sorted(set(state.names) - set(new_names)),
                )
            )
        else:
            request = discovery_pb2.DiscoveryRequest(
                type_url=type_url, response_nonce=nonce, resource_names=new_names
            )
        if first:
            request.node.CopyFrom(node("proxy"))
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        state.requested = True
        state.names = new_names
        # A resource the client stops subscribing to is forgotten (both modes).
        for name in list(state.view):
            if type_url not in WILDCARD and name not in new_names:
                del state.view[name]
        return self.stream.on_request(request)

    def deliver(self, actions: list[Action], *, outstanding_before: dict[str, bool]) -> None:
        """Check every send against the client model, then record it."""
        order = [PUSH_ORDER.index(a.type_url) for a in actions if isinstance(a, Send)]
        assert order == sorted(order), actions
        for action in actions:
            if not isinstance(action, Send):
                continue
            state = self.client[action.type_url]
            if self.delta:
                assert state.unanswered is None, "a second unanswered Delta response"
            else:
                assert outstanding_before[action.type_url], "SotW response without an outstanding request"
                outstanding_before[action.type_url] = False
            assert int(action.nonce) > self.last_nonce
            self.last_nonce = int(action.nonce)
            if action.type_url == TYPE_CLUSTER:
                self.check_removal_is_last(action)
                self.track_clusters(action)
            if action.type_url == TYPE_ENDPOINT:
                self.check_endpoints_outlive_clusters(action)
            state.unanswered = state.latest = action
            state.nonces.append(action.nonce)
            state.sent_versions.add(action.version)

    def check_removal_is_last(self, send: Send) -> None:
        # What the client holds once it processed every earlier response (Envoy applies even a
        # NACKed CDS update but for the bad clusters, so a NACK does not restore the older list).
        held = self.clusters_now
        removing = set(send.removed) if self.delta else held - set(send.resources)
        if not removing & held:
            return
        for type_url in GATE:
            gate = self.client[type_url]
            if gate.requested:
                assert gate.unanswered is None, f"cluster removed while {type_url} is unanswered"
                assert not gate.nacked, f"cluster removed while {type_url} is NACKED"

    def track_clusters(self, send: Send) -> None:
        if self.delta:
            self.clusters_now = (self.clusters_now | set(send.resources)) - set(send.removed)
        else:
            self.clusters_now = set(send.resources)

    def check_endpoints_outlive_clusters(self, send: Send) -> None:
        # Like clusters, what the client holds is what it was last sent, NACKed or not.
        if self.delta:
            dropped = set(send.removed)
        else:
            # SotW EDS: what a response leaves out, the client keeps (Envoy drops a load
            # assignment only when it stops subscribing to it), so a response drops nothing.
            subscribed = set(self.client[TYPE_ENDPOINT].names)
            self.endpoints_now = (self.endpoints_now & subscribed) | set(send.resources)
            dropped = set()
        assert not dropped & self.clusters_now, f"endpoints of held clusters dropped: {dropped}"

    def outstanding(self) -> dict[str, bool]:
        return {t: self.client[t].requested and self.client[t].unanswered is None for t in TYPES}

    def apply_answer(self, type_url: str, send: Send, *, nack: bool) -> None:
        state = self.client[type_url]
        state.unanswered = None
        if nack:
            state.nacked = True
            self.ever_nacked = True
            return
        state.nacked = False
        state.acked = send.version
        if self.delta:
            response = discovery_pb2.DeltaDiscoveryResponse.FromString(send.response)
            assert (response.type_url, response.nonce, response.system_version_info) == (
                type_url,
                send.nonce,
                send.version,
            )
            assert tuple(r.name for r in response.resources) == send.resources
            assert tuple(response.removed_resources) == send.removed
            for resource in response.resources:
                state.view[resource.name] = resource.version
            for name in response.removed_resources:
                state.view.pop(name, None)
        else:
            response = discovery_pb2.DiscoveryResponse.FromString(send.response)
            assert (response.type_url, response.nonce, response.version_info) == (
                type_url,
                send.nonce,
                send.version,
            )
            carried = {
                name: _version(any_) for name, any_ in zip(send.resources, response.resources, strict=True)
            }
            if type_url in WILDCARD:
                state.view = carried  # CDS and LDS: a response is the whole set
            else:
                # EDS, RDS, SDS: the client keeps what a response leaves out.
                state.view = {**state.view, **carried}

    # --- rules ------------------------------------------------------------------------------

    @rule(snapshot=snapshots())
    def new_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.deliver(self.stream.on_snapshot(snapshot), outstanding_before=self.outstanding())

    @rule(data=st.data())
    def new_snapshot_from_the_previous(self, data: st.DataObject) -> None:
        self.new_snapshot(data.draw(snapshots(previous=self.snapshot)))

    @rule()
    def same_snapshot_again(self) -> None:
        if self.snapshot is not None:
            assert self.stream.on_snapshot(self.snapshot) == []

    @rule(type_url=st.sampled_from(TYPES), data=st.data())
    def first_request(self, type_url: str, data: st.DataObject) -> None:
        if self.client[type_url].requested:
            return
        names: tuple[str, ...] = ()
        if type_url not in WILDCARD:
            names = tuple(data.draw(st.lists(st.sampled_from(NAME_POOL[type_url]), min_size=1, unique=True)))
        before = self.outstanding()
        before[type_url] = True
        self.deliver(self.request(type_url, names=names), outstanding_before=before)

    @rule(type_url=st.sampled_from(TYPES), nack=st.booleans(), data=st.data())
    def answer(self, type_url: str, nack: bool, data: st.DataObject) -> None:
        state = self.client[type_url]
        send = state.unanswered
        if send is None:
            return
        names = None
        if type_url not in WILDCARD and data.draw(st.booleans()):
            names = tuple(data.draw(st.lists(st.sampled_from(NAME_POOL[type_url]), unique=True)))
        acked_before = self.stream.types[type_url].version_acked
        # The client applies the response before it sends the request answering it.
        self.apply_answer(type_url, send, nack=nack)
        actions = self.request(type_url, nonce=send.nonce, error="rejected" if nack else None, names=names)
        expected: Action = (
            Nack(type_url=type_url, version=send.version, nonce=send.nonce, message="rejected")
            if nack
            else Ack(type_url=type_url, version=send.version, nonce=send.nonce)
        )
        assert actions[0] == expected
        if nack:
            assert self.stream.types[type_url].version_acked == acked_before
        before = self.outstanding()
        before[type_url] = True
        self.deliver(actions[1:], outstanding_before=before)

    @rule(type_url=st.sampled_from(TYPES), data=st.data())
    def stale_request(self, type_url: str, data: st.DataObject) -> None:
        state = self.client[type_url]
        if not state.requested:
            return
        old = [n for n in state.nonces if state.latest is None or n != state.latest.nonce]
        nonce = data.draw(st.sampled_from([*old, "bogus"]))
        before = self.stream.type_status()
        if self.delta:
            # A stale Delta request loses its ACK part only; keep the subscription as is here.
            actions = self.request(type_url, nonce=nonce)
            assert actions[0] == Stale(type_url=type_url, nonce=nonce)
            self.deliver(actions[1:], outstanding_before=self.outstanding())
        else:
            actions = self.request(type_url, nonce=nonce, error=data.draw(st.sampled_from([None, "late"])))
            assert actions == [Stale(type_url=type_url, nonce=nonce)]
        assert self.stream.type_status() == before

    @rule()
    def drain(self) -> None:
        """Ack everything until the server has nothing left to say, then compare views."""
        for _ in range(20):
            pending = [t for t in TYPES if self.client[t].unanswered is not None]
            if not pending:
                break
            for type_url in pending:
                send = self.client[type_url].unanswered
                assert send is not None
                self.apply_answer(type_url, send, nack=False)
                actions = self.request(type_url, nonce=send.nonce)
                assert isinstance(actions[0], Ack)
                before = self.outstanding()
                before[type_url] = True
                self.deliver(actions[1:], outstanding_before=before)
        else:
            raise AssertionError("the server kept pushing")
        if self.snapshot is None or self.ever_nacked:
            return
        for type_url in TYPES:
            state = self.client[type_url]
            if not state.requested or (type_url not in WILDCARD and not state.names):
                continue
            present = self.snapshot.get(type_url)
            scope = present.keys() if type_url in WILDCARD else [n for n in state.names if n in present]
            view = state.view
            if not self.delta and type_url not in WILDCARD:
                # A SotW client keeps a subscribed resource the snapshot no longer has (Envoy
                # does too, until it unsubscribes); what the snapshot has must match exactly.
                view = {n: v for n, v in view.items() if n in present}
            assert view == {n: present[n].version for n in scope}, type_url

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def synced_to_is_what_was_sent(self) -> None:
        for type_url, status in self.stream.types.items():
            synced = status.synced_to
            if synced is None:
                continue
            selection = synced.select(type_url, None if status.wildcard else status.names)
            if isinstance(status, DeltaTypeState):
                assert status.held == selection.versions, type_url
            else:
                assert isinstance(status, SotwTypeState)
                assert {n: r.version for n, r in status.sent.items()} == selection.versions, type_url

    @invariant()
    def acked_is_a_version_we_sent(self) -> None:
        for type_url, status in self.stream.types.items():
            client = self.client[type_url]
            assert status.version_acked in client.sent_versions | {""}
            assert status.version_acked == client.acked
            assert status.nacked == client.nacked
            if client.latest is not None:
                assert status.version_sent == client.latest.version
                assert status.nonce == client.latest.nonce


def _version(packed: any_pb2.Any) -> str:
    # The cache's contract: a resource version is the (16-char) SHA-256 of its bytes.
    return hashlib.sha256(packed.value).hexdigest()[:16]


class DeltaStreamMachine(StreamMachine):
    delta = True


_SETTINGS = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestSotwStream = StreamMachine.TestCase
TestSotwStream.settings = _SETTINGS
TestDeltaStream = DeltaStreamMachine.TestCase
TestDeltaStream.settings = _SETTINGS
