"""Module boundaries (style.md, "meshxds conventions"): imports flow one way,
sources → model → translators → ir → xds; translators never import Envoy protos; ``ir.py``
imports nothing of ours; ``xds/cache.py`` knows no gRPC; only the server, admin and the test
harness touch transports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "meshxds"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else [PACKAGE / "ir.py"]


def test_ir_imports_nothing_of_ours() -> None:
    assert not {m for m in imports_of(PACKAGE / "ir.py") if m.startswith("meshxds")}


@pytest.mark.parametrize("path", modules("translators"), ids=lambda p: p.name)
def test_translators_never_import_envoy_or_transports(path: Path) -> None:
    bad = {m for m in imports_of(path) if m.split(".")[0] in ("envoy", "grpc", "xds", "udpa")}
    bad |= {m for m in imports_of(path) if m.startswith(("meshxds.xds", "meshxds.sources", "meshxds.serve"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("model"), ids=lambda p: p.name)
def test_model_imports_only_model_and_errors(path: Path) -> None:
    ours = {m for m in imports_of(path) if m.startswith("meshxds")}
    assert all(m.startswith(("meshxds.model", "meshxds.errors")) for m in ours), sorted(ours)


def test_cache_knows_no_grpc() -> None:
    assert not {m for m in imports_of(PACKAGE / "xds" / "cache.py") if m.split(".")[0] == "grpc"}


@pytest.mark.parametrize(
    "path",
    [p for p in PACKAGE.rglob("*.py") if "testing" not in p.parts],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_server_admin_and_sources_open_transports(path: Path) -> None:
    if path.name in ("server.py", "admin.py", "cli.py") or "sources" in path.parts:
        return
    transports = {m for m in imports_of(path) if m.split(".")[0] in ("grpc", "http", "urllib", "aiohttp")}
    assert not transports, f"{path.relative_to(PACKAGE)} imports {sorted(transports)}"


@pytest.mark.parametrize(
    "path",
    [p for p in PACKAGE.rglob("*.py") if not {"xds", "testing"} & set(p.relative_to(PACKAGE).parts)],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_xds_speaks_envoy_protos(path: Path) -> None:
    protos = {m for m in imports_of(path) if m.split(".")[0] in ("envoy", "xds", "udpa", "validate")}
    assert not protos, f"{path.relative_to(PACKAGE)} imports {sorted(protos)}"


@pytest.mark.parametrize("path", modules("xds/filters"), ids=lambda p: p.name)
def test_http_filters_know_the_registry_and_ir_only(path: Path) -> None:
    # A filter is a module of the registry: it never reaches back into resources.py or the cache.
    ours = {m for m in imports_of(path) if m.startswith("meshxds")}
    allowed = ("meshxds.ir", "meshxds.xds.filters", "meshxds.xds.values")
    assert all(m == "meshxds" or m.startswith(allowed) for m in ours), sorted(ours)


@pytest.mark.parametrize("path", modules("sources"), ids=lambda p: p.name)
def test_sources_never_import_translators(path: Path) -> None:
    # What sources share with translators (status conditions, the controller name) lives in
    # meshxds.conditions and meshxds.options, below both.
    bad = {
        m
        for m in imports_of(path)
        if m.startswith(("meshxds.translators", "meshxds.xds", "meshxds.pipeline"))
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["conditions.py", "options.py"])
def test_shared_modules_import_nothing_above_them(module: str) -> None:
    ours = {m for m in imports_of(PACKAGE / module) if m.startswith("meshxds")}
    assert ours <= {"meshxds", "meshxds.names"}, sorted(ours)
