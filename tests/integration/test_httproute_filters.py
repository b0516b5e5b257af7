"""HTTPRoute filters against real Envoy, as the Gateway API conformance tests expect them:
RequestHeaderModifier and ResponseHeaderModifier (set / add appends / remove, names
case-insensitive), RequestRedirect (scheme, hostname, port, path, status code, and the port the
``Location`` header must carry) and URLRewrite (hostname, ReplaceFullPath, ReplacePrefixMatch with
the spec's table of slashes).

One module-scoped stack: ``meshxds serve`` + one SotW Envoy; what reached the upstream is read from
its JSON answer, what reached the client from the response.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from httproute_support import (
    GATEWAY_CLASS,
    NS,
    EchoServer,
    Stack,
    gateway_yaml,
    join,
    run_stack,
    service_yaml,
    values,
)

from meshxds.testing.ports import free_port
from meshxds.testing.upstreams import Http1OnlyServer

GW = "same-namespace"
V1, V2, ECHO = "infra-backend-v1", "infra-backend-v2", "echo"


def _route(name: str, host: str, rules: str) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [{host}]
  rules:
{rules}"""


def _header_rules(kind: str, field: str, backend: str) -> str:
    """conformance/tests/httproute-{request,response}-header-modifier.yaml's rules."""
    specs = {
        "/set": "{set: [{name: X-Header-Set, value: set-overwrites-values}]}",
        "/add": "{add: [{name: X-Header-Add, value: add-appends-values}]}",
        "/remove": "{remove: [X-Header-Remove]}",
        "/multiple": (
            "{set: [{name: X-Header-Set-1, value: header-set-1},"
            " {name: X-Header-Set-2, value: header-set-2}],"
            " add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2},"
            " {name: X-Header-Add-3, value: header-add-3}],"
            " remove: [X-Header-Remove-1, X-Header-Remove-2]}"
        ),
        "/case-insensitivity": (
            "{set: [{name: X-Header-Set, value: header-set}],"
            " add: [{name: X-Header-Add, value: header-add}], remove: [X-Header-Remove]}"
        ),
    }
    return "".join(
        f"""\
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    filters: [{{type: {kind}, {field}: {spec}}}]
    backendRefs: [{{name: {backend}, port: 8080}}]
"""
        for path, spec in specs.items()
    )


REQUEST_HEADERS = _route(
    "request-header-modifier",
    "reqhdr.example",
    _header_rules("RequestHeaderModifier", "requestHeaderModifier", V1),
)
RESPONSE_HEADERS = _route(
    "response-header-modifier",
    "resphdr.example",
    _header_rules("ResponseHeaderModifier", "responseHeaderModifier", ECHO),
)


def _redirect_rule(prefix: str, redirect: str, *, backend: bool = False) -> str:
    backends = f"\n    backendRefs: [{{name: {V1}, port: 8080}}]" if backend else ""
    return f"""\
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]{backends}
"""


# conformance/tests/httproute-redirect-{scheme,host-and-status,port,path}.yaml on one hostname
REDIRECTS = _route(
    "redirect",
    "redirect.example",
    "".join(
        [
            _redirect_rule("/scheme", "{scheme: https}"),
            _redirect_rule("/scheme-and-host", "{hostname: example.org, scheme: https}", backend=True),
            _redirect_rule("/scheme-and-status", "{scheme: https, statusCode: 301}", backend=True),
            _redirect_rule("/hostname-redirect", "{hostname: example.org}"),
            _redirect_rule("/host-and-status", "{hostname: example.org, statusCode: 301}"),
            _redirect_rule("/port", "{port: 8083}"),
            _redirect_rule("/port-and-host", "{hostname: example.org, port: 8083}"),
            _redirect_rule("/port-and-status", "{port: 8083, statusCode: 301}"),
            _redirect_rule(
                "/port-and-host-and-status", "{port: 8083, hostname: example.org, statusCode: 302}"
            ),
            _redirect_rule("/port-and-temporary", "{port: 8083, hostname: example.org, statusCode: 307}"),
            _redirect_rule("/port-and-permanent", "{port: 8083, hostname: example.org, statusCode: 308}"),
            _redirect_rule(
                "/original-prefix",
                "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
            ),
            _redirect_rule(
                "/full", "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}"
            ),
            _redirect_rule(
                "/path-and-host",
                "{hostname: example.org,"
                " path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
            ),
            _redirect_rule(
                "/path-and-status",
                "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix},"
                " statusCode: 301}",
            ),
            _redirect_rule(
                "/full-path-and-host",
                "{hostname: example.org, path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}}",
            ),
            _redirect_rule(
                "/full-path-and-status",
                "{path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}, statusCode: 301}",
            ),
        ]
    ),
)

_HEADER_FILTER = """\
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
"""


