"""RE2 checks: Envoy compiles every regex with RE2, so we check with RE2 before sending one."""

from __future__ import annotations

import re2

from meshxds import ir

__all__ = ["re2_error", "route_match_regex_problems"]

_QUIET = re2.Options()
_QUIET.log_errors = False  # the complaint goes into our message, not onto stderr


def re2_error(pattern: str) -> str | None:
    """``None`` when RE2 (and Envoy) accept the pattern, else the complaint."""
    if not pattern:  # RE2 compiles it; Envoy's RegexMatcher wants at least one character
        return "an empty regex (Envoy needs at least one character)"
    try:
        re2.compile(pattern, _QUIET)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b""
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        return text or "not a valid RE2 expression"
    return None


def route_match_regex_problems(match: ir.RouteMatch) -> list[str]:
    """Every regex of a route match (path, headers, query params) RE2 rejects, with why."""
    found = [match.path.value] if match.path.kind == "regex" else []
    found += [h.match.value for h in match.headers if h.match.kind == "regex"]
    found += [q.match.value for q in match.query_params if q.match.kind == "regex"]
    return [f"{value!r}: {err}" for value in found if (err := re2_error(value))]
