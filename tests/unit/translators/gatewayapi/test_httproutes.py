"""HTTPRoute rule timeouts (GEP-1742) and the streaming-safe defaults for HTTP/2 backends."""

from __future__ import annotations

import pytest

from meshxds import ir
from meshxds.model import gatewayapi
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.translators.backends import BackendIndex
from meshxds.translators.gatewayapi.httproutes import (
    DEFAULT_RETRY_ATTEMPTS,
    compile_http_route,
    route_timeouts,
)


@pytest.mark.parametrize(
    ("request_s", "http2", "expected"),
    [
        (None, False, (None, None)),
        (5.0, False, (5.0, None)),
        (None, True, (0.0, 0.0)),
        (5.0, True, (5.0, 5.0)),
        (0.0, True, (0.0, 0.0)),
    ],
    ids=[
        "http1-unset-keeps-envoys-default",
        "http1-request-is-the-route-timeout",
        "http2-unset-has-no-limit-and-honours-grpc-timeout",
        "http2-request-caps-grpc-timeout",
        "http2-request-0s-no-limit-no-cap",
    ],
)
def test_route_timeouts(
    request_s: float | None, http2: bool, expected: tuple[float | None, float | None]
) -> None:
    assert route_timeouts(request_s, http2=http2) == expected


# --- retry (GEP-1731) ---------------------------------------------------------------------------


def _retries(
    retry: dict[str, object] | None, timeouts: dict[str, str] | None = None
) -> ir.RetryPolicy | None:
    rule: dict[str, object] = {"backendRefs": [{"name": "web", "port": 80}]}
    if retry is not None:
        rule["retry"] = retry
    if timeouts is not None:
        rule["timeouts"] = timeouts
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"rules": [rule]},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }
    resources = parse_documents(
        SourcedDocument(path="r.yaml", index=i, body=b) for i, b in enumerate((body, service))
    )
    compiled = compile_http_route(
        resources.all(gatewayapi.HTTPRoute)[0], backends=BackendIndex(resources=resources)
    )
    return compiled.routes[0].route.retries


def test_a_retry_stanza_becomes_envoys_retry_policy() -> None:
    policy = _retries({"codes": [504, 503], "attempts": 3, "backoff": "100ms"}, {"backendRequest": "2s"})
    assert policy == ir.RetryPolicy(
        attempts=3,
        per_try_timeout_s=2.0,
        retry_on="connect-failure,refused-stream,reset,unavailable,retriable-status-codes",
        retriable_status_codes=(503, 504),
        backoff_base_s=0.1,
    )


def test_retry_defaults_zero_attempts_and_no_stanza() -> None:
    default = _retries({})
    assert default is not None and default.attempts == DEFAULT_RETRY_ATTEMPTS
    # No codes: connection errors only, no status is retried.
    assert default.retry_on == "connect-failure,refused-stream,reset,unavailable"
    assert _retries({"attempts": 0, "codes": [503]}) is None  # an explicit zero disables retries
    off = _retries({"attempts": 0}, {"backendRequest": "1s"})
    assert off is not None and (off.attempts, off.per_try_timeout_s) == (0, 1.0)  # the try stays bounded
    assert _retries(None) is None
    immediate = _retries({"backoff": "0s"})
    assert immediate is not None and immediate.backoff_base_s == 0.001  # Envoy's base must be above 0
