"""Incremental (Delta) xDS as a sans-IO state machine (after go-control-plane's delta server).

Rules, per type:

- the subscription is a set of names plus a wildcard flag: the first request with no names (or
  ``*``) is a wildcard; ``resource_names_subscribe``/``_unsubscribe`` change it on every request,
  whatever its nonce (dropping a change would desynchronise the diff);
- ``initial_resource_versions`` seeds what the client already has: equal versions are not
  resent, names that no longer exist are sent in ``removed_resources``;
- a response may go out any time, but only one per type is unanswered at once;
- ``system_version_info`` is the version of what the client holds after applying the response.

Responses are bytes assembled from the resources' pre-serialized entries; a full subscription
(the initial wildcard) and a push's changed names are joined once per snapshot, not per stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from meshxds.xds.cache import CachedResource, Selection, Snapshot, delta_response, version_of
from meshxds.xds.stream import Action, Send, Stale, TypeState, XdsStream, intern_names, truncate

__all__ = ["DeltaAdsStream", "DeltaTypeState"]


@dataclass(slots=True, kw_only=True)
class DeltaTypeState(TypeState):
    """Delta additions: the client's resource versions as far as we know."""

    held: dict[str, str] = field(default_factory=dict)
    """name -> version the client holds (from ``initial_resource_versions`` and our responses)."""
    owed: bool = False
    """A wildcard subscription awaits its first response (Envoy's initialisation waits on it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Diff:
    """What a response must carry for the client to match a snapshot."""

    updated: Mapping[str, CachedResource]
    removed: list[str]
    retained: bool
    """Resources gone from the snapshot stay at the client for now (cluster removal gating)."""
    selection: Selection | None = None
    """Set when ``updated`` is exactly this memoized selection (its entries are pre-joined)."""


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
                actions.append(Stale(type_url=type_url, nonce=truncate(request.response_nonce, 64)))
        actions.extend(self._pump())
        return actions

    @staticmethod
    def _subscribe(state: DeltaTypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        if not request.resource_names_subscribe and not request.resource_names_unsubscribe:
            return  # an ACK/NACK: the subscription (and synced_to) stands
        names, wildcard = set(state.names), state.wildcard
        subscribe = request.resource_names_subscribe
        if "*" in subscribe:
            wildcard = True
            names.update(name for name in subscribe if name != "*")
        else:
            names.update(subscribe)  # Envoy's first EDS request names every cluster: stay in C
        for name in request.resource_names_unsubscribe:
            if name == "*":
                wildcard = False
            else:
                names.discard(name)
        if wildcard == state.wildcard and names == state.names:
            return
        state.wildcard, state.names = wildcard, intern_names(frozenset(names))
        state.synced_to = None  # a new scope: what the client holds must be diffed in full
        # An unsubscribed name is forgotten by the client; subscribing again must resend it.
        for name in list(state.held):
            if not state.in_scope(name):
                del state.held[name]

    def _held(self, type_url: str, state: TypeState) -> Iterable[str]:
        assert isinstance(state, DeltaTypeState)
        return state.held

    def _diff(self, type_url: str, state: DeltaTypeState, snapshot: Snapshot) -> _Diff:
        """What to send and what to remove so the client matches the snapshot."""
        synced = state.synced_to
        if synced is snapshot:
            return _Diff(updated={}, removed=[], retained=False)
        retained = self._retained(type_url, snapshot)
        present = snapshot.get(type_url)
        if synced is not None:
            # The client holds synced's in-scope resources: only names changed since can differ.
            changed = self._changed_in_scope(type_url, state, synced, snapshot)
            updated = {
                n: present[n] for n in changed if n in present and state.held.get(n) != present[n].version
            }
            removed = [] if retained else sorted(n for n in changed if n not in present and n in state.held)
            return _Diff(updated=updated, removed=removed, retained=retained)
        if not state.held:
            # A fresh subscription: the whole selection, shared with every stream asking the same.
            selection = snapshot.select(type_url, None if state.wildcard else state.names)
            return _Diff(updated=selection.resources, removed=[], retained=retained, selection=selection)
        candidates = present.keys() if state.wildcard else (n for n in state.names if n in present)
        updated = {n: present[n] for n in candidates if state.held.get(n) != present[n].version}
        removed = [] if retained else sorted(n for n in state.held if n not in present)
        return _Diff(updated=updated, removed=removed, retained=retained)

    def _has_update(self, type_url: str, state: TypeState, snapshot: Snapshot) -> bool:
        assert isinstance(state, DeltaTypeState)
        if state.owed:
            return True
        synced = state.synced_to
        if synced is snapshot:
            return False
        if synced is not None and not self._changed_in_scope(type_url, state, synced, snapshot):
            state.synced_to = snapshot  # nothing in scope moved: the client matches it too
            return False
        diff = self._diff(type_url, state, snapshot)
        return bool(diff.updated or diff.removed)

    def _respond(self, type_url: str, state: TypeState, snapshot: Snapshot) -> Send:
        assert isinstance(state, DeltaTypeState)
        diff = self._diff(type_url, state, snapshot)
        if diff.selection is not None:
            # Only taken when nothing is held: the selection's versions become the held dict.
            names = diff.selection.names
            entries = diff.selection.delta_entries
            state.held = diff.selection.versions
        else:
            names = tuple(sorted(diff.updated))
            entries = snapshot.delta_entries(type_url, names)
            for name in names:
                state.held[name] = diff.updated[name].version
        for name in diff.removed:
            del state.held[name]
        if diff.retained:
            # The client may still hold resources the snapshot lacks: hash what it holds.
            version = version_of(state.held.items())
            state.synced_to = None
        else:
            # It holds exactly the snapshot's in-scope resources, whose version is memoized.
            version = snapshot.select(type_url, None if state.wildcard else state.names).version
            state.synced_to = snapshot
        removed = tuple(diff.removed)
        nonce, response = self._shared_response(
            snapshot,
            ("delta", type_url, names, removed, version),
            lambda nonce: delta_response(
                version=version, entries=entries, type_url=type_url, nonce=nonce, removed=removed
            ),
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
            removed=tuple(diff.removed),
        )
