"""Small Envoy value messages built from IR values, shared by ``resources.py`` and the HTTP
filters (``xds/filters/``): a packed ``Any``, a duration, a percentage, a string matcher."""

from __future__ import annotations

from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from meshxds import ir

__all__ = ["duration", "pack", "percent", "string_matcher"]


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def percent(value: float) -> percent_pb2.FractionalPercent:
    """``value`` % as a fraction of a million (Envoy's finest denominator)."""
    return percent_pb2.FractionalPercent(
        numerator=round(value * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def string_matcher(match: ir.StringMatch) -> string_pb2.StringMatcher:
    if match.kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    if match.kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.value, ignore_case=match.ignore_case)
    if match.kind == "suffix":
        return string_pb2.StringMatcher(suffix=match.value, ignore_case=match.ignore_case)
    return string_pb2.StringMatcher(exact=match.value, ignore_case=match.ignore_case)
