"""Per-stream xDS bookkeeping as data: what SotW and Delta streams share.

The stream state machines (``stream_sotw.AdsStream``, ``stream_delta.DeltaAdsStream``) are
sans-IO, after h2: ``on_request(req)`` and ``on_snapshot(snapshot)`` return a list of actions
(``Send`` a response, or report an ``Ack``/``Nack``/``Stale`` request) and the server only moves
messages. This module holds what both modes share:

- the actions and ``XdsProtocolError``;
- ``node_identity``, which refuses a node whose metadata is not what Envoy's bootstrap documents;
- ``TypeState``, what one stream knows about one type (sent, acked, nonce, last NACK);
- ``truncate`` and ``LogBudget``, which bound what a client's text costs in logs and status;
- ``XdsStream``, the base with node caching, nonces and the push loop that keeps ADS order
  (CDS -> EDS -> LDS -> RDS -> SDS) and removes clusters last.

Which streams are open, and what the admin endpoint reports of them, is ``xds/registry.py``.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from meshxds.identity import ProxyIdentity
from meshxds.xds.cache import PUSH_ORDER, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, Snapshot

__all__ = [
    "Ack",
    "Action",
    "LogBudget",
    "Mode",
    "Nack",
    "Send",
    "Stale",
    "SyncState",
    "TypeState",
    "XdsProtocolError",
    "XdsStream",
    "intern_names",
    "node_identity",
    "truncate",
]

log = logging.getLogger(__name__)

Mode = Literal["sotw", "delta"]
SyncState = Literal["SYNCED", "STALE", "NACKED"]

# Types whose updates must be acknowledged before clusters may disappear: an endpoint set, a
# listener or a route still pointing at a removed cluster would see it vanish under traffic.
_REMOVAL_GATE: tuple[str, ...] = (TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE)


NACK_MESSAGE_LIMIT: Final = 4096
"""Characters of a NACK message kept for logs and status: Envoy's run to a few hundred, but a
client may send megabytes, which would otherwise be logged and held for every NACK."""
NACK_LOG_BURST: Final = 5
"""NACK log lines a stream may write per type at once..."""
NACK_LOG_INTERVAL: Final = 10.0
"""...and then one more per this many seconds; the rest are counted, not logged."""
TYPE_URL_LIMIT: Final = 256
"""Characters of a ``type_url`` (Envoy's are under 100)."""
TYPES_PER_STREAM: Final = 32
"""Distinct types one stream may ask for (Envoy asks for fewer than 10, some we do not serve)."""
NODE_ID_LIMIT: Final = 1024
"""Characters of ``node.id``: it is in every log line of its stream."""


def truncate(text: str, limit: int = NACK_MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying that it was cut and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [truncated, {len(text)} characters in all]"


@dataclass(slots=True, kw_only=True)
class LogBudget:
    """A token bucket for log lines: ``burst`` at once, then one per ``interval`` seconds."""

    burst: int = NACK_LOG_BURST
    interval: float = NACK_LOG_INTERVAL
    tokens: float = field(init=False)
    """Lines that may go out now; starts full."""
    updated: float | None = None
    """``time.monotonic()`` of the last ``take``."""
    suppressed: int = 0
    """Lines refused since the last one allowed."""

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float) -> int | None:
        """Spend a line: ``None`` if it must be suppressed, else how many were suppressed before it."""
        if self.updated is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) / self.interval)
        self.updated = now
        if self.tokens < 1.0:
            self.suppressed += 1
            return None
        self.tokens -= 1.0
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


_NONCES = itertools.count(1)
"""Response nonces, process-wide: increasing within each stream, and equal responses to several
streams may carry the same one."""

_INTERNED: dict[frozenset[str], frozenset[str]] = {}
_INTERN_LIMIT = 4096


def intern_names(names: frozenset[str]) -> frozenset[str]:
    """One shared object per distinct subscription: the snapshot memoizes responses by
    subscription, and a dict lookup whose key *is* the stored key skips comparing two sets of
    a thousand names (streams of one identity subscribe to the same names)."""
    found = _INTERNED.get(names)
    if found is None:
        if len(_INTERNED) >= _INTERN_LIMIT:
            _INTERNED.clear()
        found = _INTERNED[names] = names
    return found


