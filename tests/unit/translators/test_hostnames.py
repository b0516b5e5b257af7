"""Gateway API hostname rules: wildcard coverage and listener/route intersection."""

from __future__ import annotations

import pytest

from meshxds.translators.hostnames import (
    HostnamePatterns,
    covering_patterns,
    hostname_matches,
    intersect_hostnames,
)


@pytest.mark.parametrize(
    ("pattern", "hostname", "expected"),
    [
        pytest.param("example.com", "example.com", True, id="exact name matches itself"),
        pytest.param("Example.COM", "example.com", True, id="comparison is case-insensitive"),
        pytest.param("example.com", "www.example.com", False, id="exact name does not cover subdomains"),
        pytest.param("*.wildcard.io", "a.wildcard.io", True, id="wildcard covers one label"),
        pytest.param("*.wildcard.io", "a.b.wildcard.io", True, id="wildcard covers several labels"),
        pytest.param("*.wildcard.io", "wildcard.io", False, id="*.wildcard.io does not match wildcard.io"),
        pytest.param("*.wildcard.io", "notwildcard.io", False, id="wildcard suffix starts at a dot"),
        pytest.param("*.wildcard.io", ".wildcard.io", False, id="wildcard needs a non-empty label"),
        pytest.param("*", "anything.example", True, id="bare star covers everything"),
    ],
)
def test_hostname_matches(pattern: str, hostname: str, expected: bool) -> None:
    assert hostname_matches(pattern, hostname) is expected


@pytest.mark.parametrize(
    ("listener", "routes", "expected"),
    [
        pytest.param(None, [], ["*"], id="neither side has hostnames: catch-all"),
        pytest.param("foo.com", [], ["foo.com"], id="route without hostnames takes the listener's"),
        pytest.param(
            None, ["B.com", "a.com", "a.com"], ["a.com", "b.com"], id="no listener hostname admits all"
        ),
        pytest.param(
            "foo.com", ["foo.com", "bar.com"], ["foo.com"], id="exact intersection keeps the common name"
        ),
        pytest.param(
            "*.foo.com", ["a.foo.com"], ["a.foo.com"], id="listener wildcard admits a specific route"
        ),
        pytest.param(
            "a.foo.com", ["*.foo.com"], ["a.foo.com"], id="route wildcard narrows to listener's name"
        ),
        pytest.param("*.foo.com", ["*.a.foo.com"], ["*.a.foo.com"], id="the more specific wildcard wins"),
        pytest.param("*.foo.com", ["foo.com"], [], id="listener wildcard does not admit the bare suffix"),
        pytest.param("foo.com", ["bar.com"], [], id="disjoint hostnames do not intersect"),
    ],
)
def test_intersect_hostnames(listener: str | None, routes: list[str], expected: list[str]) -> None:
    assert intersect_hostnames(listener, routes) == expected


_NAMES = [
    "*",
    "",
    "a",
    "example.com",
    "Example.COM",
    "www.example.com",
    "a.b.example.com",
    "*.example.com",
    "*.Example.com",
    "*.b.example.com",
    "*.com",
    ".example.com",
    "notexample.com",
    "*x.example.com",
]


@pytest.mark.parametrize("hostname", _NAMES)
def test_covering_patterns_agree_with_hostname_matches(hostname: str) -> None:
    covering = covering_patterns(hostname)
    assert len(covering) == len(set(covering))
    for pattern in _NAMES:
        assert (pattern.lower() in covering) is hostname_matches(pattern, hostname), pattern
        assert HostnamePatterns([pattern]).covers(hostname) is hostname_matches(pattern, hostname), pattern


def test_covering_patterns_most_specific_first() -> None:
    assert covering_patterns("A.b.C") == ["a.b.c", "*.b.c", "*.c", "*"]


def test_empty_hostname_patterns_are_false() -> None:
    assert not HostnamePatterns([])
    assert not HostnamePatterns([]).covers("a.com")
