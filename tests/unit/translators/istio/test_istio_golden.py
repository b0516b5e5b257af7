"""Istio translation, golden: ``tests/golden/istio/<case>.in.yaml`` → ``<case>.out.yaml``.

Istio config depends on the proxy, so each case is translated for every Istio Gateway's
selector (a proxy in the Gateway's namespace with exactly those labels) and for a sidecar in
every namespace that holds a VirtualService; errors and warnings as ``meshxds validate`` sees
them. Every configuration is also checked by the real Envoy (``envoy --mode validate``).
``MESHXDS_UPDATE_GOLDEN=1`` rewrites outputs and deletes stale ones.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from golden_support import check_golden, stale_outputs, to_plain

from meshxds import ir
from meshxds.identity import ProxyIdentity
from meshxds.model import istio
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.testing.certs import issue, make_ca, write_pem_files
from meshxds.testing.envoy_validate import envoy_validate
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
    errors, warnings = t.check()
    proxies = {
        name: to_plain(t.config_for(identity, sidecar=True).config)
        for name, identity in identities(t).items()
    }
    return {"proxies": proxies, "errors": errors, "warnings": warnings}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_golden(GOLDEN / f"{case}.out.yaml", translate_case(case))


def with_real_files(config: ir.ProxyConfig, tmp_path: Path) -> ir.ProxyConfig:
    """File-based certificates live on the proxy; for validation, point them at real test files."""
    ca = make_ca()
    cert = issue(ca, ["*.example.com"])
    chain, key = write_pem_files(tmp_path, "server", cert)
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.cert_pem)

    def fix_chain(chain_: ir.FilterChain) -> ir.FilterChain:
        if chain_.tls is None:
            return chain_
        tls = replace(
            chain_.tls,
            certificate_files=tuple((str(chain), str(key)) for _ in chain_.tls.certificate_files),
            ca_file=str(ca_path) if chain_.tls.ca_file else None,
        )
        return replace(chain_, tls=tls)

    def fix_cluster(cluster: ir.Cluster) -> ir.Cluster:
        tls = cluster.upstream_tls
        if tls is None:
            return cluster
        return replace(
            cluster,
            upstream_tls=replace(
                tls,
                ca_file=str(ca_path) if tls.ca_file else None,
                client_cert_file=str(chain) if tls.client_cert_file else None,
                client_key_file=str(key) if tls.client_key_file else None,
            ),
        )

    listeners = tuple(
        replace(lis, chains=tuple(fix_chain(c) for c in lis.chains)) for lis in config.listeners
    )
    return replace(config, listeners=listeners, clusters=tuple(fix_cluster(c) for c in config.clusters))


@pytest.mark.parametrize("case", CASES)
def test_real_envoy_accepts_every_proxy_config(case: str, tmp_path: Path) -> None:
    t = translator(case)
    for name, identity in identities(t).items():
        config = t.config_for(identity, sidecar=True).config
        assert config.validate() == [], name
        result = envoy_validate(with_real_files(config, tmp_path), tmp_path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("case", CASES)
def test_case_names_are_kind_feature_variant(case: str) -> None:
    assert CASE_NAME.fullmatch(case), f"{case}: name cases <kind>-<feature>-<variant>"


def test_no_stale_outputs() -> None:
    assert stale_outputs(GOLDEN) == []
