"""Gateway API ``CORS`` filter (GEP-1767) → ``ir.Cors``, the policy Istio's ``corsPolicy`` becomes too.

Origins: ``*`` allows any (Envoy's CORS filter treats an origin matcher that matches ``*`` as
allow-all, and always echoes the request's ``Origin``, which is what the spec asks for when
credentials are allowed). A wildcard host is a regex built here from the validated origin, so it
can only match hostnames: ``https://*.bar.com`` matches ``https://www.bar.com`` and
``https://a.b.bar.com`` (``*`` takes any number of labels to its left), never
``https://bar.com`` nor ``https://evil.com/.bar.com``. Other origins match exactly. Scheme and
host compare case-insensitively (browsers send them lower-case); a port must be the same (a
browser leaves the scheme's default port out of ``Origin``, so one must write it the same way).
"""

from __future__ import annotations

import re

from meshxds import ir
from meshxds.model import gatewayapi

__all__ = ["origin_matcher", "translate_cors"]

_LABELS = r"[a-z0-9-]+(\.[a-z0-9-]+)*"
"""One or more DNS labels: what a host wildcard stands for (small: Envoy caps a regex's size)."""


def origin_matcher(origin: str) -> ir.StringMatch:
    """One allowed origin (already validated against the CRD's pattern) as a string match."""
    if origin == "*":
        return ir.StringMatch(kind="exact", value="*")
    scheme, _, authority = origin.lower().partition("://")
    if not authority.startswith("*"):
        return ir.StringMatch(kind="exact", value=origin.lower(), ignore_case=True)
    # "*" or "*.rest" (the pattern allows a wildcard only there), then an optional ":port".
    rest = authority[1:]
    return ir.StringMatch(kind="regex", value=f"{re.escape(scheme)}://{_LABELS}{re.escape(rest)}")


def translate_cors(cors: gatewayapi.HTTPCORSFilter) -> ir.Cors:
    return ir.Cors(
        allow_origins=tuple(origin_matcher(o) for o in cors.allow_origins),
        allow_methods=tuple(cors.allow_methods),
        allow_headers=tuple(cors.allow_headers),
        expose_headers=tuple(cors.expose_headers),
        max_age_s=float(cors.max_age),
        # false or omitted: the header is left out (the spec), which is Envoy's default too.
        allow_credentials=True if cors.allow_credentials else None,
    )
