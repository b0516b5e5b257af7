"""Gateway API translation, golden: ``tests/golden/gatewayapi/<case>.in.yaml`` (manifests) →
``<case>.out.yaml`` (per Gateway ``ns/name`` its IR ProxyConfig, plus statuses and warnings).

Covers ``translators/gatewayapi/`` (every phase and route kind), ``translators/kgateway/`` and
``backends.py``. Review every rewritten output; ``MESHXDS_UPDATE_GOLDEN=1`` rewrites them and
deletes stale ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.testing.golden import check_golden, stale_outputs, to_plain
from meshxds.translators.gatewayapi import GatewayAPIResult, translate_gateway_api

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "gatewayapi"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml"))
KINDS = (
    "gatewayclass|gateway|httproute|grpcroute|service|endpointslice|referencegrant|backend|httplistenerpolicy"
    "|listenerpolicy|backendtlspolicy|trafficpolicy"
)
CASE_NAME = re.compile(rf"({KINDS})(-[a-z0-9]+){{2,}}")


def documents(case: str) -> list[SourcedDocument]:
    text = (GOLDEN / f"{case}.in.yaml").read_text(encoding="utf-8")
    bodies = yaml.safe_load_all(text)
    return [SourcedDocument(path=f"{case}.in.yaml", index=i, body=body) for i, body in enumerate(bodies)]


def translate(docs: list[SourcedDocument]) -> GatewayAPIResult:
    return translate_gateway_api(parse_documents(docs))


def as_plain(result: GatewayAPIResult) -> dict[str, Any]:
    return {
        "gateways": {f"{ns}/{n}": to_plain(config) for (ns, n), config in sorted(result.gateways.items())},
        "statuses": [s.as_dict() for s in result.statuses],
        "warnings": list(result.warnings),
    }


def test_there_are_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    result = translate(documents(case))
    for key, config in result.gateways.items():
        assert config.validate() == [], f"the IR of {key} breaks an invariant"
    check_golden(GOLDEN / f"{case}.out.yaml", as_plain(result))


@pytest.mark.parametrize("case", CASES)
def test_output_does_not_depend_on_document_order(case: str) -> None:
    docs = documents(case)
    shuffled = [SourcedDocument(path=d.path, index=d.index, body=d.body) for d in reversed(docs)]
    assert as_plain(translate(shuffled)) == as_plain(translate(docs))


@pytest.mark.parametrize("case", CASES)
def test_case_names_are_kind_feature_variant(case: str) -> None:
    assert CASE_NAME.fullmatch(case), f"{case}: name cases <kind>-<feature>-<variant>"


def test_no_stale_outputs() -> None:
    assert stale_outputs(GOLDEN) == [], "outputs without an input (MESHXDS_UPDATE_GOLDEN=1 deletes them)"
