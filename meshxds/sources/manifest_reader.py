"""Which files below a folder are manifests, and a child process that reads and YAML-parses them
while this process validates.

A cold read of a large directory is two halves of about equal cost: reading plus YAML (``ryaml``
holds the GIL, so threads do not help) and validation plus bookkeeping. With the first half in a
second process the two run side by side. The child imports only ``ryaml`` (it starts in tens of
milliseconds) and sends plain bodies back in ``marshal`` form, which loads at C speed; the parent
still validates every object itself, so errors read exactly as an in-process read's.

This module imports nothing heavy, so a command can start the child (:func:`prefetch`) before it
imports the models and translators, and the child parses while they load.

Protocol: the parent writes the paths, NUL-separated, to the child's stdin and closes it; the child
answers with frames (4-byte big-endian length, then a ``marshal``-ed list of results, a batch of
files each), then exits. A result is ``(path, stamp, digest, status, payload)``; see ``_load``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import marshal
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

__all__ = [
    "BODIES",
    "GONE",
    "MIN_FILES",
    "NOT_UTF8",
    "OS_ERROR",
    "PARSE_HERE",
    "YAML_ERROR",
    "Prefetch",
    "Result",
    "manifest_paths",
    "prefetch",
]

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
MIN_FILES = 2000
"""A first read of at least this many files parses YAML in a child process (with two cores or more)."""

BODIES = 0
"""payload: the documents, as ``ryaml.loads_all`` returns them."""
NOT_UTF8 = 1
"""payload: the decoding error's text."""
YAML_ERROR = 2
"""payload: ``ryaml``'s error text."""
GONE = 3
"""The file vanished before it could be read; payload ``None``."""
OS_ERROR = 4
"""payload: the ``OSError``'s text."""
PARSE_HERE = 5
"""The bodies hold something ``marshal`` cannot carry: the parent parses the file itself."""
_PART = 6
"""payload: the first documents of a big file; the rest follow (``results`` joins them)."""

Result = tuple[str, tuple[int, int, int], bytes, int, Any]
_BATCH = 128
# Documents per frame: a frame is unmarshalled in one call holding the GIL, and a 20,000-document
# file in one frame holds it ~0.1 s.
_PART_DOCS = 500
_HEADER = struct.Struct(">I")


def manifest_paths(root: str) -> list[str]:
    """Manifest files below the folder ``root``, sorted: every ``*.yaml``, ``*.yml``, ``*.json``,
    except dotfiles, hidden folders (.git, Kubernetes' ``..data`` links) and ``~`` backups."""
    # Strings, not Paths: at 30,000 files, building and sorting Path objects costs 0.5 s.
    found: list[str] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir():
                    folders.append(entry.path)
                elif name.endswith(SUFFIXES) and not name.endswith("~") and entry.is_file():
                    found.append(entry.path)
    return sorted(found)


def worth_a_child(files: int) -> bool:
    """With one core to run on, a second process would only add its own cost."""
    return files >= MIN_FILES and len(os.sched_getaffinity(0)) > 1


@dataclass
class Prefetch:
    """A child process reading ``paths``; :meth:`results` yields what it read, as it arrives."""

    paths: list[str]
    child: subprocess.Popen[bytes] | None

    @classmethod
    def start(cls, paths: list[str]) -> Prefetch:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as exc:
            log.warning("cannot start the YAML reader process (%s); reading in this one", exc)
            return cls(paths, None)
        assert child.stdin is not None
        try:
            child.stdin.write(b"\0".join(os.fsencode(p) for p in paths))
            child.stdin.close()
        except OSError as exc:  # it died at once: its results end early, the caller reads the rest
            log.warning("the YAML reader process failed (%s); reading in this one", exc)
        return cls(paths, child)

    def results(self) -> Iterator[Result]:
        """What the child read. It may stop short (it failed, or sent a torn frame): the caller
        reads whatever it did not answer for. The child is gone when this returns."""
        child = self.child
        if child is None:
            return
        assert child.stdout is not None
        parts: dict[str, list[Any]] = {}
        try:
            for batch in _frames(child.stdout):
                for result in batch:
                    path, stamp, digest, status, payload = result
                    if status == _PART:
                        parts.setdefault(path, []).extend(payload)
                    elif path in parts:
                        yield (path, stamp, digest, status, [*parts.pop(path), *payload])
                    else:
                        yield result
        except (OSError, ValueError, EOFError, TypeError) as exc:
            log.warning("the YAML reader process failed (%s); reading the rest in this one", exc)
        finally:
            self.close()

    def close(self) -> None:
        child, self.child = self.child, None
        if child is None:
            return
        assert child.stdout is not None
        child.stdout.close()
        if child.poll() is None:
            child.kill()
        child.wait()


