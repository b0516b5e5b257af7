"""The long fuzz run of the translation (issue 10 point 7); CI runs a bounded one (tests/fuzz).

    .venv/bin/python bench/fuzz_translation.py --examples 2000 --seed 1

Draws schema-valid Gateway API and Istio configurations (``meshxds.testing.strategies``),
translates each, builds every gateway identity's and a sidecar's snapshot and has the real Envoy
validate them. Prints how many examples ran, Envoy runs, and every failure (a traceback, or a
snapshot Envoy rejects while meshxds reports nothing wrong) with the first manifests that showed
it, grouped by message; ``--out DIR`` writes each failing configuration as YAML. Failures are
not shrunk here (a failing case can be minimised with the CI test's strategy and ``@example``).
Exit 1 when anything failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, seed, settings

from meshxds.testing.strategies import Known, Verdict, check, manifests


def _signature(failure: str) -> str:
    """A failure without its specifics (names, numbers), to group equal causes."""
    text = failure.splitlines()[-1] if failure.startswith("traceback") else failure.split(": ", 1)[-1]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    return re.sub(r"\d+", "N", text)[:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--known",
        default="",
        help="comma-separated Known flags to turn on (a new finding's, off until fixed; the fixed ones, "
        "host_header, header_newline, percent_in_header_value, empty_regex, invalid_cors_regex, are on)",
    )
    parser.add_argument("--out", type=Path, help="write each failing configuration here as YAML")
    args = parser.parse_args(argv)
    flags = [f for f in args.known.split(",") if f]
    known = Known.all() if flags == ["all"] else Known(**dict.fromkeys(flags, True))

    totals: Counter[str] = Counter()
    groups: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    started = time.monotonic()

    @seed(args.seed)
    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=("generate",),  # every example counts; no shrinking of a run that goes on
    )
    @given(docs=manifests(known))
    def run(docs: list[dict[str, Any]]) -> None:
        with tempfile.TemporaryDirectory(prefix="meshxds-fuzz-") as work:
            verdict: Verdict = check(docs, Path(work))
        totals["examples"] += 1
        totals["objects"] += verdict.objects
        totals["identities"] += verdict.identities
        totals["envoy runs"] += verdict.envoy_runs
        totals["objects refused by the model"] += len(verdict.invalid_objects)
        totals["snapshots refused by meshxds"] += len(verdict.refused)
        totals["rejected by Envoy, reported by meshxds"] += len(verdict.rejected_reported)
        for failure in verdict.failures:
            totals["failures"] += 1
            groups.setdefault(_signature(failure), []).append((failure, docs))
        if totals["examples"] % 100 == 0:
            print(f"... {totals['examples']} examples, {totals['failures']} failures", file=sys.stderr)

    run()
    elapsed = time.monotonic() - started
    # The classes generated (all fixed ones are on by default), not just the ones asked for.
    known_text = ",".join(f.name for f in dataclasses.fields(known) if getattr(known, f.name)) or "none"
    print(f"examples run: {totals['examples']} (seed {args.seed}, known: {known_text}) in {elapsed:.0f} s")
    for key in sorted(totals):
        if key != "examples":
            print(f"  {key}: {totals[key]}")
    print(f"failures found: {totals['failures']} in {len(groups)} group(s)")
    for number, (signature, cases) in enumerate(sorted(groups.items(), key=lambda g: -len(g[1])), 1):
        failure, docs = min(cases, key=lambda c: len(yaml.safe_dump_all(c[1])))
        print(f"\n[{number}] {len(cases)}x {signature}\n  e.g. {failure[:1500]}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"failure-{number}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return 1 if totals["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
