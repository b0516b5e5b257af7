"""How soon ``meshxds serve`` is ready on a directory: wall time from start to ``/readyz`` 200,
and the server's RSS then. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_ready.py MESH [--runs 3]

(``MESH``: e.g. ``../shared/perf/meshgen.py OUT --services 10000 --routes 10000 --gateways 10``.)
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def one_run(mesh: str) -> tuple[float, int]:
    admin = _free_port()
    meshxds = str(Path(sys.executable).with_name("meshxds"))
    started = time.perf_counter()
    server = subprocess.Popen(
        [meshxds, "serve", "--config-dir", mesh, "--xds-address", "127.0.0.1:0",
         "--admin-address", f"127.0.0.1:{admin}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while time.perf_counter() - started < _TIMEOUT_S:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started, _rss_mb(server.pid)
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"not ready within {_TIMEOUT_S:g} s")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mesh")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        ready, rss = one_run(args.mesh)
        print(f"ready {ready:.2f} s  rss {rss} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
