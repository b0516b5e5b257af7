"""RE2 checks: Envoy compiles every regex with RE2, so we check with RE2 before sending one."""

from __future__ import annotations

import re2

__all__ = ["re2_error"]

_QUIET = re2.Options()
_QUIET.log_errors = False  # the complaint goes into our message, not onto stderr


def re2_error(pattern: str) -> str | None:
    """``None`` when RE2 accepts the pattern, else RE2's complaint."""
    try:
        re2.compile(pattern, _QUIET)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b""
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        return text or "not a valid RE2 expression"
    return None