def prefetch(root: str) -> Prefetch | None:
    """Start reading ``root``'s manifests in a child process, if it is a folder with enough of
    them to be worth one; the caller hands the result to ``DirectorySource``."""
    if not os.path.isdir(root):
        return None
    paths = manifest_paths(root)
    return Prefetch.start(paths) if worth_a_child(len(paths)) else None


def _load(path: str) -> Result:
    import ryaml  # here, not at the top: the parent never parses through this module

    try:
        stat = os.stat(path)
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return (path, (0, 0, 0), b"", GONE, None)
    except OSError as exc:
        return (path, (0, 0, 0), b"", OS_ERROR, str(exc))
    stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    digest = hashlib.sha256(data).digest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (path, stamp, digest, NOT_UTF8, str(exc))
    try:
        bodies = ryaml.loads_all(text) or []
    except ValueError as exc:
        return (path, stamp, digest, YAML_ERROR, str(exc))
    return (path, stamp, digest, BODIES, bodies)


def _frame(results: list[Result]) -> bytes:
    try:
        payload = marshal.dumps(results)
    except ValueError:  # one file held something marshal cannot carry: let the parent parse it
        safe: list[Result] = []
        for result in results:
            try:
                marshal.dumps(result)
            except ValueError:
                result = (result[0], result[1], result[2], PARSE_HERE, None)
            safe.append(result)
        payload = marshal.dumps(safe)
    return _HEADER.pack(len(payload)) + payload


def _frames(stream: IO[bytes]) -> Iterator[list[Result]]:
    """The child's batches as they arrive; stops at the end of the stream (or a torn frame)."""
    while True:
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return
        results: list[Result] = marshal.loads(payload)
        yield results


def _split(result: Result) -> list[Result]:
    """A big file's documents as parts of at most ``_PART_DOCS``, the last one ``BODIES``."""
    path, stamp, digest, status, bodies = result
    if status != BODIES or len(bodies) <= _PART_DOCS:
        return [result]
    cuts = range(0, len(bodies), _PART_DOCS)
    return [
        (path, stamp, digest, BODIES if i + _PART_DOCS >= len(bodies) else _PART, bodies[i : i + _PART_DOCS])
        for i in cuts
    ]


def main() -> None:
    # Parsing is background work: on a busy machine the server's event loop (streams, /healthz)
    # comes first. On an idle one a niced process still gets its core.
    with contextlib.suppress(OSError):
        os.nice(5)
    paths = [os.fsdecode(p) for p in sys.stdin.buffer.read().split(b"\0") if p]
    # A pipe holds 64 KB: written from this thread, parsing would stop whenever the parent is
    # busy (importing the models, say). A writer thread takes the frames as they are made.
    frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    writer = threading.Thread(target=_write, args=(frames, sys.stdout.buffer), daemon=True)
    writer.start()
    batch: list[Result] = []
    documents = 0
    for path in paths:
        for result in _split(_load(path)):
            batch.append(result)
            documents += len(result[4]) if result[3] in (BODIES, _PART) else 1
            if len(batch) >= _BATCH or documents >= _PART_DOCS:
                frames.put(_frame(batch))
                batch, documents = [], 0
    if batch:
        frames.put(_frame(batch))
    frames.put(None)
    writer.join()


def _write(frames: queue.SimpleQueue[bytes | None], out: IO[bytes]) -> None:
    while (frame := frames.get()) is not None:
        try:
            out.write(frame)
            out.flush()
        except OSError:  # the parent went away: nobody to answer
            return


if __name__ == "__main__":
    main()