def _rewrite_rule(prefix: str, path_modifier: str, *, headers: bool = False) -> str:
    return f"""\
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    filters:
    - {{type: URLRewrite, urlRewrite: {{path: {path_modifier}}}}}
{_HEADER_FILTER if headers else ""}    backendRefs: [{{name: {V1}, port: 8080}}]
"""


# conformance/tests/httproute-rewrite-path.yaml
REWRITE_PATH = _route(
    "rewrite-path",
    "rewrite.example",
    "".join(
        [
            _rewrite_rule("/prefix/one", "{type: ReplacePrefixMatch, replacePrefixMatch: /one}"),
            _rewrite_rule("/strip-prefix", "{type: ReplacePrefixMatch, replacePrefixMatch: /}"),
            _rewrite_rule("/full/one", "{type: ReplaceFullPath, replaceFullPath: /one}"),
            _rewrite_rule(
                "/full/rewrite-path-and-modify-headers",
                "{type: ReplaceFullPath, replaceFullPath: /test}",
                headers=True,
            ),
            _rewrite_rule(
                "/prefix/rewrite-path-and-modify-headers",
                "{type: ReplacePrefixMatch, replacePrefixMatch: /prefix}",
                headers=True,
            ),
        ]
    ),
)

# The HTTPPathModifier table: prefix /foo or /foo/, replaced by /xyz, /xyz/, "" or /; one prefix per row.
REWRITE_TABLE = _route(
    "rewrite-table",
    "rewrite-table.example",
    "".join(
        _rewrite_rule(prefix, f'{{type: ReplacePrefixMatch, replacePrefixMatch: "{replacement}"}}')
        for prefix, replacement in [
            ("/foo", "/xyz"),
            ("/foo-slash", "/xyz/"),
            ("/bar/", "/xyz"),
            ("/baz/", "/xyz/"),
            ("/empty", ""),
            ("/root", "/"),
        ]
    ),
)

# conformance/tests/httproute-rewrite-host.yaml, plus hostname and prefix together
REWRITE_HOST = _route(
    "rewrite-host",
    "rewrite-host.example",
    f"""\
  - matches: [{{path: {{type: PathPrefix, value: /one}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{hostname: one.example.org}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /both}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{hostname: both.example.org, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}}}
    backendRefs: [{{name: {V1}, port: 8080}}]
  - filters: [{{type: URLRewrite, urlRewrite: {{hostname: example.org}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
""",
)