class XdsProtocolError(Exception):
    """The client broke the xDS protocol (e.g. an ADS request without ``type_url``); end the stream."""

    def __init__(self, message: str) -> None:
        self.message = message
        """What was wrong, for the gRPC status details."""
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Write ``response`` on the stream."""

    type_url: str
    """The type of the response."""
    response: bytes = field(repr=False)
    """A serialized ``DiscoveryResponse`` (SotW) or ``DeltaDiscoveryResponse`` (Delta), written as is."""
    version: str
    """``version_info`` (SotW) or ``system_version_info`` (Delta)."""
    nonce: str
    """The response nonce, unique within the stream."""
    resources: tuple[str, ...]
    """Names of the resources carried."""
    removed: tuple[str, ...] = ()
    """Delta only: names in ``removed_resources``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The client accepted the response ``nonce`` of ``version``."""

    type_url: str
    version: str
    nonce: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack:
    """The client rejected the response ``nonce`` of ``version``; ``message`` is its error."""

    type_url: str
    version: str
    """The rejected version; the acked version stays the last good one."""
    nonce: str
    message: str
    """``error_detail.message`` as the client sent it, cut to ``NACK_MESSAGE_LIMIT`` characters."""
    log: bool = True
    """Worth a log line: NACK lines are rate-limited per stream and type (``LogBudget``)."""
    suppressed: int = 0
    """NACKs of this stream and type not logged since the previous line (when ``log``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stale:
    """A request answered a response that was not the latest for its type; its ACK part is ignored."""

    type_url: str
    nonce: str
    """The out-of-date ``response_nonce``."""


Action = Send | Ack | Nack | Stale


@dataclass(slots=True, kw_only=True)
class TypeState:
    """What one stream knows about one type. Mutated only by its stream."""

    subscribed: bool = False
    """The client asked for this type on this stream."""
    wildcard: bool = False
    """Everything of the type (LDS/CDS with no names, or ``*``), plus ``names``."""
    names: frozenset[str] = frozenset()
    """Explicitly subscribed resource names."""
    inflight: bool = False
    """A response was sent and the client has not answered it yet (no ACK/NACK)."""
    version_sent: str = ""
    version_acked: str = ""
    nonce: str = ""
    """Nonce of the latest response sent for this type."""
    nacked: bool = False
    """The latest answered response was NACKed and no later version has been acked since."""
    last_nack: str | None = None
    """The client's error message of the latest NACK (``truncate``d)."""
    nack_log: LogBudget | None = None
    """Created on the first NACK: most streams never send one."""
    synced_to: Snapshot | None = None
    """A snapshot whose in-scope resources are exactly what the client was sent (``None``: unknown).

    A new snapshot is then diffed through ``Snapshot.changed_since(synced_to)``, shared by every
    stream, instead of through every resource. Cleared whenever the subscription changes.
    """

    @property
    def state(self) -> SyncState:
        if self.nacked:
            return "NACKED"
        return "SYNCED" if self.version_acked == self.version_sent else "STALE"

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def answer(self, *, type_url: str, error: str | None) -> Ack | Nack:
        """Record the client's answer to the inflight response."""
        self.inflight = False
        if error is None:
            self.version_acked = self.version_sent
            self.nacked = False
            return Ack(type_url=type_url, version=self.version_sent, nonce=self.nonce)
        self.nacked = True
        self.last_nack = message = truncate(error)
        if self.nack_log is None:
            self.nack_log = LogBudget()
        suppressed = self.nack_log.take(time.monotonic())
        return Nack(
            type_url=type_url,
            version=self.version_sent,
            nonce=self.nonce,
            message=message,
            log=suppressed is not None,
            suppressed=suppressed or 0,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "version_sent": self.version_sent,
            "version_acked": self.version_acked,
            "nonce": self.nonce,
            "state": self.state,
            "last_nack": self.last_nack,
        }


# Kubernetes' syntax for namespaces and labels (apimachinery's validation): what a selector can match.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_PART = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def node_identity(node: base_pb2.Node) -> ProxyIdentity:
    """``ProxyIdentity`` from ``node.metadata.namespace`` and the ``node.metadata.labels`` map.

    Raises ``XdsProtocolError`` unless ``node.id`` is set and the namespace (if any) and labels
    are strings as Kubernetes spells them: guessing would serve a malformed node the sidecar
    config, and stringifying a YAML number would turn ``version: 1.10`` into ``1.1``.
    """
    if not node.id:
        raise XdsProtocolError("node.id is empty")
    if len(node.id) > NODE_ID_LIMIT:
        raise XdsProtocolError(f"node.id has {len(node.id)} characters, more than {NODE_ID_LIMIT}")
    fields = node.metadata.fields
    namespace: str | None = None
    if "namespace" in fields:
        value = fields["namespace"]
        if value.WhichOneof("kind") != "string_value":
            raise XdsProtocolError(f"node.metadata.namespace must be a string, not {_kind(value)}")
        namespace = str(value.string_value)
        if namespace and not _DNS_LABEL.fullmatch(namespace):
            raise XdsProtocolError(
                f"node.metadata.namespace {_quote(namespace)} is not a Kubernetes namespace name"
            )
    labels: dict[str, str] = {}
    if "labels" in fields:
        value = fields["labels"]
        if value.WhichOneof("kind") != "struct_value":
            raise XdsProtocolError(f"node.metadata.labels must be a map of strings, not {_kind(value)}")
        for key, item in value.struct_value.fields.items():
            where = f"node.metadata.labels[{_quote(key)}]"
            if not _label_key_ok(key):
                raise XdsProtocolError(f"{where}: not a Kubernetes label key")
            if item.WhichOneof("kind") != "string_value":
                raise XdsProtocolError(f"{where} must be a string (quote it), not {_kind(item)}")
            text = str(item.string_value)
            if not _LABEL_PART.fullmatch(text):
                raise XdsProtocolError(f"{where}: {_quote(text)} is not a Kubernetes label value")
            labels[key] = text
    return ProxyIdentity.of(namespace=namespace, labels=labels)


def _label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return bool(name) and _LABEL_PART.fullmatch(name) is not None


def _kind(value: struct_pb2.Value) -> str:
    kind = value.WhichOneof("kind")
    names = {"number_value": "a number", "bool_value": "a boolean", "null_value": "null"}
    names |= {"list_value": "a list", "struct_value": "a map", "string_value": "a string"}
    return names.get(kind or "", "nothing")


def _quote(text: str) -> str:
    """Client text inside an error message, bounded."""
    return repr(truncate(text, 64))


class XdsStream:
    """What SotW and Delta streams share; subclasses define the per-mode protocol rules."""

    mode: ClassVar[Mode]

    def __init__(self, *, type_url: str | None = None) -> None:
        """``type_url`` fixes the type of a per-type service stream; ``None`` is ADS."""
        self._fixed_type = type_url
        self._node: base_pb2.Node | None = None
        self._identity: ProxyIdentity | None = None
        self._last_nonce = 0
        self._types: dict[str, TypeState] = {}
        self._snapshot: Snapshot | None = None

    @property
    def node(self) -> base_pb2.Node | None:
        """The node of the first request that carried one (later requests may omit it)."""
        return self._node

    @property
    def identity(self) -> ProxyIdentity | None:
        """Known once the first request has been handled."""
        return self._identity

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def types(self) -> Mapping[str, TypeState]:
        return self._types

    def type_status(self) -> dict[str, dict[str, Any]]:
        return {type_url: state.as_dict() for type_url, state in sorted(self._types.items())}

    def on_request(self, request: Any) -> list[Action]:
        """Handle one request of the stream's mode; raises ``XdsProtocolError`` on a violation."""
        raise NotImplementedError

    def on_snapshot(self, snapshot: Snapshot) -> list[Action]:
        """A (possibly) new snapshot for this proxy: push what changed, in ADS order."""
        self._snapshot = snapshot
        return self._pump()

    def _begin_request(self, *, type_url: str, node: base_pb2.Node | None, has_node: bool) -> str:
        """Common request prologue: resolve the type; on the first request, check and cache the
        node and its identity (Envoy sends the node on the first request only)."""
        if not type_url:
            if self._fixed_type is None:
                raise XdsProtocolError("an ADS request must carry type_url")
            type_url = self._fixed_type
        elif self._fixed_type is not None and type_url != self._fixed_type:
            raise XdsProtocolError(f"type_url {_quote(type_url)} on a {self._fixed_type} stream")
        elif type_url not in self._types:
            # Each type keeps state for the stream's life and shows in /debug/syncz: bound them.
            if len(type_url) > TYPE_URL_LIMIT:
                raise XdsProtocolError(f"type_url has {len(type_url)} characters, more than {TYPE_URL_LIMIT}")
            if len(self._types) >= TYPES_PER_STREAM:
                raise XdsProtocolError(f"more than {TYPES_PER_STREAM} type_urls on one stream")
        if self._node is None:
            if not has_node or node is None:
                raise XdsProtocolError("the first request of a stream must carry node (id and metadata)")
            self._identity = node_identity(node)
            self._node = node
        return type_url

    def _next_nonce(self) -> str:
        self._last_nonce = next(_NONCES)
        return str(self._last_nonce)

    def _shared_response(
        self, snapshot: Snapshot, key: tuple[object, ...], build: Callable[[str], bytes]
    ) -> tuple[str, bytes]:
        """A response and its nonce, shared with the streams that sent the same one from this
        snapshot (one 1 MB route table joined once, not once per proxy): nonces come from one
        process-wide counter, so another stream's nonce is still new to this one as long as it
        is above the last this stream used."""
        shared = snapshot.shared_response(key)
        if shared is not None and shared[0] > self._last_nonce:
            self._last_nonce = shared[0]
            return str(shared[0]), shared[1]
        nonce = self._next_nonce()
        response = build(nonce)
        snapshot.share_response(key, self._last_nonce, response)
        return nonce, response

    def _pump(self) -> list[Action]:
        """Send every type that has an update, in ``PUSH_ORDER``.

        A type with an update that cannot go out yet (its previous response is unanswered)
        holds back the types after it, so e.g. listeners never overtake the clusters they use.
        """
        snapshot = self._snapshot
        if snapshot is None:
            return []
        actions: list[Action] = []
        for type_url in PUSH_ORDER:
            state = self._types.get(type_url)
            if state is None or not state.subscribed or not self._has_update(type_url, state, snapshot):
                continue
            if state.inflight:
                break
            actions.append(self._respond(type_url, state, snapshot))
        return actions

    def _changed_in_scope(
        self, type_url: str, state: TypeState, old: Snapshot, new: Snapshot
    ) -> frozenset[str]:
        """Names in the subscription's scope that differ between ``old`` and ``new``."""
        changed = new.changed_since(old, type_url)
        return changed if state.wildcard else changed & state.names

    def _removal_pending(self, snapshot: Snapshot) -> bool:
        """The client still holds clusters the snapshot no longer has."""
        state = self._types.get(TYPE_CLUSTER)
        if state is None:
            return False
        present = snapshot.get(TYPE_CLUSTER)
        synced = state.synced_to
        if synced is snapshot:
            return False
        if synced is not None:
            # The client holds synced's in-scope clusters: those gone since are the ones pending.
            changed = self._changed_in_scope(TYPE_CLUSTER, state, synced, snapshot)
            return any(name not in present for name in changed)
        return any(name not in present for name in self._held(TYPE_CLUSTER, state))

    def _removal_allowed(self, snapshot: Snapshot) -> bool:
        """Clusters may go once every endpoint, listener and route update has been acked."""
        for type_url in _REMOVAL_GATE:
            state = self._types.get(type_url)
            if state is None or not state.subscribed:
                continue
            if state.inflight or state.nacked or self._has_update(type_url, state, snapshot):
                return False
        return True

    def _retained(self, type_url: str, snapshot: Snapshot) -> bool:
        """Whether resources of ``type_url`` absent from ``snapshot`` must stay at the client for now.

        Clusters stay until the gate opens; their endpoints stay as long as clusters do (dropping
        a load assignment empties the cluster it belongs to).
        """
        if type_url == TYPE_CLUSTER:
            return self._removal_pending(snapshot) and not self._removal_allowed(snapshot)
        if type_url == TYPE_ENDPOINT:
            return self._removal_pending(snapshot)
        return False

    # Mode-specific protocol rules.
    def _held(self, type_url: str, state: TypeState) -> Iterable[str]:
        """Names the client holds for the type, as far as this stream knows."""
        raise NotImplementedError

    def _has_update(self, type_url: str, state: TypeState, snapshot: Snapshot) -> bool:
        raise NotImplementedError

    def _respond(self, type_url: str, state: TypeState, snapshot: Snapshot) -> Send:
        raise NotImplementedError
