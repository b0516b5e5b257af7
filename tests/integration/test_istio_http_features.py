"""VirtualService ``http`` features through a real Istio gateway, one host per feature: match
kinds, redirect, directResponse, rewrite (prefix, exact, regex), header operations, timeout,
retries, fault abort, CORS and mirroring. Each is checked by what the client and the upstreams
see, not by the config."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from istio_support import (
    PortReservation,
    ScriptedServer,
    Stack,
    backend,
    gateway,
    http_request,
    run_stack,
    server,
    virtual_service,
    wait_status,
    write_manifests,
)

from meshxds.testing.ports import wait_until
from meshxds.testing.upstreams import Http1OnlyServer

NS = "web"
GW = "istio-system/web-gateway"
ALLOWED_ORIGIN = "https://allowed.example"
MODERN = {"x-legacy": "0"}
"""A value the withoutHeaders rule (x-legacy: exact "1") does not match."""


@dataclass
class Web:
    stack: Stack
    port: int
    app: Http1OnlyServer
    shadow: Http1OnlyServer
    slow: ScriptedServer
    flaky: ScriptedServer

    def get(self, host: str, path: str = "/", **kwargs: Any) -> Any:
        return http_request(self.port, host, path, **kwargs)


def _to(host: str) -> list[dict[str, Any]]:
    return [{"destination": {"host": host}}]


def _body(text: str) -> dict[str, Any]:
    return {"status": 200, "body": {"string": text}}


def _vs(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return virtual_service(name, NS, {"hosts": [f"{name}.example.com"], "gateways": [GW], "http": rules})


def manifests(port: int, real: dict[str, int]) -> list[dict[str, Any]]:
    return [
        gateway("web-gateway", "istio-system", [server(port, "HTTP", ["*.example.com"], name="http")]),
        *(doc for n, p in real.items() for doc in backend(n, NS, port=80, upstream_port=p)),
        _vs(
            "match",
            [
                {
                    "match": [{"uri": {"prefix": "/casey/"}, "ignoreUriCase": True}],
                    "directResponse": _body("ignorecase"),
                },
                {"match": [{"uri": {"regex": "/items/[0-9]+"}}], "directResponse": _body("regex")},
                {"match": [{"method": {"exact": "POST"}}], "directResponse": _body("post")},
                {"match": [{"queryParams": {"v": {"exact": "2"}}}], "directResponse": _body("query")},
                {"match": [{"headers": {"x-tenant": {"prefix": "blue"}}}], "directResponse": _body("header")},
                {
                    "match": [{"withoutHeaders": {"x-legacy": {"exact": "1"}}}],
                    "directResponse": _body("modern"),
                },
                {"directResponse": _body("legacy")},
            ],
        ),
        _vs(
            "redirect",
            [
                {
                    "match": [{"uri": {"exact": "/old"}}],
                    "redirect": {"uri": "/new", "authority": "new.example.com", "redirectCode": 308},
                },
                {"match": [{"uri": {"prefix": "/secure"}}], "redirect": {"scheme": "https", "port": 8443}},
                {
                    "match": [{"uri": {"prefix": "/derive"}}],
                    "redirect": {"authority": "new.example.com", "derivePort": "FROM_REQUEST_PORT"},
                },
            ],
        ),
        _vs("direct", [{"directResponse": {"status": 503, "body": {"string": "maintenance\n"}}}]),
        _vs(
            "rewrite",
            [
                {
                    "match": [{"uri": {"prefix": "/api/"}}],
                    "rewrite": {"uri": "/v2/", "authority": "backend.internal"},
                    "route": _to("app"),
                },
                {
                    "match": [{"uri": {"exact": "/exact"}}],
                    "rewrite": {"uri": "/replaced"},
                    "route": _to("app"),
                },
                {
                    "match": [{"uri": {"regex": "/users/[0-9]+"}}],
                    "rewrite": {"uriRegexRewrite": {"match": "^/users/([0-9]+)$", "rewrite": "/u/\\1"}},
                    "route": _to("app"),
                },
            ],
        ),
        _vs(
            "headers",
            [
                {
                    "headers": {
                        "request": {
                            "set": {"x-req": "set-value"},
                            "add": {"x-added": "a"},
                            "remove": ["x-drop"],
                        },
                        "response": {"set": {"x-resp": "r"}, "remove": ["x-upstream-name"]},
                    },
                    "route": [
                        {"destination": {"host": "app"}, "headers": {"request": {"set": {"x-dest": "d"}}}}
                    ],
                }
            ],
        ),
        _vs("timeout", [{"timeout": "0.5s", "route": _to("slow")}]),
        _vs("retry", [{"retries": {"attempts": 3, "retryOn": "5xx"}, "route": _to("flaky")}]),
        _vs("retry503", [{"retries": {"attempts": 3, "retryOn": "503"}, "route": _to("flaky")}]),
        _vs("noretry", [{"retries": {"attempts": 0}, "route": _to("flaky")}]),
        _vs(
            "fault",
            [{"fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}, "route": _to("app")}],
        ),
        _vs(
            "cors",
            [
                {
                    "corsPolicy": {
                        "allowOrigins": [{"exact": ALLOWED_ORIGIN}],
                        "allowMethods": ["GET", "POST"],
                        "allowHeaders": ["x-custom"],
                        "exposeHeaders": ["x-exposed"],
                        "maxAge": "24h",
                    },
                    "route": _to("app"),
                }
            ],
        ),
        _vs(
            "mirror",
            [{"route": _to("app"), "mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 100}}],
        ),
    ]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp = tmp_path_factory.mktemp("istio-http-features")
    config_dir = tmp / "manifests"
    config_dir.mkdir()
    with (
        PortReservation(1) as reserved,
        Http1OnlyServer(name="app") as app,
        Http1OnlyServer(name="shadow") as shadow,
        ScriptedServer("slow") as slow,
        ScriptedServer("flaky") as flaky,
    ):
        port = reserved.ports[0]
        real = {"app": app.port, "shadow": shadow.port, "slow": slow.port, "flaky": flaky.port}
        write_manifests(config_dir, manifests(port, real))
        with run_stack(tmp, config_dir, listener_ports=[port], reserved=reserved) as stack:
            wait_status(port, "direct.example.com", status=503)
            yield Web(stack=stack, port=port, app=app, shadow=shadow, slow=slow, flaky=flaky)


# -- matches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "rule"),
    [
        ("GET", "/casey/x", {}, "ignorecase"),
        ("GET", "/CaseY/x", {}, "ignorecase"),
        ("GET", "/items/12", {}, "regex"),
        ("GET", "/items/12/more", MODERN, "modern"),  # RE2 full match: the regex needs the whole path
        ("POST", "/anything", {}, "post"),
        ("GET", "/list?v=2", {}, "query"),
        ("GET", "/list?v=20", MODERN, "modern"),
        ("GET", "/", {"x-tenant": "blue-team"}, "header"),
        ("GET", "/", MODERN, "modern"),
        ("GET", "/", {"x-legacy": "1"}, "legacy"),
    ],
)
def test_match_kinds(web: Web, method: str, path: str, headers: dict[str, str], rule: str) -> None:
    response = web.get(
        "match.example.com", path, method=method, headers=headers, body=b"" if method == "POST" else None
    )
    assert (response.status, response.text) == (200, rule)


def test_without_headers_matches_a_request_missing_the_header(web: Web) -> None:
    response = web.get("match.example.com", "/")
    assert (response.status, response.text) == (200, "modern")


# -- redirect / directResponse -------------------------------------------------------------------


def test_redirect_uri_authority_and_code(web: Web) -> None:
    response = web.get("redirect.example.com", "/old")
    assert response.status == 308
    assert response.headers["location"] == "http://new.example.com/new"


def test_redirect_scheme_and_port(web: Web) -> None:
    response = web.get("redirect.example.com", "/secure/page?q=1")
    assert response.status == 301
    assert response.headers["location"] == "https://redirect.example.com:8443/secure/page?q=1"


def test_redirect_derive_port_from_request(web: Web) -> None:
    response = web.get("redirect.example.com", "/derive/x")
    assert response.status == 301
    assert response.headers["location"] == f"http://new.example.com:{web.port}/derive/x"


def test_direct_response(web: Web) -> None:
    response = web.get("direct.example.com", "/anything")
    assert (response.status, response.text) == (503, "maintenance\n")


# -- rewrite ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "seen_path", "seen_authority"),
    [
        ("/api/users?id=1", "/v2/users?id=1", "backend.internal"),
        ("/exact", "/replaced", "rewrite.example.com"),
        ("/users/42", "/u/42", "rewrite.example.com"),
    ],
)
def test_rewrite(web: Web, path: str, seen_path: str, seen_authority: str) -> None:
    response = web.get("rewrite.example.com", path)
    assert response.status == 200, response
    record = web.app.last_request
    assert record is not None
    assert (record.path, record.authority) == (seen_path, seen_authority)


# -- headers ------------------------------------------------------------------------------------


def test_header_operations(web: Web) -> None:
    response = web.get(
        "headers.example.com", "/h", headers={"x-drop": "secret", "x-added": "client", "x-req": "client"}
    )
    assert response.status == 200
    assert response.headers.get("x-resp") == "r"
    assert "x-upstream-name" not in response.headers
    record = web.app.last_request
    assert record is not None
    assert record.headers["x-req"] == "set-value"
    assert record.headers["x-added"] == "client, a"
    assert record.headers["x-dest"] == "d"
    assert "x-drop" not in record.headers


# -- timeout, retries, faults --------------------------------------------------------------------


def test_route_timeout(web: Web) -> None:
    web.slow.script([(200, 2.0)])
    started = time.monotonic()
    response = web.get("timeout.example.com", "/slow")
    elapsed = time.monotonic() - started
    assert response.status == 504, response
    assert elapsed < 1.9, elapsed
    assert web.get("timeout.example.com", "/fast").status == 200


def test_retries_on_5xx(web: Web) -> None:
    web.flaky.script([(503, 0), (500, 0)])
    response = web.get("retry.example.com", "/r")
    assert response.status == 200, response
    assert web.flaky.paths == ["/r", "/r", "/r"]


def test_retry_on_a_status_code_only(web: Web) -> None:
    web.flaky.script([(503, 0), (500, 0)])
    response = web.get("retry503.example.com", "/r")
    assert response.status == 500  # 503 retried, 500 not
    assert web.flaky.paths == ["/r", "/r"]


def test_zero_attempts_disables_retries(web: Web) -> None:
    web.flaky.script([(503, 0)])
    assert web.get("noretry.example.com", "/r").status == 503
    assert web.flaky.paths == ["/r"]


def test_fault_abort(web: Web) -> None:
    before = web.app.requests
    assert web.get("fault.example.com", "/f").status == 418
    assert web.app.requests == before


# -- CORS and mirroring --------------------------------------------------------------------------


def test_cors_preflight_allowed_origin(web: Web) -> None:
    headers = {
        "origin": ALLOWED_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-custom",
    }
    before = web.app.requests
    response = web.get("cors.example.com", "/c", method="OPTIONS", headers=headers)
    assert response.status == 200, response
    assert response.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    assert "POST" in response.headers.get("access-control-allow-methods", "")
    assert "x-custom" in response.headers.get("access-control-allow-headers", "")
    assert response.headers.get("access-control-max-age") == "86400"
    assert web.app.requests == before  # Envoy answered the preflight itself


def test_cors_simple_request_and_other_origins(web: Web) -> None:
    allowed = web.get("cors.example.com", "/c", headers={"origin": ALLOWED_ORIGIN})
    assert allowed.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    assert allowed.headers.get("access-control-expose-headers") == "x-exposed"
    other = web.get("cors.example.com", "/c", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_mirror(web: Web) -> None:
    before = web.shadow.requests
    response = web.get("mirror.example.com", "/m")
    assert response.status == 200
    assert response.headers["x-upstream-name"] == "app"
    wait_until(lambda: web.shadow.requests > before, timeout=5, what="the mirrored request")
    record = web.shadow.last_request
    assert record is not None
    assert record.path == "/m"
    assert record.authority == "mirror.example.com-shadow"
