"""Gateway API durations (GEP-2257): ``1h``, ``500ms``, ``1m30s``; at most four units."""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_WHOLE = re.compile(r"(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: str) -> float:
    """Seconds in a GEP-2257 duration; raises ``ValueError`` naming the bad value."""
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"{value!r} is not a duration such as '10s', '1m30s' or '500ms'")
    return sum(int(n) * _SECONDS[unit] for n, unit in _PART.findall(value))
