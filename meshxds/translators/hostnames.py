"""Hostname rules of the Gateway API: wildcards and listener/route intersection."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["HostnamePatterns", "covering_patterns", "hostname_matches", "intersect_hostnames"]


def hostname_matches(pattern: str, hostname: str) -> bool:
    """Does ``pattern`` (possibly ``*.example.com``) cover ``hostname``?

    A wildcard covers one or more labels in front of its suffix, never the bare suffix:
    ``*.wildcard.io`` covers ``a.wildcard.io`` and ``a.b.wildcard.io`` but not ``wildcard.io``.
    """
    pattern, hostname = pattern.lower(), hostname.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return hostname.endswith(suffix) and len(hostname) > len(suffix)
    return pattern == hostname


def covering_patterns(hostname: str) -> list[str]:
    """Every pattern that covers ``hostname``, lowercase, most specific first: the name itself,
    ``*.b.c`` and ``*.c`` for ``a.b.c``, then ``*``.

    ``hostname_matches(p, h)`` is exactly ``p.lower() in covering_patterns(h)``, so a lookup of
    these few keys in an index replaces testing every pattern (linear instead of all-pairs).
    """
    hostname = hostname.lower()
    out = [hostname]
    # A wildcard's suffix starts at a dot that is not the first character (a non-empty label).
    dot = hostname.find(".", 1)
    while dot != -1:
        out.append("*" + hostname[dot:])
        dot = hostname.find(".", dot + 1)
    out.append("*")
    return list(dict.fromkeys(out))  # "*.a.com" yields itself twice, "*" too


class HostnamePatterns:
    """A set of patterns answering "does any of them cover this hostname?" in O(labels)."""

    __slots__ = ("_patterns",)

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = frozenset(p.lower() for p in patterns)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def covers(self, hostname: str) -> bool:
        return any(p in self._patterns for p in covering_patterns(hostname))


def _intersect(listener: str, route: str) -> str | None:
    if hostname_matches(listener, route):
        return route.lower()
    if hostname_matches(route, listener):
        return listener.lower()
    return None


def intersect_hostnames(listener_hostname: str | None, route_hostnames: list[str]) -> list[str]:
    """The hostnames a route serves on a listener; ``[]`` means they do not intersect.

    No listener hostname admits every route hostname; a route without hostnames takes the
    listener's (or ``*``). Each result is the more specific of the two sides.
    """
    if not route_hostnames:
        return [listener_hostname.lower() if listener_hostname else "*"]
    if not listener_hostname:
        return sorted({h.lower() for h in route_hostnames})
    found = {h for h in (_intersect(listener_hostname, r) for r in route_hostnames) if h}
    return sorted(found)
