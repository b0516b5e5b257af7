"""Istio translation, golden: ``tests/golden/istio/<case>.in.yaml`` → ``<case>.out.yaml``.

Istio config depends on the proxy, so each case is translated for every Istio Gateway's
selector (a proxy in the Gateway's namespace with exactly those labels) and for a sidecar in
every namespace that holds a VirtualService; errors and warnings as ``meshxds validate`` sees
them. Every configuration is also checked by the real Envoy (``envoy --mode validate``).
``MESHXDS_UPDATE_GOLDEN=1`` rewrites outputs and deletes stale ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshxds.conditions import Level
from meshxds.identity import ProxyIdentity
from meshxds.model import istio
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.testing.envoy_validate import envoy_validate, with_test_certificates
from meshxds.testing.golden import check_golden, stale_outputs, to_plain
from meshxds.translators.istio import IstioTranslator

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "istio"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml"))
CASE_NAME = re.compile(r"(gateway|virtualservice|destinationrule|serviceentry|sidecar)(-[a-z0-9]+){2,}")


def translator(case: str) -> IstioTranslator:
    text = (GOLDEN / f"{case}.in.yaml").read_text(encoding="utf-8")
    docs = [
        SourcedDocument(path=f"{case}.in.yaml", index=i, body=b)
        for i, b in enumerate(yaml.safe_load_all(text))
    ]
    return IstioTranslator(parse_documents(docs))


def identities(t: IstioTranslator) -> dict[str, ProxyIdentity]:
    out = {
        f"gateway {g.namespace}/{g.name}": ProxyIdentity.of(namespace=g.namespace, labels=g.spec.selector)
        for g in t.resources.all(istio.Gateway)
    }
    for ns in sorted({vs.namespace for vs in t.resources.all(istio.VirtualService)} | {"default"}):
        out[f"sidecar {ns}"] = ProxyIdentity.of(namespace=ns, labels={"app": "client"})
    return out


def translate_case(case: str) -> dict[str, Any]:
    t = translator(case)
    messages = t.check()
    proxies = {
        name: to_plain(t.config_for(identity, sidecar=True).config)
        for name, identity in identities(t).items()
    }
    # As meshxds has always printed them (``str``): the records' types are unit-tested.
    errors = [str(m) for m in messages if m.level is Level.ERROR]
    warnings = [str(m) for m in messages if m.level is Level.WARNING]
    return {"proxies": proxies, "errors": errors, "warnings": warnings}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_golden(GOLDEN / f"{case}.out.yaml", translate_case(case))


@pytest.mark.parametrize("case", CASES)
def test_real_envoy_accepts_every_proxy_config(case: str, tmp_path: Path) -> None:
    t = translator(case)
    for name, identity in identities(t).items():
        config = t.config_for(identity, sidecar=True).config
        assert config.validate() == [], name
        result = envoy_validate(with_test_certificates(config, tmp_path), tmp_path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("case", CASES)
def test_case_names_are_kind_feature_variant(case: str) -> None:
    assert CASE_NAME.fullmatch(case), f"{case}: name cases <kind>-<feature>-<variant>"


def test_no_stale_outputs() -> None:
    assert stale_outputs(GOLDEN) == []
