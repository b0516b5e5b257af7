"""Incremental (Delta) xDS as a sans-IO state machine (after go-control-plane's delta server).

Rules, per type:

- the subscription is a set of names plus a wildcard flag: the first request with no names (or
  ``*``) is a wildcard; ``resource_names_subscribe``/``_unsubscribe`` change it on every request,
  whatever its nonce (dropping a change would desynchronise the diff);
- ``initial_resource_versions`` seeds what the client already has: equal versions are not
  resent, names that no longer exist are sent in ``removed_resources``;
- a response may go out any time, but only one per type is unanswered at once;
- ``system_version_info`` is the version of what the client holds after applying the response.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from meshxds.xds.cache import CachedResource, Snapshot, version_of
from meshxds.xds.status import Action, Send, Stale, TypeState, XdsStream

__all__ = ["DeltaAdsStream", "DeltaTypeState"]


@dataclass(slots=True, kw_only=True)
class DeltaTypeState(TypeState):
    """Delta additions: the client's resource versions as far as we know."""

    held: dict[str, str] = field(default_factory=dict)
    """name -> version the client holds (from ``initial_resource_versions`` and our responses)."""
    owed: bool = False
    """A wildcard subscription awaits its first response (Envoy's initialisation waits on it)."""


class DeltaAdsStream(XdsStream):
    """One Delta stream: ADS (``type_url=None``) or a per-type service."""

    mode = "delta"

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[Action]:
        """Handle one ``DeltaDiscoveryRequest``; raises ``XdsProtocolError`` on a protocol violation."""
        type_url = self._begin_request(
            type_url=request.type_url, node=request.node, has_node=request.HasField("node")
        )
        state = self._types.get(type_url)
        if state is None:
            state = self._types[type_url] = DeltaTypeState(
                subscribed=True,
                wildcard=not request.resource_names_subscribe,
                held=dict(request.initial_resource_versions),
            )
            state.owed = state.wildcard
        assert isinstance(state, DeltaTypeState)
        self._subscribe(state, request)
        actions: list[Action] = []
        if request.response_nonce:
            if state.inflight and request.response_nonce == state.nonce:
                error = request.error_detail.message if request.HasField("error_detail") else None
                actions.append(state.answer(type_url=type_url, error=error))
            elif request.response_nonce != state.nonce:
                actions.append(Stale(type_url=type_url, nonce=request.response_nonce))
        actions.extend(self._pump())
        return actions

    @staticmethod
    def _subscribe(state: DeltaTypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        names = set(state.names)
        for name in request.resource_names_subscribe:
            if name == "*":
                state.wildcard = True
            else:
                names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                names.discard(name)
        state.names = frozenset(names)
        # An unsubscribed name is forgotten by the client; subscribing again must resend it.
        for name in list(state.held):
            if not state.in_scope(name):
                del state.held[name]

    def _held(self, type_url: str, state: TypeState) -> Iterable[str]:
        assert isinstance(state, DeltaTypeState)
        return state.held

    def _diff(
        self, type_url: str, state: DeltaTypeState, snapshot: Snapshot
    ) -> tuple[dict[str, CachedResource], list[str]]:
        """What to send and what to remove so the client matches the snapshot."""
        present = snapshot.get(type_url)
        candidates = present.keys() if state.wildcard else (n for n in state.names if n in present)
        updated = {n: present[n] for n in candidates if state.held.get(n) != present[n].version}
        if self._retained(type_url, snapshot):
            return updated, []
        return updated, sorted(n for n in state.held if n not in present)

    def _has_update(self, type_url: str, state: TypeState, snapshot: Snapshot) -> bool:
        assert isinstance(state, DeltaTypeState)
        if state.owed:
            return True
        updated, removed = self._diff(type_url, state, snapshot)
        return bool(updated or removed)

    def _respond(self, type_url: str, state: TypeState, snapshot: Snapshot) -> Send:
        assert isinstance(state, DeltaTypeState)
        updated, removed = self._diff(type_url, state, snapshot)
        names = tuple(sorted(updated))
        for name in names:
            state.held[name] = updated[name].version
        for name in removed:
            del state.held[name]
        version = version_of(state.held.items())
        nonce = self._next_nonce()
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            resources=[
                discovery_pb2.Resource(name=name, version=updated[name].version, resource=updated[name].any)
                for name in names
            ],
            type_url=type_url,
            removed_resources=removed,
            nonce=nonce,
        )
        state.owed = False
        state.inflight = True
        state.version_sent = version
        state.nonce = nonce
        return Send(
            type_url=type_url,
            response=response,
            version=version,
            nonce=nonce,
            resources=names,
            removed=tuple(removed),
        )
