"""Header operations as Envoy accepts them (measured with ``envoy --mode validate``, 1.40).

Envoy refuses a whole route table for one bad header operation: ``host`` or a ``:``-prefixed
name added, set or removed (request or response), a value holding NUL, CR or LF, and a ``%``
that does not start a command operator it knows (``%%`` is a literal ``%``). Each frontend asks
here before a header operation reaches the IR:

- Gateway API values are literal (the spec has no substitution): every ``%`` is escaped.
- Istio passes values to Envoy as they are, and users rely on that for command operators
  (``%DOWNSTREAM_REMOTE_ADDRESS%``): those are kept, any other ``%`` is escaped, with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from meshxds import ir

__all__ = ["COMMAND_OPERATORS", "envoy_value", "literal", "mutation_problems"]

_BAD_VALUE = re.compile(r"[\x00\r\n]")

# Envoy's substitution formatter commands that make sense in a header value (its access-log
# command operators); ``%NAME%``, ``%NAME(ARGS)%`` or ``%NAME(ARGS):LENGTH%``.
COMMAND_OPERATORS = frozenset(
    {
        "BYTES_RECEIVED",
        "BYTES_SENT",
        "CONNECTION_ID",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_DIRECT_REMOTE_PORT",
        "DOWNSTREAM_LOCAL_ADDRESS",
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_LOCAL_PORT",
        "DOWNSTREAM_LOCAL_SUBJECT",
        "DOWNSTREAM_LOCAL_URI_SAN",
        "DOWNSTREAM_PEER_CERT",
        "DOWNSTREAM_PEER_FINGERPRINT_1",
        "DOWNSTREAM_PEER_FINGERPRINT_256",
        "DOWNSTREAM_PEER_ISSUER",
        "DOWNSTREAM_PEER_SERIAL",
        "DOWNSTREAM_PEER_SUBJECT",
        "DOWNSTREAM_PEER_URI_SAN",
        "DOWNSTREAM_REMOTE_ADDRESS",
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_REMOTE_PORT",
        "DOWNSTREAM_TLS_CIPHER",
        "DOWNSTREAM_TLS_SESSION_ID",
        "DOWNSTREAM_TLS_VERSION",
        "DURATION",
        "DYNAMIC_METADATA",
        "FILTER_STATE",
        "HOSTNAME",
        "PROTOCOL",
        "REQ",
        "REQUESTED_SERVER_NAME",
        "RESP",
        "RESPONSE_CODE",
        "RESPONSE_FLAGS",
        "ROUTE_NAME",
        "START_TIME",
        "STREAM_ID",
        "UPSTREAM_CLUSTER",
        "UPSTREAM_HOST",
        "UPSTREAM_LOCAL_ADDRESS",
        "UPSTREAM_METADATA",
        "UPSTREAM_REMOTE_ADDRESS",
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
    }
)
_TOKEN = re.compile(r"%%|%([A-Z0-9_]+)(\([^)]*\))?(:[0-9]+)?%|%")


def literal(value: str) -> str:
    """``value`` sent as it is written: every ``%`` escaped."""
    return value.replace("%", "%%")


def envoy_value(value: str) -> tuple[str, bool]:
    """``value`` with its known command operators kept and every other ``%`` escaped; and
    whether anything was escaped (the caller warns: it is sent literally)."""
    escaped = False

    def keep_or_escape(token: re.Match[str]) -> str:
        nonlocal escaped
        text = token.group(0)
        if text == "%%" or token.group(1) in COMMAND_OPERATORS:
            return text
        escaped = True
        return literal(text)

    return _TOKEN.sub(keep_or_escape, value), escaped


def _name_problem(name: str, verb: str) -> str | None:
    if name.lower() == "host" or name.startswith(":"):
        return f"header {name!r} cannot be {verb} by a header modifier (Envoy refuses host and ':' headers)"
    return None


def mutation_problems(mutation: ir.HeaderMutation) -> list[str]:
    """Why Envoy would refuse this header operation, one sentence each (empty: it is fine)."""
    problems: list[str] = []
    pairs: Iterable[tuple[str, str, str]] = [
        *(("set", n, v) for n, v in mutation.set),
        *(("add", n, v) for n, v in mutation.add),
    ]
    for verb, name, value in pairs:
        if (problem := _name_problem(name, verb if verb == "set" else "added")) is not None:
            problems.append(problem)
        if _BAD_VALUE.search(value):
            problems.append(f"the value of header {name!r} holds a NUL, CR or LF, which no HTTP header may")
    problems.extend(p for name in mutation.remove if (p := _name_problem(name, "removed")) is not None)
    return problems
