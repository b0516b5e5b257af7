"""IR → Envoy, golden: ``tests/golden/xds/<case>.ir.yaml`` (one proxy's ``ir.ProxyConfig``, in
the form the manifest goldens print it) → ``<case>.{listeners,routes,clusters,endpoints,secrets}.yaml``.

Each output is one type's resources as ``meshxds translate`` prints them (Envoy's JSON form of
the protos, sorted by name), but unredacted, as YAML with sorted keys; a type with no resource
has no file. Covers ``xds/resources.py`` and the HTTP filter registry ``xds/filters/``. Every case is
also loaded by the real Envoy (``envoy --mode validate``, SDS secrets replaced by test ones).
``MESHXDS_UPDATE_GOLDEN=1`` rewrites outputs and deletes stale ones; review the diff.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from meshxds import ir
from meshxds.testing.envoy_validate import envoy_validate, with_test_certificates
from meshxds.testing.golden import UPDATE, check_golden, load_ir, stale_outputs
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET, Snapshot
from meshxds.xds.resources import build_resources

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "xds"
CASES = sorted(p.name.removesuffix(".ir.yaml") for p in GOLDEN.glob("*.ir.yaml"))
SECTIONS = {
    "listeners": TYPE_LISTENER,
    "routes": TYPE_ROUTE,
    "clusters": TYPE_CLUSTER,
    "endpoints": TYPE_ENDPOINT,
    "secrets": TYPE_SECRET,
}
CASE_NAME = re.compile(r"(listener|route|cluster|endpoint|secret)(-[a-z0-9]+){2,}")


def config_of(case: str) -> ir.ProxyConfig:
    return load_ir(GOLDEN / f"{case}.ir.yaml")


def xds_of(config: ir.ProxyConfig) -> dict[str, list[dict[str, Any]]]:
    """Each type's resources as Envoy's JSON form, sorted by name, after checking that no
    EDS/RDS/SDS name dangles. Unlike ``meshxds translate``, nothing is redacted: golden inputs
    hold placeholders, never key material, and a key file's path is part of what is pinned."""
    resources = build_resources(config)
    Snapshot.from_messages(resources).check_consistent()
    return {
        section: [
            json_format.MessageToDict(message, preserving_proto_field_name=True)
            for _, message in sorted(resources[type_url], key=lambda pair: pair[0])
        ]
        for section, type_url in SECTIONS.items()
    }


def test_there_are_cases() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    config = config_of(case)
    assert config.validate() == [], f"{case}.ir.yaml breaks an IR invariant"
    for section, resources in xds_of(config).items():
        path = GOLDEN / f"{case}.{section}.yaml"
        if resources:
            check_golden(path, resources, sort_keys=True)
        elif UPDATE:
            path.unlink(missing_ok=True)
        else:
            assert not path.exists(), (
                f"{path.name}: no {section} any more (MESHXDS_UPDATE_GOLDEN=1 deletes it)"
            )


@pytest.mark.parametrize("case", CASES)
def test_real_envoy_accepts(case: str, tmp_path: Path) -> None:
    result = envoy_validate(with_test_certificates(config_of(case), tmp_path), tmp_path)
    assert result.returncode == 0, f"{case}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("case", CASES)
def test_case_names_are_kind_feature_variant(case: str) -> None:
    assert CASE_NAME.fullmatch(case), f"{case}: name cases <kind>-<feature>-<variant>"


def test_no_stale_outputs() -> None:
    outputs = [f".{section}.yaml" for section in SECTIONS]
    stale = stale_outputs(GOLDEN, inputs=".ir.yaml", outputs=outputs)
    assert stale == [], "outputs without an input (MESHXDS_UPDATE_GOLDEN=1 deletes them)"


def test_every_file_is_a_case_input_or_output() -> None:
    """A misnamed input (``.ir.yml``, ``.in.yaml``) would silently be no case at all."""
    suffixes = (".ir.yaml", *(f".{section}.yaml" for section in SECTIONS))
    strays = sorted(p.name for p in GOLDEN.iterdir() if not p.name.endswith(suffixes))
    assert strays == []
