"""State-of-the-world xDS as a sans-IO state machine (after go-control-plane's sotw server).

Rules, per type:

- a response goes out only while the client has an outstanding request (its first request, or
  its answer to our previous response), and only when what it would carry differs from the last
  response, or the subscription changed;
- a request whose ``response_nonce`` is not the latest nonce sent for its type is stale and
  ignored entirely;
- CDS and LDS are wildcard by default and always carry the full set (so omissions delete);
  EDS/RDS/SDS carry only the subscribed names that exist, and nothing when none are subscribed
  (Envoy does not answer a response for a type it no longer watches); once a client holds a
  snapshot's resources, an EDS/RDS/SDS update carries only the names that changed (the client
  keeps what a response of these types leaves out), its version that of the whole set.

Responses are bytes: a subscription's response body is memoized on the snapshot
(``Snapshot.select``), so streams with equal subscriptions add only their nonce.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from meshxds.xds.cache import (
    TYPE_CLUSTER,
    TYPE_LISTENER,
    CachedResource,
    Selection,
    Snapshot,
    sotw_response,
)
from meshxds.xds.stream import Action, Send, Stale, TypeState, XdsStream, intern_names, truncate

__all__ = ["AdsStream", "SotwTypeState"]

# Types where an empty resource list means "everything" (legacy wildcard).
_WILDCARD_BY_DEFAULT = frozenset({TYPE_CLUSTER, TYPE_LISTENER})


@dataclass(slots=True, kw_only=True)
class SotwTypeState(TypeState):
    """SotW additions: what the latest response carried, and which subscription it answered."""

    owed: bool = False
    """A fresh request (no nonce) awaits its first response."""
    sent: Mapping[str, CachedResource] = field(default_factory=dict)
    """The resources of the latest response (read-only: often shared with a ``Selection``)."""
    answered_names: frozenset[str] | None = None
    """``names`` when the latest response was built (``None``: never responded)."""
    answered_wildcard: bool = False


class AdsStream(XdsStream):
    """One SotW stream: ADS (``type_url=None``) or a per-type service."""

    mode = "sotw"

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[Action]:
        """Handle one ``DiscoveryRequest``; raises ``XdsProtocolError`` on a protocol violation."""
        type_url = self._begin_request(
            type_url=request.type_url, node=request.node, has_node=request.HasField("node")
        )
        state = self._types.get(type_url)
        if state is None:
            state = self._types[type_url] = SotwTypeState()
        assert isinstance(state, SotwTypeState)
        actions: list[Action] = []
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                # Answers an older response: the client will answer the latest one too.
                return [Stale(type_url=type_url, nonce=truncate(request.response_nonce, 64))]
            if state.inflight:
                error = request.error_detail.message if request.HasField("error_detail") else None
                actions.append(state.answer(type_url=type_url, error=error))
            # else: a new subscription after an answered response, carrying that nonce again.
        else:
            # A fresh request: the client waits for an answer whatever it already has.
            state.inflight = False
            state.owed = True
        state.subscribed = True
        names = frozenset(request.resource_names)
        wildcard = "*" in names or (not names and type_url in _WILDCARD_BY_DEFAULT)
        names = names - {"*"}
        if wildcard != state.wildcard or names != state.names:
            state.wildcard, state.names = wildcard, intern_names(names)
            state.synced_to = None
        # else keep the old names object: its hash is cached and identity short-cuts comparisons.
        if not state.wildcard and not state.names:
            # The client dropped every watch of the type: it forgets what it had and, should
            # it subscribe again, needs a fresh response.
            state.sent = {}
            state.synced_to = None
            state.answered_names = state.names
            state.owed = False
        actions.extend(self._pump())
        return actions

    def _held(self, type_url: str, state: TypeState) -> Iterable[str]:
        assert isinstance(state, SotwTypeState)
        return state.sent

    def _desired(self, type_url: str, state: SotwTypeState, snapshot: Snapshot) -> tuple[Selection, bool]:
        """The subscribed resources of ``snapshot`` plus sent ones that must be retained, and
        whether there were none of the latter (the response then matches the snapshot exactly).
        """
        selection = snapshot.select(type_url, None if state.wildcard else state.names)
        if not self._retained(type_url, snapshot):
            return selection, True
        present = snapshot.get(type_url)
        if state.synced_to is not None:
            # Only names changed since synced_to can have left the snapshot.
            candidates: Iterable[str] = self._changed_in_scope(type_url, state, state.synced_to, snapshot)
        else:
            candidates = (name for name in state.sent if state.in_scope(name))
        kept = {name: state.sent[name] for name in candidates if name not in present and name in state.sent}
        if not kept:
            return selection, True
        return Selection.of(type_url, {**selection.resources, **kept}), False

    def _has_update(self, type_url: str, state: TypeState, snapshot: Snapshot) -> bool:
        assert isinstance(state, SotwTypeState)
        if not state.wildcard and not state.names:
            return False
        if (
            state.owed
            or (state.answered_names is not state.names and state.answered_names != state.names)
            or state.answered_wildcard != state.wildcard
        ):
            return True
        synced = state.synced_to
        if synced is snapshot:
            return False
        if synced is not None:
            changed = self._changed_in_scope(type_url, state, synced, snapshot)
            if not changed:
                state.synced_to = snapshot  # nothing in scope moved: the client matches it too
                return False
            if not self._retained(type_url, snapshot):
                return True
            # Resources that left are retained, so only additions and new versions count.
            present = snapshot.get(type_url)
            return any(name in present for name in changed)
        desired = self._desired(type_url, state, snapshot)[0].resources
        return desired.keys() != state.sent.keys() or any(
            state.sent[name] is not resource and state.sent[name].version != resource.version
            for name, resource in desired.items()
        )

    def _respond(self, type_url: str, state: TypeState, snapshot: Snapshot) -> Send:
        assert isinstance(state, SotwTypeState)
        desired, exact = self._desired(type_url, state, snapshot)
        carried = desired.names
        body = desired.sotw_body
        synced = state.synced_to
        if (
            exact
            and synced is not None
            and type_url not in _WILDCARD_BY_DEFAULT
            and not state.wildcard
            and not state.owed
            and (state.answered_names is state.names or state.answered_names == state.names)
        ):
            # The client holds ``synced``'s resources of its subscription: send what changed
            # (when only removals changed, the whole set says more than an empty response).
            present = desired.resources
            changed = tuple(sorted(n for n in snapshot.changed_since(synced, type_url) if n in present))
            if changed:
                carried = changed
                body = snapshot.sotw_partial_body(type_url, carried, desired.version)
        nonce, response = self._shared_response(
            snapshot,
            ("sotw", type_url, carried, desired.version, body is desired.sotw_body),
            lambda nonce: sotw_response(body=body, nonce=nonce),
        )
        state.sent = desired.resources
        state.synced_to = snapshot if exact else None
        state.answered_names = state.names
        state.answered_wildcard = state.wildcard
        state.owed = False
        state.inflight = True
        state.version_sent = desired.version
        state.nonce = nonce
        return Send(
            type_url=type_url,
            response=response,
            version=desired.version,
            nonce=nonce,
            resources=carried,
        )
