"""Gateway API models: the CRDs' validation rules that parsing enforces (HTTPRoute timeouts,
the ``CORS`` filter of GEP-1767); a mistake is an error naming file, object and field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshxds.errors import ManifestError, ManifestErrors
from meshxds.model import gatewayapi
from meshxds.model.manifests import SourcedDocument, parse_documents

CORS: dict[str, Any] = {
    "allowOrigins": ["https://www.foo.com", "https://*.bar.com", "http://*:8080"],
    "allowMethods": ["GET", "OPTIONS"],
    "allowHeaders": ["x-header-1", "content-type"],
    "exposeHeaders": ["grpc-status"],
    "allowCredentials": True,
    "maxAge": 3600,
}


def route(filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "cors", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"filters": filters, "backendRefs": [{"name": "web", "port": 80}]}],
        },
    }


def only_error(body: dict[str, Any]) -> ManifestError:
    with pytest.raises(ManifestErrors) as info:
        parse_documents([SourcedDocument(path="routes.yaml", index=0, body=body)])
    (error,) = info.value.errors
    return error


def test_cors_filter_fields() -> None:
    resources = parse_documents(
        [SourcedDocument(path="r.yaml", index=0, body=route([{"type": "CORS", "cors": CORS}]))]
    )
    assert resources.warnings == ()
    parsed = resources.get(gatewayapi.HTTPRoute, "default", "cors")
    assert parsed is not None
    cors = parsed.spec.rules[0].filters[0].cors
    assert cors == gatewayapi.HTTPCORSFilter(
        allow_origins=["https://www.foo.com", "https://*.bar.com", "http://*:8080"],
        allow_methods=["GET", "OPTIONS"],
        allow_headers=["x-header-1", "content-type"],
        expose_headers=["grpc-status"],
        allow_credentials=True,
        max_age=3600,
    )


def test_cors_max_age_defaults_to_five_seconds_as_the_api_server_sets_it() -> None:
    cors = gatewayapi.HTTPCORSFilter.model_validate({"allowOrigins": ["*"]})
    assert (cors.max_age, cors.allow_credentials, cors.allow_methods) == (5, None, [])


def with_cors(**changes: Any) -> dict[str, Any]:
    cors = copy.deepcopy(CORS)
    cors.update(changes)
    return route([{"type": "CORS", "cors": cors}])


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        pytest.param(
            with_cors(allowOrigins=["https://a.*.com"]),
            "spec.rules[0].filters[0].cors.allowOrigins[0]",
            "pattern",
            id="wildcard-inside-the-host",
        ),
        pytest.param(
            with_cors(allowOrigins=["https://a.com/app"]),
            "spec.rules[0].filters[0].cors.allowOrigins[0]",
            "pattern",
            id="origin-with-a-path",
        ),
        pytest.param(
            with_cors(allowOrigins=["ftp://a.com"]),
            "spec.rules[0].filters[0].cors.allowOrigins[0]",
            "pattern",
            id="origin-scheme-not-http",
        ),
        pytest.param(
            with_cors(allowOrigins=["*", "https://a.com"]),
            "spec.rules[0].filters[0].cors.allowOrigins",
            "'*' cannot be listed alongside",
            id="any-origin-beside-another",
        ),
        pytest.param(
            with_cors(allowMethods=["*", "GET"]),
            "spec.rules[0].filters[0].cors.allowMethods",
            "'*' cannot be listed alongside",
            id="any-method-beside-another",
        ),
        pytest.param(
            with_cors(allowMethods=["get"]),
            "spec.rules[0].filters[0].cors.allowMethods[0]",
            "'GET'",
            id="method-is-case-sensitive",
        ),
        pytest.param(
            with_cors(allowHeaders=["x-a", "x-a"]),
            "spec.rules[0].filters[0].cors.allowHeaders",
            "listed twice",
            id="headers-are-a-set",
        ),
        pytest.param(
            with_cors(exposeHeaders=["bad header"]),
            "spec.rules[0].filters[0].cors.exposeHeaders[0]",
            "pattern",
            id="header-name-not-a-token",
        ),
        pytest.param(
            with_cors(maxAge=0),
            "spec.rules[0].filters[0].cors.maxAge",
            "greater than or equal to 1",
            id="max-age-below-one",
        ),
        pytest.param(
            with_cors(allowOrigins=[f"https://h{i}.com" for i in range(65)]),
            "spec.rules[0].filters[0].cors.allowOrigins",
            "at most 64",
            id="too-many-origins",
        ),
        pytest.param(
            route([{"type": "CORS"}]),
            "spec.rules[0].filters[0]",
            "cors must be set for a filter of type CORS",
            id="cors-type-without-config",
        ),
        pytest.param(
            route([{"type": "RequestHeaderModifier", "requestHeaderModifier": {}, "cors": CORS}]),
            "spec.rules[0].filters[0]",
            "cors must not be set for a filter of type RequestHeaderModifier",
            id="cors-config-on-another-type",
        ),
        pytest.param(
            route([{"type": "CORS", "cors": CORS}, {"type": "CORS", "cors": CORS}]),
            "spec.rules[0].filters",
            "cannot be repeated",
            id="cors-filter-twice",
        ),
    ],
)
def test_bad_cors_filter_is_an_error_naming_the_field(body: dict[str, Any], field: str, words: str) -> None:
    error = only_error(body)
    assert (error.path, error.ref, error.field_path) == ("routes.yaml", "HTTPRoute/default/cors", field)
    assert words in error.message


# --- timeouts --------------------------------------------------------------------------------------


def http_route(timeouts: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "slow", "namespace": "default"},
        "spec": {"rules": [{"timeouts": timeouts, "backendRefs": [{"name": "web", "port": 80}]}]},
    }


@pytest.mark.parametrize(
    "timeouts",
    [
        {"request": "10s", "backendRequest": "10s"},
        {"request": "1m", "backendRequest": "59s"},
        {"request": "0s", "backendRequest": "1h"},
        {"backendRequest": "1h"},
        {"request": "200ms"},
        {"request": "1.5s", "backendRequest": "1s"},
    ],
    ids=[
        "equal-is-allowed",
        "shorter-is-allowed",
        "request-0s-has-no-limit",
        "backend-request-alone",
        "request-alone",
        "malformed-left-to-the-translator",
    ],
)
def test_timeouts_the_crd_accepts_parse(timeouts: dict[str, str]) -> None:
    (route,) = parse_documents([SourcedDocument(path="r.yaml", index=0, body=http_route(timeouts))]).all(
        gatewayapi.HTTPRoute
    )
    assert route.spec.rules[0].timeouts is not None


def test_backend_request_longer_than_request_is_refused_as_the_crd_does() -> None:
    body = http_route({"request": "200ms", "backendRequest": "1s"})
    with pytest.raises(ManifestErrors) as info:
        parse_documents([SourcedDocument(path="r.yaml", index=0, body=body)])
    (error,) = info.value.errors
    assert "backendRequest timeout cannot be longer than request timeout" in str(error)
    assert "spec.rules[0].timeouts" in str(error)


@pytest.mark.parametrize(("value", "seconds"), [("1h", 3600.0), ("500ms", 0.5), ("1m30s", 90.0), ("0s", 0.0)])
def test_parse_duration(value: str, seconds: float) -> None:
    assert gatewayapi.parse_duration(value) == seconds


# --- retry (GEP-1731) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "words"),
    [
        ({"codes": [399]}, "greater than or equal to 400"),
        ({"codes": [600]}, "less than or equal to 599"),
        ({"codes": [503, 503]}, "must not repeat"),
        ({"attempts": -1}, "greater than or equal to 0"),
        ({"backoff": "1.5s"}, "pattern"),
    ],
)
def test_a_retry_the_crd_refuses_is_an_error(retry: dict[str, Any], words: str) -> None:
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"rules": [{"retry": retry, "backendRefs": [{"name": "web", "port": 80}]}]},
    }
    with pytest.raises(ManifestErrors) as caught:
        parse_documents([SourcedDocument(path="r.yaml", index=0, body=body)])
    (error,) = caught.value.errors
    assert "spec.rules[0].retry" in str(error) and words in str(error), str(error)
