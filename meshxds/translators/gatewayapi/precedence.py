"""Gateway API route precedence: the one module that owns the sort keys.

The spec ranks the rules of every route whose hostnames match a request: the match first
(HTTPRoute: exact path, longer path, method, more headers, more query params; GRPCRoute: longer
service, longer method, more headers), then, between routes attached through different hostnames,
the more specific hostname, then the older route, namespace/name, rule order and match order.
Route kinds build their keys here; a listener's virtual hosts are ranked here.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from meshxds import ir
from meshxds.model import gatewayapi
from meshxds.translators.hostnames import covering_patterns

__all__ = [
    "ROUTE_KEY",
    "RouteKey",
    "SortableRoute",
    "grpc_route_key",
    "hostname_rank",
    "http_route_key",
    "more_specific_hostname",
    "rank_hosts",
]

_PATH_RANK = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}


class RouteKey(NamedTuple):
    """One match's place in the spec's order. A tuple, so sorting compares keys in C; the match
    part is a fixed-length tuple, so comparing it nested ranks as comparing its fields inline."""

    match: tuple[int, int, int, int, int]
    """How specific the match is, lower first. Each route kind fills the five fields its own
    way, all ints, so HTTPRoute and GRPCRoute rules rank together in one virtual host."""
    age: str
    """The route's creationTimestamp; ``~`` (after every date) when it has none."""
    namespace: str
    name: str
    rule_index: int
    match_index: int

    def with_hostname(self, hostname_rank: tuple[int, int]) -> tuple[object, ...]:
        """The key between routes attached through different hostnames: the match, then the
        hostname's rank (:func:`hostname_rank`), then the rest."""
        return (self.match, hostname_rank, *self[1:])


def hostname_rank(hostname: str) -> tuple[int, int]:
    """An exact hostname before a wildcard, a longer one before a shorter one."""
    return (-len(hostname) if "*" not in hostname else 0, -len(hostname))


@dataclass(frozen=True, slots=True, kw_only=True)
class SortableRoute:
    key: RouteKey
    route: ir.Route


ROUTE_KEY = operator.attrgetter("key")
"""A ``SortableRoute``'s key (attrgetter: called in C when sorting)."""


def http_route_key(
    match: gatewayapi.HTTPRouteMatch, age: str, namespace: str, name: str, rule_index: int, match_index: int
) -> RouteKey:
    path = match.path
    return RouteKey(
        (
            _PATH_RANK[path.type],
            -len(path.value),
            0 if match.method else 1,
            -len(match.headers),
            -len(match.query_params),
        ),
        age,
        namespace,
        name,
        rule_index,
        match_index,
    )


def grpc_route_key(
    route: gatewayapi.GRPCRoute, match: gatewayapi.GRPCRouteMatch, rule_index: int, match_index: int
) -> RouteKey:
    # An exact service and method ranks with an exact path, anything else after a regex path.
    method = match.method or gatewayapi.GRPCMethodMatch()
    exact = method.type == "Exact" and bool(method.service and method.method)
    return RouteKey(
        (0 if exact else 2, -len(method.service or ""), -len(method.method or ""), -len(match.headers), 0),
        route.metadata.creation_timestamp or "~",
        route.namespace,
        route.name,
        rule_index,
        match_index,
    )


def more_specific_hostname(candidate: str | None, than: str | None) -> bool:
    """Whether a listener with hostname ``candidate`` claims requests before one with ``than``."""
    if not candidate:
        return False
    if not than:
        return True
    return ("*" not in candidate and "*" in than) or len(candidate) > len(than)


def rank_hosts(hosts: dict[str, dict[int, SortableRoute]]) -> dict[str, list[SortableRoute]]:
    """Each hostname's route table, in precedence order, from the routes attached per hostname
    (keyed by identity, in first-seen order).

    Envoy serves a request from ONE virtual host, the most specific; the spec ranks the rules
    of every route whose hostnames match. So a host's table also holds the rules of routes
    attached by a wildcard (or no hostname) that covers it. Match precedence first (a longer
    prefix on *.com beats "/" on example.com), then the more specific hostname, then age.
    Sources covering a host are found by probing its few covering patterns, in host order."""
    by_pattern: dict[str, list[str]] = defaultdict(list)
    for source in hosts:
        by_pattern[source.lower()].append(source)
    if len(by_pattern) == len(hosts) and not any(pattern.startswith("*") for pattern in by_pattern):
        # No source covers another (no wildcard, no two spellings of one name): each host's
        # own routes, ranked by their keys alone. The common case, and linear.
        return {hostname: sorted(bucket.values(), key=ROUTE_KEY) for hostname, bucket in hosts.items()}
    return _merge_covered(hosts, by_pattern)


def _merge_covered(
    hosts: dict[str, dict[int, SortableRoute]], by_pattern: dict[str, list[str]]
) -> dict[str, list[SortableRoute]]:
    """Each host's table: its own routes and those of the sources covering it, ranked."""
    order = {source: i for i, source in enumerate(hosts)}
    merged: dict[str, list[SortableRoute]] = {}
    for hostname in hosts:
        covering = {hostname, *(s for p in covering_patterns(hostname) for s in by_pattern.get(p, ()))}
        if len(covering) == 1:  # one specificity, so the route keys alone rank
            merged[hostname] = sorted(hosts[hostname].values(), key=ROUTE_KEY)
            continue
        ranked: list[tuple[tuple[object, ...], SortableRoute]] = []
        seen: set[int] = set()
        for source in sorted(covering, key=order.__getitem__):
            rank = hostname_rank(source)
            for key, sortable in hosts[source].items():
                if key not in seen:
                    seen.add(key)
                    ranked.append((sortable.key.with_hostname(rank), sortable))
        merged[hostname] = [s for _, s in sorted(ranked, key=lambda item: item[0])]
    return merged
