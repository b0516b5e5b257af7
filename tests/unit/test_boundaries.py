"""Module boundaries (style.md, "meshxds conventions"): imports flow one way,
sources → model → translators → ir → xds; translators never import Envoy protos; ``ir.py``
imports nothing of ours; ``xds/cache.py`` knows no gRPC; only the server, admin and the test
harness touch transports. Inside ``translators/``, the frontends (``gatewayapi/``, ``istio/``,
``kgateway/``) stand on the shared modules beside them and never import each other (kgateway
extends Gateway API: the one allowed call), and build clusters only through ``upstream/``."""

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


# Frontends: each reads its own API group and meets the others only in the IR. kgateway extends
# Gateway API (its policies target Gateways, and apply to their listeners), so the Gateway API
# translator calls it; kgateway itself reads Gateway API objects from the model, never the translator.
_FRONTENDS = ("gatewayapi", "istio", "kgateway")
_FRONTEND_MAY_IMPORT = {"gatewayapi": {"kgateway"}, "istio": set(), "kgateway": set()}


@pytest.mark.parametrize(
    "path",
    [p for frontend in _FRONTENDS for p in modules(f"translators/{frontend}")],
    ids=lambda p: str(p.relative_to(PACKAGE / "translators")),
)
def test_frontends_never_import_each_other(path: Path) -> None:
    frontend = path.relative_to(PACKAGE / "translators").parts[0]
    others = set(_FRONTENDS) - {frontend} - _FRONTEND_MAY_IMPORT[frontend]
    bad = {m for m in imports_of(path) if m.split(".")[:3] in (["meshxds", "translators", o] for o in others)}
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


_SHARED = [*sorted((PACKAGE / "translators").glob("*.py")), *modules("translators/upstream")]


@pytest.mark.parametrize("path", _SHARED, ids=lambda p: str(p.relative_to(PACKAGE / "translators")))
def test_shared_translator_modules_import_no_frontend(path: Path) -> None:
    # translators/*.py (protocol, backends, listeners, ...) and the upstream layer serve every frontend.
    frontends = tuple(f"meshxds.translators.{f}" for f in _FRONTENDS)
    bad = {m for m in imports_of(path) if m.startswith(frontends)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["httproutes.py", "grpcroutes.py", "tcproutes.py", "precedence.py"])
def test_route_kinds_compile_without_the_phases(module: str) -> None:
    # A route is compiled once, whatever listeners it attaches to (and reused across runs), so
    # the route-kind modules never see a run's listeners, attachments or status.
    ours = {m for m in imports_of(PACKAGE / "translators" / "gatewayapi" / module) if m.startswith("meshxds")}
    inside = {m for m in ours if m.startswith("meshxds.translators.gatewayapi")}
    allowed = {"meshxds.translators.gatewayapi.httproutes", "meshxds.translators.gatewayapi.precedence"}
    assert inside <= allowed, sorted(inside - allowed)


def _constructs_cluster(node: ast.AST) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    return (isinstance(func, ast.Attribute) and func.attr == "Cluster") or (
        isinstance(func, ast.Name) and func.id == "Cluster"
    )


@pytest.mark.parametrize(
    "path", modules("translators"), ids=lambda p: str(p.relative_to(PACKAGE / "translators"))
)
def test_clusters_are_built_only_by_the_upstream_layer(path: Path) -> None:
    # Every frontend calls upstream.build_cluster with its own policy, so what a cluster is
    # (discovery, protocol and its reason, endpoint key) is decided once.
    if path == PACKAGE / "translators" / "upstream" / "clusters.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = [n.lineno for n in ast.walk(tree) if _constructs_cluster(n)]
    assert not lines, f"{path.relative_to(PACKAGE)} constructs ir.Cluster at lines {lines}"
