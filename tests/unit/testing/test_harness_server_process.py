"""MeshxdsProcess against a fake `meshxds serve` that speaks the admin contract (design.md)."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from meshxds.testing.ports import WaitTimeout
from meshxds.testing.server import CDS, LDS, MeshxdsProcess

# Serves /readyz and /debug/syncz; node "gw" reports LDS as STALE for its first two polls.
FAKE_SERVER = textwrap.dedent(
    """
    import argparse, json, signal, sys, threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from meshxds.testing.server import CDS, LDS  # MeshxdsProcess puts the checkout on PYTHONPATH

    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--config-dir")
    parser.add_argument("--xds-address")
    parser.add_argument("--admin-address")
    parser.add_argument("--exit-now", action="store_true")
    args = parser.parse_args()
    print("fake meshxds", args.command, args.config_dir, args.xds_address, flush=True)
    if args.exit_now:
        print("bad flag", file=sys.stderr, flush=True)
        sys.exit(3)
    polls = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/readyz":
                body = b"ok"
            elif self.path == "/debug/syncz":
                polls[0] += 1
                lds = "SYNCED" if polls[0] > 2 else "STALE"
                acked = f"l{min(polls[0], 3)}"
                body = json.dumps([{"node_id": "gw", "types": {
                    CDS: {"version_sent": "c1", "version_acked": "c1", "state": "SYNCED", "last_nack": None},
                    LDS: {"version_sent": "l2", "version_acked": acked, "state": lds, "last_nack": None},
                }}]).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    host, port = args.admin_address.rsplit(":", 1)
    server = HTTPServer((host, int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=0.05)
    print("fake meshxds stopped", flush=True)
    """
)


@pytest.fixture
def fake_command(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_meshxds.py"
    script.write_text(FAKE_SERVER)
    return [sys.executable, str(script)]


def test_argv_follows_the_serve_contract(tmp_path: Path) -> None:
    proc = MeshxdsProcess(tmp_path, xds_port=18001, admin_port=18081)
    assert proc.argv == [
        sys.executable,
        "-m",
        "meshxds",
        "serve",
        "--config-dir",
        str(tmp_path),
        "--xds-address",
        "127.0.0.1:18001",
        "--admin-address",
        "127.0.0.1:18081",
    ]


def test_ready_syncz_and_wait_synced(tmp_path: Path, fake_command: list[str]) -> None:
    with MeshxdsProcess(tmp_path / "manifests", command=fake_command, work_dir=tmp_path / "w") as server:
        server.wait_ready(timeout=10)
        assert server.node_status("other") == []
        items = server.wait_synced("gw", timeout=10)
        assert items[0]["types"][LDS]["state"] == "SYNCED"
        assert server.acked_versions("gw") == {CDS: "c1", LDS: "l3"}
        assert "fake meshxds serve" in server.log_tail()
        pid = server.pid
    assert server.returncode == 0, f"pid {pid} should exit on SIGTERM"
    assert "fake meshxds stopped" in (tmp_path / "w" / "meshxds.log").read_text()


def test_wait_synced_after_waits_for_a_new_acked_version(tmp_path: Path, fake_command: list[str]) -> None:
    with MeshxdsProcess(tmp_path, command=fake_command) as server:
        server.wait_ready(timeout=10)
        before = server.acked_versions("gw")  # poll 1: LDS acked l1
        server.wait_synced("gw", after={LDS: before[LDS]}, timeout=10)
        with pytest.raises(WaitTimeout, match="no new version acked yet"):
            server.wait_synced("gw", after={LDS: "l3"}, timeout=0.3)


def test_wait_synced_names_what_is_missing(tmp_path: Path, fake_command: list[str]) -> None:
    with MeshxdsProcess(tmp_path, command=fake_command) as server:
        server.wait_ready(timeout=10)
        with pytest.raises(WaitTimeout, match="node 'nobody' not connected"):
            server.wait_synced("nobody", timeout=0.3)
        with pytest.raises(WaitTimeout, match=r"not subscribed yet to.*RouteConfiguration"):
            server.wait_synced(
                "gw", types=("type.googleapis.com/envoy.config.route.v3.RouteConfiguration",), timeout=0.3
            )


def test_a_server_that_exits_fails_the_wait_at_once_with_its_output(
    tmp_path: Path, fake_command: list[str]
) -> None:
    proc = MeshxdsProcess(tmp_path, command=fake_command, extra_args=["--exit-now"])
    start = time.monotonic()
    with proc, pytest.raises(WaitTimeout, match=r"(?s)meshxds exited with code 3.*bad flag"):
        proc.wait_ready(timeout=20)
    assert time.monotonic() - start < 10
    assert "bad flag" in proc.log_tail(), "the tail outlives the deleted work dir"
