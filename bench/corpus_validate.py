"""Run meshxds over a corpus of real inputs nobody here wrote, and have Envoy judge the output
(issue 10 finding 5).

    # the inputs come from the `fetch` tool (git mirrors), not from CI:
    #   github:envoyproxy/gateway -> /work/.mirror/envoyproxy+gateway/repo
    #   github:istio/istio        -> /work/.mirror/istio+istio/repo
    .venv/bin/python bench/corpus_validate.py \\
        /work/.mirror/envoyproxy+gateway/repo::internal/gatewayapi/testdata \\
        /work/.mirror/istio+istio/repo::pilot/pkg/config/kube/gateway/testdata \\
        /work/.mirror/istio+istio/repo::tests/testdata/config \\
        /work/.mirror/istio+istio/repo::pilot/pkg/xds/testdata \\
        /work/.mirror/istio+istio/repo::pkg/config/analysis/analyzers/testdata \\
        --work /tmp/corpus --jobs 2

A SOURCE is a directory, or ``GIT_DIR::TREE_PATH`` (read from ``HEAD`` of a bare mirror). Every
``*.yaml``/``*.yml`` below it is one input; outputs (``*.golden``, ``*.out.yaml``) and Go
templates are skipped. Envoy Gateway's ``*.in.yaml`` files are not manifests but a struct of
lists (``gateways:``, ``httpRoutes:``, ...): each becomes a multi-document manifest, with the
fixtures its test harness adds (``service-1..4``, ``mirror-service`` and their EndpointSlices).
GatewayClasses of the projects' default classes (``envoy-gateway-class``, ``istio``, ...) are
given meshxds's controller name, or added when the input relies on the harness for them.

Each input is read as ``meshxds serve`` reads a directory (each object validated on its own,
an invalid one reported and skipped), translated, and every proxy identity's snapshot (each
Gateway API and Istio Gateway, plus a sidecar) is built and checked by ``envoy --mode
validate``, at most ``--jobs`` inputs at once, each in a forked child bounded by ``--timeout``.
Classes, worst first: ``crashed`` (a traceback: a bug), ``envoy-rejected`` (meshxds built a
snapshot that Envoy rejects: a bug, as it would be a NACK), ``timeout``, ``refused`` (some object
or snapshot refused with a clear error or a False status condition; all that was built passed
Envoy), ``accepted-valid``, ``nothing-to-translate`` (no kind meshxds reads). Inputs naming
certificate files on the proxy's disk are validated with generated stand-ins in their place.
Exit 1 when anything crashed or was rejected.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

from meshxds.options import CONTROLLER_NAME

# Envoy Gateway's struct keys → the (apiVersion, kind) of their items, for items that omit them.
EG_KINDS: dict[str, tuple[str, str]] = {
    "gatewayclass": ("gateway.networking.k8s.io/v1", "GatewayClass"),
    "gateways": ("gateway.networking.k8s.io/v1", "Gateway"),
    "httproutes": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    "grpcroutes": ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    "tcproutes": ("gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
    "tlsroutes": ("gateway.networking.k8s.io/v1alpha2", "TLSRoute"),
    "udproutes": ("gateway.networking.k8s.io/v1alpha2", "UDPRoute"),
    "referencegrants": ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
    "backendtlspolicies": ("gateway.networking.k8s.io/v1", "BackendTLSPolicy"),
    "services": ("v1", "Service"),
    "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice"),
    "secrets": ("v1", "Secret"),
    "configmaps": ("v1", "ConfigMap"),
    "namespaces": ("v1", "Namespace"),
}
# The classes the projects' test harnesses provide: their Gateways are meant to be programmed.
DEFAULT_CLASSES = {
    "envoy-gateway-class": "gateway.envoyproxy.io/gatewayclass-controller",
    "istio": "istio.io/gateway-controller",
    "istio-remote": "istio.io/unmanaged-gateway",
    "istio-waypoint": "istio.io/mesh-controller",
    "istio-east-west": "istio.io/eastwest-controller",
}
CLASSES = ("crashed", "envoy-rejected", "timeout", "refused", "accepted-valid", "nothing-to-translate")


@dataclass(slots=True)
class Outcome:
    """What one input did."""

    name: str
    verdict: str = "accepted-valid"
    objects: int = 0
    identities: int = 0
    envoy_runs: int = 0
    errors: list[str] = field(default_factory=list)
    """meshxds's clear errors: invalid objects, translation errors, refused snapshots."""
    warnings: int = 0
    rejections: list[str] = field(default_factory=list)
    """``owner: reported|silent: Envoy's message`` for each snapshot Envoy rejected."""
    crash: str = ""
    proxy_files: list[str] = field(default_factory=list)
    """Files the config names on the proxy's disk (Istio ``serverCertificate``, ``caCertificates``):
    absent here, so Envoy validated with generated stand-ins in their place."""
    has_null: bool = False
    has_timestamp: bool = False


