"""A child process that reads and YAML-parses files while the parent validates them.

A cold read of a large directory is two halves of about equal cost: reading plus YAML (``ryaml``
holds the GIL, so threads do not help) and validation plus bookkeeping. With the first half in a
second process the two run side by side. The child imports only ``ryaml`` (it starts in tens of
milliseconds) and sends plain bodies back in ``marshal`` form, which loads at C speed; the parent
still validates every object itself, so errors read exactly as an in-process read's.

Protocol: the parent writes the paths, NUL-separated, to the child's stdin and closes it; the child
answers with frames (4-byte big-endian length, then a ``marshal``-ed list of results, a batch of
files each), then exits. A result is ``(path, stamp, digest, status, payload)``; see ``_load``.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import struct
import sys
from collections.abc import Iterator
from typing import IO, Any

import ryaml

__all__ = ["BODIES", "GONE", "NOT_UTF8", "OS_ERROR", "PARSE_HERE", "YAML_ERROR", "Result", "decode_frames"]

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

Result = tuple[str, tuple[int, int, int], bytes, int, Any]
_BATCH = 128
_HEADER = struct.Struct(">I")


def _load(path: str) -> Result:
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


def decode_frames(stream: IO[bytes]) -> Iterator[list[Result]]:
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


def main() -> None:
    paths = [os.fsdecode(p) for p in sys.stdin.buffer.read().split(b"\0") if p]
    out = sys.stdout.buffer
    for start in range(0, len(paths), _BATCH):
        out.write(_frame([_load(p) for p in paths[start : start + _BATCH]]))
        out.flush()


if __name__ == "__main__":
    main()
