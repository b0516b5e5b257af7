"""The committed code in meshxds/testing/_generated is exactly what protos/build.py generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protos_build", REPO / "protos" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path: Path) -> None:
    build = _load_build()
    fresh = build.build(tmp_path)
    committed = build.generated_files(build.DEFAULT_OUT)
    assert [p.name for p in fresh] == [p.name for p in committed]
    stale = [c.name for f, c in zip(fresh, committed, strict=True) if f.read_bytes() != c.read_bytes()]
    assert not stale, f"regenerate with `python protos/build.py`: {stale} differ"


def test_generated_grpc_module_imports_inside_the_package() -> None:
    from meshxds.testing._generated import echo_pb2, echo_pb2_grpc

    assert echo_pb2_grpc.echo__pb2 is echo_pb2
    assert echo_pb2.DESCRIPTOR.package == "meshxds.echo.v1"
    assert "Echo" in echo_pb2.DESCRIPTOR.services_by_name


@pytest.mark.parametrize("field", ["message", "upstream", "metadata"])
def test_echo_response_fields(field: str) -> None:
    from meshxds.testing._generated import echo_pb2

    assert field in echo_pb2.EchoResponse.DESCRIPTOR.fields_by_name
