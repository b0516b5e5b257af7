"""HTTPRoute rule timeouts (GEP-1742) and the streaming-safe defaults for HTTP/2 backends."""

from __future__ import annotations

import pytest

from meshxds.translators.gatewayapi.httproutes import route_timeouts


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
