"""The directory source: every ``*.yaml``/``*.yml``/``*.json`` below a folder, multi-document,
read as one consistent set; watched, and re-read incrementally.

One bad object never holds back the rest, as with the Kubernetes source: an invalid object is
left out and reported (``ResourceSet.errors``: file, ``Kind/namespace/name``, field); a file
that no longer parses, or an object that turns invalid, keeps its last good version served
until it is fixed; an object defined twice is reported and its first definition (in path order)
is served. ``read_directory`` — the CLI's all-or-nothing read — raises ``ManifestErrors`` instead.

``DirectorySource`` keeps each file's parsed and validated objects keyed by path; a change
re-reads only the files it names, and a file whose bytes are unchanged is not parsed again. YAML
is parsed by ``ryaml`` (Rust), which reads as the API server's JSON does where it matters here:
``null`` is ``None``, ``true``/``false`` are booleans, and a timestamp stays a string.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import ryaml
from watchfiles import Change, awatch

from meshxds.errors import ManifestError, ManifestErrors
from meshxds.memory import building
from meshxds.model.base import Resource
from meshxds.model.manifests import ResourceSet, SourcedDocument, parse_document
from meshxds.sources import manifest_reader

__all__ = ["DirectorySource", "manifest_files", "read_directory", "watch_directory"]

log = logging.getLogger(__name__)

_SUFFIXES = manifest_reader.SUFFIXES
_CHILD_PARSES_BYTES = 512 * 1024
_WATCH_STEP_MS = 10
_YAML_POSITION = re.compile(r"at line (\d+) column (\d+)")


def _ignored(path: Path, root: Path) -> bool:
    # Editors' swap/backup files and hidden folders (.git, k8s' ..data links) are not manifests.
    parts = path.relative_to(root).parts
    return any(p.startswith(".") for p in parts) or path.name.endswith("~")


def manifest_files(root: Path) -> list[Path]:
    """Manifest files below ``root``, sorted for a deterministic read order."""
    return [Path(p) for p in _manifest_paths(root)]


def _manifest_paths(root: Path) -> list[str]:
    if not root.is_dir():
        raise ManifestErrors([ManifestError("not a directory", path=str(root))])
    return manifest_reader.manifest_paths(str(root))


@dataclass(frozen=True, slots=True)
class _ParsedFile:
    """What one file holds, parsed and validated once per content."""

    stamp: tuple[int, int, int]
    """``(mtime_ns, size, inode)`` when read: a full rescan skips files whose stamp is unchanged."""
    digest: bytes
    """SHA-256 of the bytes: a file rewritten with the same bytes is not parsed again."""
    objects: tuple[tuple[Resource, str], ...]
    """Each object with where it came from (``path`` or ``path#index``)."""
    errors: tuple[ManifestError, ...]
    warnings: tuple[str, ...]


def _yaml_error(path: str, text: str) -> ManifestError:
    position = _YAML_POSITION.search(text)
    where = f"{path}:{position.group(1)}:{position.group(2)}" if position else path
    return ManifestError(f"invalid YAML: {text}", path=where)


def _without_nulls(value: Any) -> Any:
    """A body as the API server stores it: a ``null`` field is an absent field."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _parse_document(doc: SourcedDocument) -> tuple[Resource | None, list[str]]:
    try:
        return parse_document(doc)
    except ManifestError:
        # Explicit nulls (``labels:``, ``matches: null``) mean "not set" to the API server; walk
        # the body for them only when it fails as written, which keeps the common path cheap.
        cleaned = _without_nulls(doc.body)
        if cleaned == doc.body:
            raise
        return parse_document(SourcedDocument(path=doc.path, index=doc.index, body=cleaned))


def _parse_file(path: str, stamp: tuple[int, int, int], data: bytes) -> _ParsedFile:
    digest = hashlib.sha256(data).digest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _unreadable(path, stamp, digest, str(exc))
    try:
        # The whole file is parsed before any object is used: a syntax error rejects the file.
        bodies: list[Any] = ryaml.loads_all(text) or []
    except ValueError as exc:
        return _ParsedFile(stamp, digest, (), (_yaml_error(path, str(exc)),), ())
    return _validated(path, stamp, digest, bodies)


def _unreadable(path: str, stamp: tuple[int, int, int], digest: bytes, why: str) -> _ParsedFile:
    return _ParsedFile(stamp, digest, (), (ManifestError(f"cannot read: {why}", path=path),), ())


def _validated(path: str, stamp: tuple[int, int, int], digest: bytes, bodies: list[Any]) -> _ParsedFile:
    objects: list[tuple[Resource, str]] = []
    errors: list[ManifestError] = []
    warnings: list[str] = []
    for index, body in enumerate(bodies):
        if body is None:  # an empty document between '---' separators
            continue
        try:
            obj, found = _parse_document(SourcedDocument(path=path, index=index, body=body))
        except ManifestError as exc:
            errors.append(exc)
            continue
        warnings.extend(found)
        if obj is not None:
            objects.append((obj, f"{path}#{index}" if index else path))
    return _ParsedFile(stamp, digest, tuple(objects), tuple(errors), tuple(warnings))


def _keeping_last_good(old: _ParsedFile, new: _ParsedFile) -> _ParsedFile:
    """``new``, still serving ``old``'s version of each object ``new`` fails to define: all of
    them when the file cannot be read or parsed, else those whose document is now invalid. A
    document deleted from the file takes its object with it."""
    # Unreadable, or a YAML syntax error (an error with no object): nothing of the file was read.
    failed = None if any(not e.ref for e in new.errors) else {e.ref for e in new.errors}
    defined = {obj.ref for obj, _ in new.objects}
    kept = [
        (obj, where)
        for obj, where in old.objects
        if obj.ref not in defined and (failed is None or obj.ref in failed)
    ]
    if not kept:
        return new
    kept_refs = {obj.ref for obj, _ in kept}
    errors = tuple(
        ManifestError(
            f"{e.message} (still serving its last good version)",
            path=e.path,
            ref=e.ref,
            field_path=e.field_path,
        )
        if e.ref in kept_refs
        else e
        for e in new.errors
    )
    if failed is None:
        note = f"still serving the last good version of its {len(kept)} object(s)"
        errors = tuple(ManifestError(f"{e.message} ({note})", path=e.path) for e in errors)
    return replace(new, objects=new.objects + tuple(kept), errors=errors)


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class DirectorySource:
    """The manifests below ``root``, cached per file; not thread-safe (one reader at a time)."""

    def __init__(
        self,
        root: str | Path,
        *,
        prefetch: manifest_reader.Prefetch | None = None,
        worker_min_files: int | None = None,
    ) -> None:
        self.root = Path(root)
        # The first read takes its YAML from a child process: ``prefetch``, started by the caller
        # before it imported the models, or one started then, when the directory is large
        # enough (``worker_min_files``, default: ``manifest_reader.worth_a_child``).
        self._prefetch = prefetch
        self._worker_min_files = worker_min_files
        self._files: dict[str, _ParsedFile] = {}
        # The merged view, kept up to date file by file so a read costs what changed, not the
        # whole directory: every object claiming a ``Kind/namespace/name`` (the first in file
        # order wins, the others are "defined twice"), the winners by kind, and the files that
        # have errors or warnings.
        self._claims: dict[str, list[tuple[str, int, Resource, str]]] = {}
        self._duplicated: set[str] = set()
        self._winners: dict[str, Resource] = {}
        self._objects: dict[type[Resource], dict[tuple[str, str], Resource]] = {}
        self._origins: dict[str, str] = {}
        self._noisy: set[str] = set()
        # What the last read handed out, reused for kinds (and origins) nothing touched since:
        # the pipeline finds unchanged kinds by identity.
        self._handed: dict[type[Resource], Mapping[tuple[str, str], Resource]] = {}
        self._dirty: set[type[Resource]] = set()
        # Keys served or unserved since the last read, and that read's token: the next set says
        # it differs from that one only there (``ResourceSet.changed_since``).
        self._touched: dict[type[Resource], set[tuple[str, str]]] = {}
        self._handed_token: int | None = None
        self._handed_origins: Mapping[str, str] = MappingProxyType({})
        # Refs whose origin was set or dropped since the last read: most edits re-serve an object
        # from the same file, and then the 30,000-entry origins are not copied again.
        self._origins_touched: set[str] = set()
        self._origins_dirty = True
        self.parsed_files = 0
        """How many file reads parsed their content (for tests and metrics)."""

    def read(self, changed: Iterable[str] | None = None) -> ResourceSet:
        """The whole directory as one set, every problem in its ``errors`` (``ManifestErrors``
        only when ``root`` is not a directory).

        ``changed`` names the paths a watcher saw change: only they are looked at. ``None``
        (the first read, or a change the watcher cannot pin down) rescans the tree and re-reads
        the files whose size, time or inode moved.
        """
        if changed is None:
            self._rescan()
        else:
            for path in sorted({Path(p) for p in changed}):
                self._refresh(path)
        return self._assemble()

    def _rescan(self) -> None:
        present = _manifest_paths(self.root)
        for gone in self._files.keys() - set(present):
            self._forget(gone)
        loaded: set[str] = set()
        prefetch, self._prefetch = self._prefetch, None
        if not self._files:
            if prefetch is None and self._wants_child(len(present)):
                prefetch = manifest_reader.Prefetch.start(present)
            if prefetch is not None:
                loaded = self._take_all(prefetch, set(present))
        elif prefetch is not None:
            prefetch.close()
        for path in present:
            if path not in loaded:
                self._load(path, known_stamp=True)

    def _wants_child(self, files: int) -> bool:
        if self._worker_min_files is None:
            return manifest_reader.worth_a_child(files)
        return files >= self._worker_min_files

    def _take_all(self, prefetch: manifest_reader.Prefetch, present: set[str]) -> set[str]:
        """Validate what the child read, batch by batch as it arrives; the paths it answered for
        (the caller reads the others itself)."""
        loaded: set[str] = set()
        for result in prefetch.results():
            if result[0] in present and result[3] != manifest_reader.PARSE_HERE:
                self._take(result)
                loaded.add(result[0])
        return loaded

    def _take(self, result: manifest_reader.Result) -> None:
        """One file as the YAML reader process read it."""
        key, stamp, digest, status, payload = result
        if status == manifest_reader.GONE:
            if key in self._files:
                self._forget(key)
            return
        if status == manifest_reader.OS_ERROR:
            self._store(key, _unreadable(key, (0, 0, 0), b"", payload))
            return
        if self._same_bytes(key, stamp, digest):
            return
        self.parsed_files += 1
        if status == manifest_reader.NOT_UTF8:
            self._store(key, _unreadable(key, stamp, digest, payload))
        elif status == manifest_reader.YAML_ERROR:
            self._store(key, _ParsedFile(stamp, digest, (), (_yaml_error(key, payload),), ()))
        else:
            self._store(key, _validated(key, stamp, digest, payload))

    def _same_bytes(self, key: str, stamp: tuple[int, int, int], digest: bytes) -> bool:
        """Whether ``key`` holds the bytes already parsed (then only its stamp is refreshed)."""
        cached = self._files.get(key)
        if cached is None or cached.digest != digest:
            return False
        self._files[key] = replace(cached, stamp=stamp)
        return True

    def _refresh(self, path: Path) -> None:
        if not path.is_relative_to(self.root) or path == self.root:
            self._rescan()
        elif _ignored(path, self.root):
            # A dotfile or backup is nothing to us, but a change inside a hidden folder may be
            # Kubernetes swapping a ConfigMap's ..data link: visible files may now resolve to
            # other bytes, so look at everything, by stamp.
            hidden_parents = any(p.startswith(".") for p in path.relative_to(self.root).parts[:-1])
            if hidden_parents or path.name.startswith(".."):
                self._rescan()
        elif path.is_dir():
            present = _manifest_paths(path)
            keep = set(present)
            for gone in [p for p in self._files if Path(p).is_relative_to(path) and p not in keep]:
                self._forget(gone)
            for found in present:
                self._load(found, known_stamp=True)
        elif path.suffix not in _SUFFIXES:
            # Neither a manifest nor a folder: possibly a deleted folder (no way to tell now).
            for gone in [p for p in self._files if Path(p).is_relative_to(path)]:
                self._forget(gone)
        else:
            self._load(str(path), known_stamp=False)

    def _forget(self, key: str) -> None:
        self._replace(key, self._files.pop(key), None)

    def _store(self, key: str, parsed: _ParsedFile) -> None:
        old = self._files.get(key)
        if old is not None and parsed.errors:
            parsed = _keeping_last_good(old, parsed)
        self._files[key] = parsed
        self._replace(key, old, parsed)

    def _replace(self, key: str, old: _ParsedFile | None, new: _ParsedFile | None) -> None:
        """Move the merged view from ``old`` to ``new`` contents of the file ``key``."""
        touched: set[str] = set()
        if old is not None:
            for obj, _ in old.objects:
                ref = obj.ref
                self._claims[ref] = [c for c in self._claims[ref] if c[0] != key]
                touched.add(ref)
        if new is not None:
            for position, (obj, where) in enumerate(new.objects):
                ref = obj.ref
                claims = self._claims.get(ref)
                if claims is None and ref not in touched:
                    # The first claim of a name nothing held: served as it is (a first read's case).
                    self._claims[ref] = [(key, position, obj, where)]
                    self._serve(ref, obj, where)
                    continue
                self._claims.setdefault(ref, []).append((key, position, obj, where))
                touched.add(ref)
        if new is not None and (new.errors or new.warnings):
            self._noisy.add(key)
        else:
            self._noisy.discard(key)
        for ref in touched:
            self._elect(ref)

    def _serve(self, ref: str, obj: Resource, where: str) -> None:
        model = type(obj)
        self._winners[ref] = obj
        self._objects.setdefault(model, {})[obj.key] = obj
        self._dirty.add(model)
        self._touched.setdefault(model, set()).add(obj.key)
        self._origins[ref] = where
        self._origins_touched.add(ref)

    def _elect(self, ref: str) -> None:
        """Serve the first claim of ``ref`` in file order (or nothing, when none is left)."""
        held = self._winners.pop(ref, None)
        if held is not None:
            model = type(held)
            self._objects[model].pop(held.key, None)
            self._dirty.add(model)
            self._touched.setdefault(model, set()).add(held.key)
            del self._origins[ref]
            self._origins_touched.add(ref)
        claims = self._claims.get(ref)
        if claims is not None and len(claims) > 1:
            self._duplicated.add(ref)
        else:
            self._duplicated.discard(ref)
        if not claims:
            self._claims.pop(ref, None)
            return
        claims.sort(key=lambda c: (c[0], c[1]))
        _, _, obj, where = claims[0]
        self._serve(ref, obj, where)

    def _load(self, key: str, *, known_stamp: bool) -> None:
        # Plain strings and os calls: at 30,000 files, Path objects cost a few hundred ms.
        try:
            stat = os.stat(key)
            cached = self._files.get(key)
            if known_stamp and cached is not None and cached.stamp == _stamp(stat):
                return
            with open(key, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            # Deleted (perhaps while we read it): gone, not an error.
            if key in self._files:
                self._forget(key)
            return
        except OSError as exc:
            self._store(key, _unreadable(key, (0, 0, 0), b"", str(exc)))
            return
        if self._same_bytes(key, _stamp(stat), hashlib.sha256(data).digest()):
            return
        if len(data) >= _CHILD_PARSES_BYTES:
            # ryaml holds the GIL for the whole file (~60 ms a MB): a big one is parsed in a
            # child, so the event loop (this runs in its worker thread) never waits that long.
            results = list(manifest_reader.Prefetch.start([key]).results())
            if results and results[0][3] != manifest_reader.PARSE_HERE:
                self._take(results[0])
                return
        self.parsed_files += 1
        self._store(key, _parse_file(key, _stamp(stat), data))

    def _assemble(self) -> ResourceSet:
        if not self.root.is_dir():
            raise ManifestErrors([ManifestError("not a directory", path=str(self.root))])
        errors: list[tuple[str, int, ManifestError]] = []
        warnings: list[str] = []
        for path in sorted(self._noisy):
            parsed = self._files[path]
            errors.extend((path, -1, e) for e in parsed.errors)
            warnings.extend(parsed.warnings)
        for ref in self._duplicated:
            claims = self._claims[ref]
            for path, position, _, where in claims[1:]:
                first = claims[0][3]
                error = ManifestError(
                    f"defined twice (first in {first}, which is served)", path=where, ref=ref
                )
                errors.append((path, position, error))
        errors.sort(key=lambda e: (e[0], e[1]))
        for model in self._dirty:
            by_key = self._objects.get(model, {})
            if by_key:
                self._handed[model] = MappingProxyType(dict(by_key))
            else:
                self._handed.pop(model, None)
        self._dirty.clear()
        handed = self._handed_origins
        if self._origins_dirty or any(self._origins.get(r) != handed.get(r) for r in self._origins_touched):
            self._handed_origins = MappingProxyType(dict(self._origins))
            self._origins_dirty = False
        self._origins_touched.clear()
        resources = ResourceSet(
            objects=dict(self._handed),
            origins=self._handed_origins,
            warnings=tuple(warnings),
            errors=tuple(e for _, _, e in errors),
        )
        if self._handed_token is not None:
            resources.since(self._handed_token, {m: frozenset(keys) for m, keys in self._touched.items()})
        self._touched.clear()
        self._handed_token = resources.token
        return resources


def read_directory(root: str | Path, *, prefetch: manifest_reader.Prefetch | None = None) -> ResourceSet:
    """Read and validate every manifest below ``root``; raise ``ManifestErrors`` listing all
    problems, if there are any (``meshxds translate`` and ``validate`` want all or nothing).
    ``prefetch``: the YAML of ``root``, already being read by a child process."""
    resources = DirectorySource(root, prefetch=prefetch).read()
    if resources.errors:
        raise ManifestErrors(resources.errors)
    return resources


async def watch_directory(
    root: str | Path,
    *,
    debounce_ms: int = 100,
    max_wait_ms: int = 1000,
    stop_event: asyncio.Event | None = None,
    source: DirectorySource | None = None,
) -> AsyncIterator[ResourceSet | ManifestErrors]:
    """Yield the directory's content now and after every burst of changes: a ``ResourceSet``
    (invalid objects in its ``errors``), or ``ManifestErrors`` when the folder itself is gone
    (the caller keeps its last good set). A burst ends ``debounce_ms`` after its last change,
    or ``max_wait_ms`` after its first. Reading runs in a worker thread, so the event loop keeps
    serving streams meanwhile."""
    reader = source or DirectorySource(root)

    def read_building(changed: Iterable[str] | None) -> ResourceSet:
        with building():
            return reader.read(changed)

    async def read(changed: Iterable[str] | None) -> ResourceSet | ManifestErrors:
        try:
            return await asyncio.to_thread(read_building, changed)
        except ManifestErrors as exc:
            return exc

    # The watcher reports a batch once ``step`` ms pass with no new change; the debounce is
    # ours, so a burst is read ``debounce_ms`` after its last change: the quiet ``step`` already
    # seen counts (waiting the whole debounce after the report would add a step to every edit).
    step = min(debounce_ms, _WATCH_STEP_MS)
    quiet_s = (debounce_ms - step) / 1000
    changes = awatch(
        root,
        debounce=max(max_wait_ms, debounce_ms),
        step=step,
        stop_event=stop_event,
        recursive=True,
    )
    loop = asyncio.get_running_loop()
    # Watch before the first read: awatch creates its watcher on the first anext(), and a change
    # made before that (while the caller handles the first read, say) would never be reported.
    pending: asyncio.Future[set[tuple[Change, str]]] = asyncio.ensure_future(anext(changes))
    try:
        await asyncio.sleep(0)  # let the watcher start (it does before its first await)
        yield await read(None)
        while True:
            try:
                batch = await pending
            except StopAsyncIteration:  # the stop event was set
                return
            paths = {p for _, p in batch}
            deadline = loop.time() + max(max_wait_ms, debounce_ms) / 1000
            pending = asyncio.ensure_future(anext(changes))
            while (remaining := deadline - loop.time()) > 0:
                done, _ = await asyncio.wait({pending}, timeout=min(quiet_s, remaining))
                if not done:
                    break  # quiet for debounce_ms since the last change: the burst is over
                try:
                    paths |= {p for _, p in pending.result()}
                except StopAsyncIteration:
                    return
                pending = asyncio.ensure_future(anext(changes))
            log.debug("manifest change: %s", sorted(paths))
            yield await read(sorted(paths))
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await changes.aclose()