# --- inputs ------------------------------------------------------------------------------------


def _list_files(source: str) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of every YAML input below ``source``."""
    git_dir, sep, tree = source.partition("::")
    if sep:
        names = subprocess.run(
            ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only", "HEAD", tree],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for name in names:
            if _is_input(name):
                text = subprocess.run(
                    ["git", f"--git-dir={git_dir}", "show", f"HEAD:{name}"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                yield name, text
        return
    root = Path(source)
    for path in sorted(root.rglob("*")):
        if path.is_file() and _is_input(path.name):
            yield str(path.relative_to(root.parent)), path.read_text(encoding="utf-8", errors="replace")


def _is_input(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) and not name.endswith((".out.yaml", ".golden.yaml"))


def _walk_flags(value: Any) -> tuple[bool, bool]:
    """Does the body hold an explicit ``null``, an unquoted timestamp (PyYAML: a datetime)?"""
    if isinstance(value, dict):
        flags = [_walk_flags(v) for v in value.values()] + [(any(v is None for v in value.values()), False)]
    elif isinstance(value, list):
        flags = [_walk_flags(v) for v in value]
    else:
        return False, isinstance(value, (datetime, date))
    return any(f[0] for f in flags), any(f[1] for f in flags)


def _eg_documents(struct: dict[str, Any]) -> list[dict[str, Any]]:
    """Envoy Gateway's test input struct → manifests, with the harness's fixtures."""
    docs: list[dict[str, Any]] = []
    for key, value in struct.items():
        items = value if isinstance(value, list) else [value]
        default = EG_KINDS.get(key.lower())
        for item in items:
            if not isinstance(item, dict) or (default is None and "kind" not in item):
                continue  # a setting of the harness (``mergeBackends: {}``), not an object
            if default is not None:
                item.setdefault("apiVersion", default[0])
                item.setdefault("kind", default[1])
            docs.append(item)
    defined = {
        (
            d.get("kind"),
            (d.get("metadata") or {}).get("namespace", "default"),
            (d.get("metadata") or {}).get("name"),
        )
        for d in docs
    }
    ports = [("http", 8080), ("https", 8443), ("tcp", 8163), ("udp", 8162)]
    # The harness gives all four 1.1.1.1; the API server would not (a ClusterIP is unique).
    fixtures = [(f"service-{i}", f"1.1.1.{i}", ports) for i in range(1, 5)]
    fixtures.append(("mirror-service", "2.2.2.2", [("http", 8080)]))
    for name, cluster_ip, service_ports in fixtures:
        if ("Service", "default", name) in defined:
            continue
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "clusterIP": cluster_ip,
                    "ports": [
                        {"name": n, "port": p, "targetPort": p, "protocol": "UDP" if n == "udp" else "TCP"}
                        for n, p in service_ports
                    ],
                },
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-fixture",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [
                    {"name": n, "port": p, "protocol": "UDP" if n == "udp" else "TCP"}
                    for n, p in service_ports
                ],
                "endpoints": [{"addresses": ["7.7.7.7"], "conditions": {"ready": True}}],
            }
        )
    return docs


def _with_classes(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The default classes under meshxds's controller name (added when only the harness made them)."""
    present: set[str] = set()
    for doc in docs:
        if doc.get("kind") == "GatewayClass" and isinstance(doc.get("spec"), dict):
            name = str((doc.get("metadata") or {}).get("name", ""))
            present.add(name)
            if DEFAULT_CLASSES.get(name) == doc["spec"].get("controllerName"):
                doc["spec"]["controllerName"] = CONTROLLER_NAME
    wanted = {
        (doc.get("spec") or {}).get("gatewayClassName")
        for doc in docs
        if doc.get("kind") == "Gateway"
        and str(doc.get("apiVersion", "")).startswith("gateway.networking.k8s.io/")
    }
    for name in sorted(n for n in wanted if n in DEFAULT_CLASSES and n not in present):
        docs.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": name},
                "spec": {"controllerName": CONTROLLER_NAME},
            }
        )
    return docs