ROUTES = (
    "request-header-modifier",
    "response-header-modifier",
    "redirect",
    "rewrite-path",
    "rewrite-table",
    "rewrite-host",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    with Http1OnlyServer(name=V1) as v1, Http1OnlyServer(name=V2) as v2, EchoServer(name=ECHO) as echo:
        files = {
            "gateway.yaml": join(GATEWAY_CLASS, gateway_yaml(GW, [{"name": "http", "port": port}])),
            "backends.yaml": join(*(service_yaml(up.name, up.port) for up in (v1, v2, echo))),
            "headers.yaml": join(REQUEST_HEADERS, RESPONSE_HEADERS),
            "redirects.yaml": REDIRECTS,
            "rewrites.yaml": join(REWRITE_PATH, REWRITE_TABLE, REWRITE_HOST),
        }
        with run_stack(
            tmp_path_factory.mktemp("httproute-filters"),
            files,
            gateways={GW: port},
            probes=[(GW, "reqhdr.example", "/set"), (GW, "resphdr.example", "/set")],
        ) as running:
            yield running


def _check_headers(got: dict[str, str], expected: dict[str, str], absent: list[str], what: str) -> None:
    for name, value in expected.items():
        assert values(got.get(name.lower())) == values(value), f"{what}: {name} in {got}"
    for name in absent:
        assert name.lower() not in got, f"{what}: {name} must be gone from {got}"


# --- RequestHeaderModifier (conformance HTTPRouteRequestHeaderModifier) ----------------------

HEADER_CASES = [
    (
        "/set",
        {"Some-Other-Header": "val"},
        {"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
        [],
    ),
    (
        "/set",
        {"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
        {"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
        [],
    ),
    (
        "/add",
        {"Some-Other-Header": "val"},
        {"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"},
        [],
    ),
    (
        "/add",
        {"Some-Other-Header": "val", "X-Header-Add": "some-other-value"},
        {"Some-Other-Header": "val", "X-Header-Add": "some-other-value,add-appends-values"},
        [],
    ),
    ("/remove", {"X-Header-Remove": "val"}, {}, ["X-Header-Remove"]),
    (
        "/multiple",
        {
            "X-Header-Set-2": "set-val-2",
            "X-Header-Add-2": "add-val-2",
            "X-Header-Remove-2": "remove-val-2",
            "Another-Header": "another-header-val",
        },
        {
            "X-Header-Set-1": "header-set-1",
            "X-Header-Set-2": "header-set-2",
            "X-Header-Add-1": "header-add-1",
            "X-Header-Add-2": "add-val-2,header-add-2",
            "X-Header-Add-3": "header-add-3",
            "Another-Header": "another-header-val",
        },
        ["X-Header-Remove-1", "X-Header-Remove-2"],
    ),
    (
        "/case-insensitivity",
        {
            "x-header-set": "original-val-set",
            "x-header-add": "original-val-add",
            "x-header-remove": "original-val-remove",
            "Another-Header": "another-header-val",
        },
        {
            "X-Header-Set": "header-set",
            "X-Header-Add": "original-val-add,header-add",
            "Another-Header": "another-header-val",
        },
        ["x-header-remove", "X-Header-Remove"],
    ),
]


@pytest.mark.parametrize(("path", "sent", "expected", "absent"), HEADER_CASES)
def test_request_header_modifier(
    stack: Stack, path: str, sent: dict[str, str], expected: dict[str, str], absent: list[str]
) -> None:
    reply = stack.request("reqhdr.example", path, headers=sent)
    assert (reply.status, reply.backend) == (200, V1), reply
    _check_headers(reply.seen()["headers"], expected, absent, f"upstream saw for {path}")


# --- ResponseHeaderModifier: the upstream sends what the request's X-Echo-Set-Header names ---


@pytest.mark.parametrize(("path", "sent", "expected", "absent"), HEADER_CASES)
def test_response_header_modifier(
    stack: Stack, path: str, sent: dict[str, str], expected: dict[str, str], absent: list[str]
) -> None:
    echo = ",".join(f"{name}:{value}" for name, value in sent.items())
    reply = stack.request("resphdr.example", path, headers={"X-Echo-Set-Header": echo})
    assert (reply.status, reply.backend) == (200, ECHO), reply
    _check_headers(reply.headers, expected, absent, f"client got for {path}")
    # The filter acts on the response only: the request reached the upstream untouched.
    assert "x-header-set" not in reply.seen()["headers"]


# --- RequestRedirect ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "scheme", "host", "port", "location_path"),
    [
        # HTTPRouteRedirectScheme
        ("/scheme", 302, "https", "redirect.example", None, "/scheme"),
        ("/scheme-and-host", 302, "https", "example.org", None, "/scheme-and-host"),
        ("/scheme-and-status", 301, "https", "redirect.example", None, "/scheme-and-status"),
        # HTTPRouteRedirectHostAndStatus
        ("/hostname-redirect", 302, "http", "example.org", "*", "/hostname-redirect"),
        ("/host-and-status", 301, "http", "example.org", "*", "/host-and-status"),
        # HTTPRouteRedirectPort
        ("/port", 302, "http", "redirect.example", 8083, "/port"),
        ("/port-and-host", 302, "http", "example.org", 8083, "/port-and-host"),
        ("/port-and-status", 301, "http", "redirect.example", 8083, "/port-and-status"),
        ("/port-and-host-and-status", 302, "http", "example.org", 8083, "/port-and-host-and-status"),
        ("/port-and-temporary", 307, "http", "example.org", 8083, "/port-and-temporary"),
        ("/port-and-permanent", 308, "http", "example.org", 8083, "/port-and-permanent"),
        # HTTPRouteRedirectPath
        ("/original-prefix/lemon", 302, "http", "redirect.example", "*", "/replacement-prefix/lemon"),
        ("/original-prefix", 302, "http", "redirect.example", "*", "/replacement-prefix"),
        ("/full/path/original", 302, "http", "redirect.example", "*", "/full-path-replacement"),
        ("/path-and-host", 302, "http", "example.org", "*", "/replacement-prefix"),
        ("/path-and-status", 301, "http", "redirect.example", "*", "/replacement-prefix"),
        ("/full-path-and-host", 302, "http", "example.org", "*", "/replacement-full"),
        ("/full-path-and-status", 301, "http", "redirect.example", "*", "/replacement-full"),
    ],
)
def test_request_redirect(
    stack: Stack, path: str, status: int, scheme: str, host: str, port: int | str | None, location_path: str
) -> None:
    """Scheme, host, path and status of the ``Location``; its port where the filter sets one or the
    scheme implies none (``"*"``: derived from the listener, see the next test)."""
    reply = stack.request("redirect.example", path)
    assert reply.status == status, reply
    assert reply.backend is None, "a redirect never reaches a backend"
    location = urlsplit(reply.headers["location"])
    assert (location.scheme, location.hostname, location.path) == (scheme, host, location_path), reply
    if port != "*":
        assert location.port == port, reply


@pytest.mark.parametrize(
    ("path", "host_has_port", "expected"),
    [
        ("/hostname-redirect", False, "http://example.org:{port}/hostname-redirect"),
        ("/hostname-redirect", True, "http://example.org:{port}/hostname-redirect"),
        ("/original-prefix/x", False, "http://redirect.example:{port}/replacement-prefix/x"),
        ("/original-prefix/x", True, "http://redirect.example:{port}/replacement-prefix/x"),
        ("/scheme", False, "https://redirect.example/scheme"),
        ("/scheme", True, "https://redirect.example/scheme"),
        ("/scheme-and-host", True, "https://example.org/scheme-and-host"),
        ("/port", False, "http://redirect.example:8083/port"),
        ("/port", True, "http://redirect.example:8083/port"),
    ],
)
def test_redirect_location_port_follows_the_spec(
    stack: Stack, path: str, host_has_port: bool, expected: str
) -> None:
    """No port in the filter: with a scheme, the scheme's well-known port (so none in the
    Location); without, the Gateway listener's port — whatever the client's Host header says."""
    port = stack.ports[GW]
    host = f"redirect.example:{port}" if host_has_port else "redirect.example"
    reply = stack.request(host, path)
    assert reply.status == 302, reply
    assert reply.headers["location"] == expected.format(port=port), reply


# --- URLRewrite -----------------------------------------------------------------------------

_MODIFIED = {
    "X-Header-Add": "header-val-1",
    "X-Header-Add-Append": "append-val-1,header-val-2",
    "X-Header-Set": "set-overwrites-values",
}
_SENT = {"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "set-val"}


@pytest.mark.parametrize(
    ("path", "sent", "upstream_path", "expected"),
    [
        ("/prefix/one/two", {}, "/one/two", {}),
        ("/strip-prefix/three", {}, "/three", {}),
        ("/strip-prefix", {}, "/", {}),
        ("/strip-prefix/", {}, "/", {}),
        ("/full/one/two", {}, "/one", {}),
        ("/full/rewrite-path-and-modify-headers/test", _SENT, "/test", _MODIFIED),
        ("/prefix/rewrite-path-and-modify-headers/one", _SENT, "/prefix/one", _MODIFIED),
        ("/prefix/one/two?a=b&c=d", {}, "/one/two?a=b&c=d", {}),  # the query string is kept
        ("/strip-prefix/three?x=1", {}, "/three?x=1", {}),
    ],
)
def test_httproute_rewrite_path(
    stack: Stack, path: str, sent: dict[str, str], upstream_path: str, expected: dict[str, str]
) -> None:
    reply = stack.request("rewrite.example", path, headers=sent)
    assert (reply.status, reply.backend) == (200, V1), reply
    seen = reply.seen()
    assert seen["path"] == upstream_path, reply
    _check_headers(seen["headers"], expected, ["X-Header-Remove"] if expected else [], path)


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/foo/bar", "/xyz/bar"),  # /foo  -> /xyz
        ("/foo-slash/bar", "/xyz/bar"),  # /foo  -> /xyz/
        ("/bar/bar", "/xyz/bar"),  # /foo/ -> /xyz
        ("/baz/bar", "/xyz/bar"),  # /foo/ -> /xyz/
        ("/foo", "/xyz"),
        ("/foo/", "/xyz/"),
        ("/empty/bar", "/bar"),  # /foo -> ""
        ("/empty/", "/"),
        ("/empty", "/"),
        ("/root/", "/"),  # /foo -> /
        ("/root", "/"),
    ],
)
def test_replace_prefix_match_follows_the_spec_table(stack: Stack, path: str, upstream_path: str) -> None:
    reply = stack.request("rewrite-table.example", path)
    assert (reply.status, reply.backend) == (200, V1), reply
    assert reply.seen()["path"] == upstream_path, reply


@pytest.mark.parametrize(
    ("path", "backend", "authority", "upstream_path"),
    [
        ("/one", V1, "one.example.org", "/one"),
        ("/one/two", V1, "one.example.org", "/one/two"),
        ("/", V2, "example.org", "/"),
        ("/two", V2, "example.org", "/two"),
        ("/both/x?y=z", V1, "both.example.org", "/new/x?y=z"),
    ],
)
def test_httproute_rewrite_host(
    stack: Stack, path: str, backend: str, authority: str, upstream_path: str
) -> None:
    reply = stack.request("rewrite-host.example", path)
    assert (reply.status, reply.backend) == (200, backend), reply
    seen = reply.seen()
    assert (seen["authority"], seen["path"]) == (authority, upstream_path), reply


@pytest.mark.parametrize("route", ROUTES)
def test_filter_routes_are_accepted(stack: Stack, route: str) -> None:
    conditions = stack.route_conditions(route)
    assert conditions["Accepted"]["status"] == "True", conditions
    assert conditions["ResolvedRefs"]["status"] == "True", conditions
    assert stack.attached_routes(GW) == {"http": len(ROUTES)}
