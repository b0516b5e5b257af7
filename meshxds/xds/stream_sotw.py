"""State-of-the-world xDS as a sans-IO state machine (after go-control-plane's sotw server).

Rules, per type:

- a response goes out only while the client has an outstanding request (its first request, or
  its answer to our previous response), and only when what it would carry differs from the last
  response, or the subscription changed;
- a request whose ``response_nonce`` is not the latest nonce sent for its type is stale and
  ignored entirely;
- CDS and LDS are wildcard by default and always carry the full set (so omissions delete);
  EDS/RDS/SDS carry only the subscribed names that exist, and nothing when none are subscribed
  (Envoy does not answer a response for a type it no longer watches).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from meshxds.xds.cache import TYPE_CLUSTER, TYPE_LISTENER, CachedResource, Snapshot, version_of
from meshxds.xds.status import Action, Send, Stale, TypeState, XdsStream

__all__ = ["AdsStream", "SotwTypeState"]

# Types where an empty resource list means "everything" (legacy wildcard).
_WILDCARD_BY_DEFAULT = frozenset({TYPE_CLUSTER, TYPE_LISTENER})


@dataclass(slots=True, kw_only=True)
class SotwTypeState(TypeState):
    """SotW additions: what the latest response carried, and which subscription it answered."""

    owed: bool = False
    """A fresh request (no nonce) awaits its first response."""
    sent: dict[str, CachedResource] = field(default_factory=dict)
    """The resources of the latest response."""
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
                return [Stale(type_url=type_url, nonce=request.response_nonce)]
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
        state.wildcard = "*" in names or (not names and type_url in _WILDCARD_BY_DEFAULT)
        state.names = names - {"*"}
        if not state.wildcard and not state.names:
            # The client dropped every watch of the type: it forgets what it had and, should
            # it subscribe again, needs a fresh response.
            state.sent = {}
            state.answered_names = state.names
            state.owed = False
        actions.extend(self._pump())
        return actions

    def _held(self, type_url: str, state: TypeState) -> Iterable[str]:
        assert isinstance(state, SotwTypeState)
        return state.sent

    def _desired(self, type_url: str, state: SotwTypeState, snapshot: Snapshot) -> dict[str, CachedResource]:
        present = snapshot.get(type_url)
        if state.wildcard:
            desired = dict(present)
        else:
            desired = {name: present[name] for name in state.names if name in present}
        if self._retained(type_url, snapshot):
            for name, resource in state.sent.items():
                if name not in present and state.in_scope(name):
                    desired[name] = resource
        return desired

    def _has_update(self, type_url: str, state: TypeState, snapshot: Snapshot) -> bool:
        assert isinstance(state, SotwTypeState)
        if not state.wildcard and not state.names:
            return False
        if state.owed or state.answered_names != state.names or state.answered_wildcard != state.wildcard:
            return True
        desired = self._desired(type_url, state, snapshot)
        return desired.keys() != state.sent.keys() or any(
            state.sent[name] is not resource and state.sent[name].version != resource.version
            for name, resource in desired.items()
        )

    def _respond(self, type_url: str, state: TypeState, snapshot: Snapshot) -> Send:
        assert isinstance(state, SotwTypeState)
        desired = self._desired(type_url, state, snapshot)
        names = tuple(sorted(desired))
        version = version_of((name, desired[name].version) for name in names)
        nonce = self._next_nonce()
        response = discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=[desired[name].any for name in names],
            type_url=type_url,
            nonce=nonce,
        )
        state.sent = desired
        state.answered_names = state.names
        state.answered_wildcard = state.wildcard
        state.owed = False
        state.inflight = True
        state.version_sent = version
        state.nonce = nonce
        return Send(type_url=type_url, response=response, version=version, nonce=nonce, resources=names)