def convert(sources: list[str], work: Path) -> tuple[list[Path], Counter[str]]:
    """Write each input as ``work/NNNN-name/input.yaml``; the skipped ones are counted by why."""
    dirs: list[Path] = []
    skipped: Counter[str] = Counter()
    for source in sources:
        for name, text in _list_files(source):
            if "{{" in text:
                skipped["Go template"] += 1
                continue
            try:
                bodies = [b for b in yaml.safe_load_all(text) if b is not None]
            except yaml.YAMLError:
                skipped["not YAML"] += 1
                continue
            if len(bodies) == 1 and isinstance(bodies[0], dict) and "kind" not in bodies[0]:
                if not any(k.lower() in EG_KINDS for k in bodies[0]):
                    skipped["not a manifest"] += 1
                    continue
                docs = _eg_documents(bodies[0])
            else:
                docs = [b for b in bodies if isinstance(b, dict)]
            if not any("kind" in d for d in docs):
                skipped["not a manifest"] += 1
                continue
            directory = work / f"{len(dirs):04d}-{re.sub(r'[^A-Za-z0-9.-]+', '_', name)[-80:]}"
            directory.mkdir(parents=True, exist_ok=True)
            has_null, has_timestamp = _walk_flags(docs)
            # PyYAML writes a datetime back unquoted: the reader still meets the timestamp.
            (directory / "input.yaml").write_text(yaml.safe_dump_all(_with_classes(docs), sort_keys=False))
            (directory / ".meta.json").write_text(
                json.dumps(
                    {"name": f"{source.split('::')[-1]}:{name}", "null": has_null, "timestamp": has_timestamp}
                )
            )
            dirs.append(directory)
    return dirs, skipped


# --- one input ---------------------------------------------------------------------------------


