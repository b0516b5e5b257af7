"""Hostname rules of the Gateway API: wildcards and listener/route intersection."""

from __future__ import annotations

__all__ = ["hostname_matches", "intersect_hostnames"]


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
