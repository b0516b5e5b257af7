"""Gateway API durations (GEP-2257): ``1h``, ``500ms``, ``1m30s``; at most four units.

The parser lives with the model, which needs it to check timeouts as the CRD does."""

from __future__ import annotations

from meshxds.model.gatewayapi import parse_duration

__all__ = ["parse_duration"]
