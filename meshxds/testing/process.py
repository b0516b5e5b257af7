"""What the test harness's child processes share: a work directory, start/stop by PID, bounded
waits that fail early when the process dies, log tails, and a small admin HTTP client."""

from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self, TypeVar

from meshxds.testing.ports import wait_until

__all__ = ["ManagedProcess"]

T = TypeVar("T")
_STOP_GRACE = 5.0


class ManagedProcess:
    """A child process with a work directory of its own (deleted by ``stop()`` after keeping the
    log tail) or one given; stopped by PID: SIGTERM, up to 5 s, then SIGKILL."""

    NAME: ClassVar[str] = "process"
    """Used in messages: ``envoy exited with code 1``."""
    ERROR: ClassVar[type[Exception]] = RuntimeError

    def __init__(self, *, work_dir: str | Path | None) -> None:
        self._own_dir = work_dir is None
        self._work_dir_arg = Path(work_dir) if work_dir is not None else None
        self.work_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._final_tail: str | None = None

    # -- what subclasses provide --
    def _admin_endpoint_port(self) -> int:
        """The port of the process's admin HTTP endpoint."""
        raise NotImplementedError

    @property
    def output_path(self) -> Path:
        """Where the child's stdout and stderr go."""
        raise NotImplementedError

    def log_files(self) -> Sequence[Path]:
        """The files ``log_tail`` reads, in order."""
        return (self.output_path,)

    def _prepare(self) -> None:
        """Write what the process needs into ``work_dir`` before it starts."""

    # -- state --
    def _dir(self) -> Path:
        if self.work_dir is None:
            raise self.ERROR(f"{self!r} is not started")
        return self.work_dir

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise self.ERROR(f"{self!r} is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while running (or never started)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --
    def _ensure_work_dir(self) -> Path:
        """Create the work directory (once); paths in the command line live in it."""
        if self._proc is not None:
            raise self.ERROR(f"{self!r} already started")
        if self.work_dir is None:
            if self._work_dir_arg is None:
                self.work_dir = Path(tempfile.mkdtemp(prefix=f"meshxds-{self.NAME}-"))
            else:
                self.work_dir = self._work_dir_arg
                self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir

    def _spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Self:
        self._ensure_work_dir()
        self._prepare()
        self._out = self.output_path.open("wb")
        self._proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT, env=env
        )
        return self

    def stop(self) -> None:
        """SIGTERM, up to 5 s to exit, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_GRACE)
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._own_dir and self.work_dir is not None and self.work_dir.exists():
            self._final_tail = self.log_tail(200)
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def start(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _state(self) -> str:
        return "not started" if self._proc is None else f"pid={self._proc.pid} rc={self._proc.poll()}"

    # -- logs and waits --
    def log_tail(self, n: int = 50) -> str:
        """The last ``n`` lines of each log file that has any."""
        if self.work_dir is None or not self.work_dir.exists():
            return self._final_tail or ""
        parts = []
        for path in self.log_files():
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-n:]
                if lines:
                    parts.append(f"--- {path.name} (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def _exited(self) -> str | None:
        rc = self.returncode
        return None if rc is None else f"{self.NAME} exited with code {rc}"

    def wait_for(
        self,
        predicate: Callable[[], T],
        *,
        timeout: float = 15.0,
        interval: float = 0.05,
        what: str = "condition",
    ) -> T:
        """Poll ``predicate`` until truthy; fails early if the process exits, and quotes its log."""
        return wait_until(
            predicate,
            timeout=timeout,
            interval=interval,
            what=f"{what} ({self!r})",
            abort=self._exited,
            details=lambda: self.log_tail(40),
        )

    # -- admin API --
    def request(self, method: str, path: str, *, timeout: float = 2.0) -> tuple[int, str]:
        """One admin request; (status, body). http.client, so no proxy variables apply."""
        conn = http.client.HTTPConnection("127.0.0.1", self._admin_endpoint_port(), timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    def get(self, path: str) -> str:
        status, body = self.request("GET", path)
        if status != 200:
            raise self.ERROR(f"GET {path} -> {status}: {body[:500]}")
        return body
