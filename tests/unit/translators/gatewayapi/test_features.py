"""GatewayClass ``status.supportedFeatures``: the v1 CRD's shape, and every listed feature backed by
an end-to-end test that exists (renaming or deleting that test fails here) and by the README table."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from meshxds.translators.gatewayapi.features import SUPPORTED_FEATURES, Feature, supported_features

ROOT = Path(__file__).resolve().parents[4]
# gateway-api pkg/features: a FeatureName is an UpperCamelCase word, digits allowed (HTTPRoute303...).
FEATURE_NAME = re.compile(r"[A-Z][A-Za-z0-9]+")


@cache
def functions_in(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    )


def test_shape_is_the_v1_crds_list_map_sorted_by_name() -> None:
    features = supported_features()
    assert all(set(entry) == {"name"} for entry in features)
    names = [entry["name"] for entry in features]
    assert names == sorted(names), "the CRD: MUST be sorted in ascending alphabetical order by name"
    assert len(names) == len(set(names)) <= 64  # listMapKey=name; maxItems=64
    assert {"Gateway", "HTTPRoute"} <= set(names), "the core of the GATEWAY-HTTP profile"


@pytest.mark.parametrize("feature", SUPPORTED_FEATURES, ids=lambda f: f.name)
def test_every_feature_names_an_end_to_end_test_that_exists(feature: Feature) -> None:
    assert FEATURE_NAME.fullmatch(feature.name)
    path, sep, function = feature.test.partition("::")
    assert sep and path.startswith("tests/integration/"), f"{feature.name}: not an end-to-end test"
    assert (ROOT / path).is_file(), f"{feature.name}: {path} does not exist"
    assert function in functions_in(path), f"{feature.name}: {path} has no {function}"


def test_readme_table_lists_exactly_the_features_with_their_tests() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^ *\| `([A-Za-z0-9]+)` \| `([^`]+)` \|$", readme, flags=re.MULTILINE))
    assert rows == {f.name: f.test.removeprefix("tests/integration/") for f in SUPPORTED_FEATURES}