def check_input(directory: Path) -> Outcome:
    """Read, translate, build every identity's snapshot and have Envoy validate it."""
    from meshxds.errors import MeshxdsError
    from meshxds.options import TranslateOptions
    from meshxds.pipeline import SnapshotBuilder, translate
    from meshxds.sources.files import DirectorySource
    from meshxds.testing.envoy_validate import static_bootstrap, validate_bootstrap
    from meshxds.testing.strategies import identities_of
    from meshxds.xds.cache import InconsistentSnapshot
    from meshxds.xds.resources import build_resources

    meta = json.loads((directory / ".meta.json").read_text())
    outcome = Outcome(name=meta["name"], has_null=meta["null"], has_timestamp=meta["timestamp"])
    try:
        resources = DirectorySource(directory).read()
        outcome.objects = sum(len(by_key) for by_key in resources.objects.values())
        outcome.errors += [str(e) for e in resources.errors]
        if not outcome.objects:
            outcome.verdict = "refused" if outcome.errors else "nothing-to-translate"
            return outcome
        translation = translate(resources, TranslateOptions(listener_address="127.0.0.1"))
        outcome.errors += [str(e) for e in translation.errors]
        outcome.warnings = len(resources.warnings) + len(translation.warnings)
        outcome.errors += _false_conditions(translation.statuses)
        for (ns, name), config in sorted(translation.gateway_api.gateways.items()):
            outcome.errors += [f"Gateway/{ns}/{name}: {p}" for p in config.validate()]
        builder = SnapshotBuilder(translation)
        with tempfile.TemporaryDirectory(prefix="meshxds-corpus-") as tmp:
            for owner, identity in identities_of(resources):
                outcome.identities += 1
                try:
                    builder(identity)
                except (MeshxdsError, InconsistentSnapshot) as exc:
                    outcome.errors.append(f"{owner}: snapshot refused: {exc}")
                    continue
                bootstrap = static_bootstrap(build_resources(translation.config_for(identity)))
                outcome.proxy_files += _stand_ins(bootstrap, directory.parent / ".stand-ins")
                path = Path(tmp) / "bootstrap.json"
                path.write_text(json.dumps(bootstrap))
                result = validate_bootstrap(path)
                outcome.envoy_runs += 1
                if result.returncode != 0:
                    said = "reported" if _reported(translation, owner) else "silent"
                    outcome.rejections.append(
                        f"{owner}: {said}: {_envoy_error(result.stdout + result.stderr)}"
                    )
    except Exception:
        outcome.crash = traceback.format_exc()
    if outcome.crash:
        outcome.verdict = "crashed"
    elif outcome.rejections:
        outcome.verdict = "envoy-rejected"
    elif outcome.errors:
        outcome.verdict = "refused"
    return outcome


STAND_INS = {"certificate_chain": "server.crt", "private_key": "server.key", "trusted_ca": "ca.crt"}


