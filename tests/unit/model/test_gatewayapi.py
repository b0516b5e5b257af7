"""Gateway API models: the CRDs' validation rules that parsing enforces."""

from __future__ import annotations

from typing import Any

import pytest

from meshxds.errors import ManifestErrors
from meshxds.model import gatewayapi
from meshxds.model.manifests import SourcedDocument, parse_documents


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
