"""The directory source: every ``*.yaml``/``*.yml``/``*.json`` below a folder, multi-document,
read as one consistent set; watched, and reloaded as a whole on any change.

A read either yields a complete ``ResourceSet`` or raises ``ManifestErrors`` naming every bad
file, object and field — never half a directory — so the server keeps the last good config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import yaml
from watchfiles import Change, awatch

from meshxds.errors import ManifestError, ManifestErrors
from meshxds.model.manifests import ResourceSet, SourcedDocument, parse_documents

__all__ = ["manifest_files", "read_directory", "watch_directory"]

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml", ".json")


def _ignored(path: Path, root: Path) -> bool:
    # Editors' swap/backup files and hidden folders (.git, k8s' ..data links) are not manifests.
    parts = path.relative_to(root).parts
    return any(p.startswith(".") for p in parts) or path.name.endswith("~")


def manifest_files(root: Path) -> list[Path]:
    """Manifest files below ``root``, sorted for a deterministic read order."""
    if not root.is_dir():
        raise ManifestErrors([ManifestError("not a directory", path=str(root))])
    return sorted(
        p for p in root.rglob("*") if p.suffix in _SUFFIXES and p.is_file() and not _ignored(p, root)
    )


def _documents(path: Path, errors: list[ManifestError]) -> Iterator[SourcedDocument]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ManifestError(f"cannot read: {exc}", path=str(path)))
        return
    try:
        # Parse the whole file before yielding: a syntax error anywhere rejects the file.
        bodies = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(ManifestError(f"invalid YAML: {problem}", path=where))
        return
    for index, body in enumerate(bodies):
        yield SourcedDocument(path=str(path), index=index, body=body)


def read_directory(root: str | Path) -> ResourceSet:
    """Read and validate every manifest below ``root``; raise ``ManifestErrors`` listing all problems."""
    base = Path(root)
    errors: list[ManifestError] = []
    docs = [doc for path in manifest_files(base) for doc in _documents(path, errors)]
    try:
        resources = parse_documents(docs)
    except ManifestErrors as exc:
        errors.extend(exc.errors)
        raise ManifestErrors(errors) from None
    if errors:
        raise ManifestErrors(errors)
    return resources


async def watch_directory(
    root: str | Path, *, debounce_ms: int = 50, stop_event: asyncio.Event | None = None
) -> AsyncIterator[ResourceSet | ManifestErrors]:
    """Yield the directory's content now and after every change: a ``ResourceSet`` when it reads
    cleanly, the ``ManifestErrors`` when it does not (the caller keeps its last good set)."""

    def read() -> ResourceSet | ManifestErrors:
        try:
            return read_directory(root)
        except ManifestErrors as exc:
            return exc

    changes = awatch(root, debounce=debounce_ms, step=20, stop_event=stop_event, recursive=True)
    # Watch before the first read: awatch creates its watcher on the first anext(), and a change
    # made before that (while the caller handles the first read, say) would never be reported.
    pending: asyncio.Future[set[tuple[Change, str]]] = asyncio.ensure_future(anext(changes))
    try:
        await asyncio.sleep(0)  # let the watcher start (it does before its first await)
        yield read()
        while True:
            try:
                batch = await pending
            except StopAsyncIteration:  # the stop event was set
                return
            log.debug("manifest change: %s", sorted({p for _, p in batch}))
            yield read()
            pending = asyncio.ensure_future(anext(changes))
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await changes.aclose()