def write_stand_ins(directory: Path) -> None:
    """A CA and a server certificate and key, for files the config expects on the proxy."""
    from meshxds.testing.certs import issue, make_ca

    ca = make_ca("meshxds corpus stand-in CA")
    server = issue(ca, ["stand-in.example"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    (directory / "server.crt").write_bytes(server.chain_pem)
    (directory / "server.key").write_bytes(server.key_pem)


def _stand_ins(node: Any, directory: Path, key: str = "") -> list[str]:
    """Point each absent ``{"filename": ...}`` data source of a certificate, key or CA at a
    stand-in, so Envoy checks the rest (it reads these files at load); the paths replaced."""
    replaced: list[str] = []
    if isinstance(node, dict):
        path = node.get("filename")
        if key in STAND_INS and isinstance(path, str) and not Path(path).is_file():
            node["filename"] = str(directory / STAND_INS[key])
            replaced.append(path)
        for child_key, child in node.items():
            replaced += _stand_ins(child, directory, child_key)
    elif isinstance(node, list):
        for child in node:
            replaced += _stand_ins(child, directory, key)
    return replaced


def _false_conditions(statuses: Any) -> list[str]:
    """Gateway API objects refused in part: each False Accepted/ResolvedRefs/Programmed condition
    (of the object, a listener or a parent), as ``Kind/ns/name: Type=False Reason: message``."""
    found = []
    for status in statuses:
        ref = "/".join(p for p in (status.kind, status.namespace, status.name) if p)
        sections = [status.status.get("conditions", [])]
        sections += [x.get("conditions", []) for x in status.status.get("listeners", [])]
        sections += [x.get("conditions", []) for x in status.status.get("parents", [])]
        for conditions in sections:
            for c in conditions:
                if c["type"] in ("Accepted", "ResolvedRefs", "Programmed") and c["status"] == "False":
                    found.append(f"{ref}: {c['type']}=False {c['reason']}: {c.get('message', '')}")
    return list(dict.fromkeys(found))


def _reported(translation: Any, owner: str) -> bool:
    """Did meshxds say anything is wrong with what ``owner`` serves (an error naming it, or a
    False Accepted/Programmed condition on it or one of its listeners)?"""
    if any(e.object is not None and e.object.ref == owner for e in translation.errors):
        return True
    kind, namespace, name = owner.split("/") if owner.count("/") == 2 else ("", "", owner)
    for status in translation.statuses:
        if (status.kind, status.namespace, status.name) != (kind, namespace, name):
            continue
        sections = [status.status.get("conditions", [])]
        sections += [x.get("conditions", []) for x in status.status.get("listeners", [])]
        if any(
            c["type"] in ("Accepted", "Programmed") and c["status"] == "False" for s in sections for c in s
        ):
            return True
    return False


def _envoy_error(output: str) -> str:
    """Envoy's reason, without the proto dump it quotes and the log prefixes."""
    marker = output.find("error initializing configuration")
    text = output[marker:] if marker >= 0 else output
    text = re.sub(r"\[[^\]]*\]\[\d+\]\[\w+\]\[\w+\] \[[^\]]*\] ", "", text)
    text = " ".join(text.split())
    cause = text.rfind("Proto constraint validation failed")
    text = text[cause:] if cause >= 0 else re.sub(r"^error initializing configuration '[^']*': ", "", text)
    return text[:600] or "?"


def _child(directory: Path, conn: Connection) -> None:
    try:
        conn.send(asdict(check_input(directory)))
    finally:
        conn.close()


def run_all(dirs: list[Path], jobs: int, timeout: float) -> Iterator[Outcome]:
    """Each input in a forked child (the imports are done once, here), ``jobs`` at a time; a
    child past ``timeout`` seconds is killed and its input counted as a timeout."""
    # Imported once here, not in each child.
    import meshxds.pipeline
    import meshxds.sources.files
    import meshxds.testing.envoy_validate
    import meshxds.testing.strategies  # noqa: F401

    context = multiprocessing.get_context("fork")
    pending = list(reversed(dirs))
    running: list[tuple[Path, Any, Connection, float]] = []
    while pending or running:
        while pending and len(running) < jobs:
            directory = pending.pop()
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(directory, sender), daemon=True)
            process.start()
            sender.close()
            running.append((directory, process, receiver, time.monotonic()))
        still: list[tuple[Path, Any, Connection, float]] = []
        for directory, process, receiver, started in running:
            if receiver.poll(0.05):
                try:
                    yield Outcome(**receiver.recv())
                except EOFError:  # the child died without an answer (a signal, the OOM killer)
                    yield Outcome(
                        name=directory.name, verdict="crashed", crash=f"child exit {process.exitcode}"
                    )
                process.join()
                receiver.close()
            elif time.monotonic() - started > timeout:
                process.kill()
                process.join()
                receiver.close()
                name = json.loads((directory / ".meta.json").read_text())["name"]
                yield Outcome(name=name, verdict="timeout")
            elif not process.is_alive() and not receiver.poll(0):
                receiver.close()
                yield Outcome(name=directory.name, verdict="crashed", crash=f"child exit {process.exitcode}")
            else:
                still.append((directory, process, receiver, started))
        running = still


# --- the report --------------------------------------------------------------------------------


def error_kind(error: str) -> str:
    """An error without its specifics (files, objects, names, numbers), to count equal causes."""
    condition = re.search(r": (\w+=False \w+): ", error)
    if condition:
        return f"status {condition.group(1)}"
    text = error.split(": snapshot refused: ", 1)[-1]
    parts = text.split(": ")
    # Drop the leading "file", "Kind/ns/name" and field-path parts.
    while len(parts) > 1 and (
        "/" in parts[0] or parts[0].endswith((".yaml", ".yml")) or re.fullmatch(r"[\w.\[\]#-]+", parts[0])
    ):
        parts = parts[1:]
    text = ": ".join(parts)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "'…'", text)
    text = re.sub(r"\b[\w.-]+/[\w.-]+(/[\w.-]+)?\b", "K/N", text)
    return re.sub(r"\d+", "N", text)[:140]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sources", nargs="+", help="DIR or GIT_DIR::TREE_PATH")
    parser.add_argument(
        "--work", type=Path, help="where converted inputs go (default: a temporary directory)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="inputs checked at once (Envoy runs), default 2")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per input, default 120")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    parser.add_argument("--top", type=int, default=25, help="error kinds listed, default 25")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="meshxds-corpus-"))
    started = time.monotonic()
    dirs, skipped = convert(args.sources, work)
    write_stand_ins(work / ".stand-ins")
    print(f"{len(dirs)} inputs in {work} (skipped: {dict(skipped) or 'none'})", file=sys.stderr)
    outcomes: list[Outcome] = []
    for outcome in run_all(dirs, args.jobs, args.timeout):
        outcomes.append(outcome)
        if outcome.verdict in ("crashed", "envoy-rejected", "timeout"):
            detail = outcome.crash.strip().splitlines()[-1:] if outcome.crash else outcome.rejections[:2]
            print(f"  {outcome.verdict}: {outcome.name}: {detail}", file=sys.stderr)
        if len(outcomes) % 100 == 0:
            print(f"... {len(outcomes)}/{len(dirs)} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    elapsed = time.monotonic() - started

    classes = Counter(o.verdict for o in outcomes)
    kinds = Counter(error_kind(e) for o in outcomes for e in set(o.errors))
    inputs_by_kind = Counter(k for o in outcomes for k in {error_kind(e) for e in o.errors})
    print(f"\ninputs: {len(outcomes)} in {elapsed:.0f} s (jobs {args.jobs}, timeout {args.timeout:.0f} s)")
    print(f"{'class':<24}{'inputs':>8}")
    for name in CLASSES:
        print(f"{name:<24}{classes[name]:>8}")
    silent = sum(1 for o in outcomes if any(": silent: " in r for r in o.rejections))
    print(
        f"{'  of which silent':<24}{silent:>8}   (Envoy rejected, meshxds reported nothing about that proxy)"
    )
    print(f"{'with warnings':<24}{sum(1 for o in outcomes if o.warnings):>8}")
    stood_in = [o for o in outcomes if o.proxy_files]
    files = sorted({f for o in stood_in for f in o.proxy_files})
    print(f"{'with proxy-local files':<24}{len(stood_in):>8}   (stand-ins validated for: {', '.join(files)})")
    identities, runs = sum(o.identities for o in outcomes), sum(o.envoy_runs for o in outcomes)
    print(f"identities: {identities}, Envoy runs: {runs}")
    # Read as the API server reads them: such inputs must fare as the others (listed if refused).
    for flag, label in (("has_null", "explicit YAML nulls"), ("has_timestamp", "unquoted timestamps")):
        flagged = [o for o in outcomes if getattr(o, flag)]
        verdicts = dict(Counter(o.verdict for o in flagged))
        print(f"inputs with {label}: {len(flagged)} {verdicts}")
        for o in flagged:
            if o.verdict != "accepted-valid":
                print(f"  {o.verdict}: {o.name}: {o.errors[:1]}")
    print(f"\nclear errors by kind (errors, inputs), top {args.top} of {len(kinds)}:")
    for kind, count in kinds.most_common(args.top):
        print(f"{count:>6} {inputs_by_kind[kind]:>5}  {kind}")
    for outcome in outcomes:
        if outcome.verdict in ("crashed", "envoy-rejected"):
            print(f"\n[{outcome.verdict}] {outcome.name}")
            for line in outcome.rejections or [outcome.crash.strip()[-1500:]]:
                print(f"  {line}")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return 1 if classes["crashed"] or classes["envoy-rejected"] else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
