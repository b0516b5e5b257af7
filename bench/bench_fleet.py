"""meshxds against the transport floor, in one run, on the same bytes: a fleet of simulated Envoys.

Drives the perf kit (``../shared/perf``: ``meshgen.py``, ``matrix.py``, ``loadgen.py``,
``baseline.py``): generates a mesh, has ``meshxds translate`` produce the exact resources one
gateway proxy gets, serves those bytes from the zero-translation floor (``baseline.py``), then
runs the same load against ``meshxds serve`` whose change is a real file edit. Every cell is a
fresh server; prints both rows and the ratio meshxds / floor of each figure. Asserts nothing.

    .venv/bin/python bench/bench_fleet.py [--services 1000 --routes 1000 --gateways 1]
        [--clients 100,1000,2000] [--modes delta,sotw] [--what endpoint|route] [--repeat 1]
        [--perf ../shared/perf] [--keep DIR]

Read the figures as ``../shared/perf/README.md`` says: ini99 = initial sync p99 (all clients
connect at once), cnv99 = trigger → ACK p99, srvCPU = server CPU to sync all, errs = failed
streams, rxKB/cli must match between the rows (same bytes), or it is a different experiment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (column, path in loadgen's JSON)
FIGURES: tuple[tuple[str, str], ...] = (
    ("ini50", "initial_sync_s.p50"),
    ("ini99", "initial_sync_s.p99"),
    ("cnv50", "convergence_s.first_ack.p50"),
    ("cnv99", "convergence_s.first_ack.p99"),
    ("srvCPU", "server.cpu_sync_s"),
    ("pushCPU", "server.cpu_after_sync_s"),
    ("rssMB", "server.rss_synced_kb"),
    ("rxKB/cli", "bytes_per_client_initial.p50"),
    ("otherGw", "convergence_s.responses_after_trigger_other_gateways"),
)
"""``otherGw``: responses the clients of the other gateways got after the change (over-pushing)."""


def _get(record: dict[str, Any], path: str) -> float | None:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if not isinstance(value, int | float):
        return None
    return value / 1024 if path.endswith("_kb") or path.startswith("bytes_") else float(value)


def _errors(record: dict[str, Any]) -> int:
    return sum((record.get("errors") or {}).values()) if "failed" not in record else -1


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, text=True, **kwargs)


def _median(records: list[dict[str, Any]], path: str) -> float | None:
    values = [v for v in (_get(r, path) for r in records if "failed" not in r) if v is not None]
    return statistics.median(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--clients", default="100,1000,2000")
    parser.add_argument("--modes", default="delta,sotw")
    parser.add_argument("--what", choices=("endpoint", "route"), default="endpoint")
    parser.add_argument(
        "--gateway",
        default="gw/gw-0",
        help="the gateway the clients are (ns/name); ns/a,ns/b spreads them, the change hits the first",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; medians are printed")
    parser.add_argument("--perf", type=Path, default=ROOT.parent / "shared" / "perf")
    parser.add_argument("--keep", type=Path, help="keep the mesh, snapshot and raw JSON here")
    parser.add_argument(
        "--debounce", type=float, default=0.1, help="meshxds serve's debounce (s), its default"
    )
    args = parser.parse_args()

    python = sys.executable
    meshxds = str(Path(python).with_name("meshxds"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        mesh = work / "mesh"
        _run([python, str(args.perf / "meshgen.py"), str(mesh), "--services", str(args.services),
              "--routes", str(args.routes), "--gateways", str(args.gateways), "--seed", "1", "--force"],
             stdout=subprocess.DEVNULL)  # fmt: skip
        namespace, name = args.gateway.split(",")[0].split("/")  # the floor serves the first gateway's bytes
        snapshot = work / "snapshot.json"
        with snapshot.open("w") as out:
            label = f"gateway.networking.k8s.io/gateway-name={name}"
            _run([meshxds, "translate", "--config-dir", str(mesh), "--node-id", "perf-0",
                  "--namespace", namespace, "--label", label], stdout=out)  # fmt: skip
        common = ["--clients", args.clients, "--modes", args.modes, "--what", args.what,
                  "--gateway", args.gateway, "--python", python]  # fmt: skip
        results = {"floor": work / "floor.jsonl", "meshxds": work / "meshxds.jsonl"}
        for _ in range(args.repeat):
            _run([python, str(args.perf / "matrix.py"), "--server", "baseline", "--snapshot", str(snapshot),
                  "--out", str(results["floor"]), "--workdir", str(work / "floor"), *common],
                 stdout=subprocess.DEVNULL)  # fmt: skip
            _run([python, str(args.perf / "matrix.py"), "--server", "meshxds", "--config-dir", str(mesh),
                  "--meshxds-cmd", meshxds, "--out", str(results["meshxds"]),
                  "--workdir", str(work / "meshxds"), *common],
                 stdout=subprocess.DEVNULL)  # fmt: skip
        report(results, args)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, Path], args: argparse.Namespace) -> None:
    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for server, path in results.items():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            cells.setdefault((server, record["mode"], int(record["clients"])), []).append(record)
    print(
        f"# {args.services} services, {args.routes} routes, {args.gateways} gateways; change: one "
        f"{args.what} edit; clients of {args.gateway}; median of {args.repeat}; meshxds debounces "
        f"{args.debounce * 1000:g} ms (cnv99-d: its cnv99 less the debounce)"
    )
    header = f"{'server':8} {'mode':5} {'N':>5} {'sync':>5} {'errs':>5}" + "".join(
        f"{c:>9}" for c, _ in FIGURES
    )
    print(header)
    for mode in args.modes.split(","):
        for n in (int(x) for x in args.clients.split(",")):
            rows: dict[str, dict[str, float | None]] = {}
            for server in ("floor", "meshxds"):
                records = cells.get((server, mode, n), [])
                synced = [r.get("synced", 0) for r in records if "failed" not in r]
                errors = [_errors(r) for r in records]
                rows[server] = {c: _median(records, p) for c, p in FIGURES}
                line = f"{server:8} {mode:5} {n:>5} {min(synced, default=0):>5} {max(errors, default=-1):>5}"
                print(line + "".join(_cell(rows[server][c]) for c, _ in FIGURES))
            ratios = {c: _ratio(rows["meshxds"][c], rows["floor"][c]) for c, _ in FIGURES}
            cnv = rows["meshxds"]["cnv99"]
            beyond = _ratio(cnv - args.debounce if cnv is not None else None, rows["floor"]["cnv99"])
            print(
                f"{'ratio':8} {mode:5} {n:>5} {'':>5} {'':>5}"
                + "".join(_cell(ratios[c], "x") for c, _ in FIGURES)
                + f"  cnv99-d {_cell(beyond, 'x').strip()}"
            )


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cell(value: float | None, suffix: str = "") -> str:
    return f"{value:>{9 - len(suffix)}.3f}{suffix}" if value is not None else f"{'-':>9}"


if __name__ == "__main__":
    sys.exit(main())
