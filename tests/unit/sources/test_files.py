"""The directory source: a recursive, multi-document read as one set, and a watch that re-reads it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest

from meshxds.errors import ManifestErrors
from meshxds.model import core, gatewayapi
from meshxds.model.manifests import ResourceSet
from meshxds.pipeline import changes_between
from meshxds.sources.files import DirectorySource, manifest_files, read_directory, watch_directory

WAIT_S = 10.0


def service_yaml(name: str, port: int = 80, namespace: str = "default") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"spec:\n  ports:\n    - port: {port}\n"
    )


def write(path: Path, text: str) -> None:
    """Write atomically (a rename), so a watcher never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def service_names(resources: ResourceSet) -> list[str]:
    return [s.name for s in resources.all(core.Service)]


# --- read_directory --------------------------------------------------------------------------------


def test_reads_every_manifest_recursively_and_every_document(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("a") + "---\n" + service_yaml("b") + "---\n")
    write(tmp_path / "nested" / "deeper" / "c.yml", service_yaml("c"))
    write(
        tmp_path / "d.json",
        '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "d"},'
        ' "spec": {"ports": [{"port": 1}]}}',
    )
    write(tmp_path / "notes.txt", service_yaml("not-a-manifest-suffix"))
    resources = read_directory(tmp_path)
    assert service_names(resources) == ["a", "b", "c", "d"]
    assert resources.origins["Service/default/b"] == f"{tmp_path / 'a.yaml'}#1"
    assert resources.origins["Service/default/c"] == str(tmp_path / "nested" / "deeper" / "c.yml")


def test_dotfiles_hidden_folders_and_backup_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "kept.yaml", service_yaml("kept"))
    write(tmp_path / ".hidden.yaml", service_yaml("dotfile"))
    write(tmp_path / ".git" / "x.yaml", service_yaml("hidden-dir"))
    write(tmp_path / "..data" / "x.yaml", service_yaml("k8s-configmap-link"))
    (tmp_path / "kept.yaml~").write_text("{{{ not even yaml", encoding="utf-8")
    assert manifest_files(tmp_path) == [tmp_path / "kept.yaml"]
    assert service_names(read_directory(tmp_path)) == ["kept"]


def test_a_dotted_root_folder_is_still_read(tmp_path: Path) -> None:
    root = tmp_path / ".config"
    write(root / "a.yaml", service_yaml("a"))
    assert service_names(read_directory(root)) == ["a"]


def test_read_order_is_deterministic(tmp_path: Path) -> None:
    for name in ["z", "a", "m"]:
        write(tmp_path / f"{name}.yaml", service_yaml(name))
    assert manifest_files(tmp_path) == sorted(manifest_files(tmp_path))
    assert list(read_directory(tmp_path).origins) == [f"Service/default/{n}" for n in ["a", "m", "z"]]


def test_yaml_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", service_yaml("ok") + "---\nkind: Service\nmetadata: [unclosed\n")
    with pytest.raises(ManifestErrors) as info:
        read_directory(tmp_path)
    (error,) = info.value.errors
    assert error.path.startswith(f"{tmp_path / 'bad.yaml'}:")
    line = int(error.path.split(":")[-2])
    assert line in (12, 13), error.path  # the unclosed flow sequence on line 12, reported there or at EOF
    assert error.message.startswith("invalid YAML:")


def test_a_syntax_error_rejects_the_whole_file(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", service_yaml("before") + "---\n: : :\n  - [\n")
    with pytest.raises(ManifestErrors) as info:
        read_directory(tmp_path)
    assert all("before" not in str(e) for e in info.value.errors)


def test_every_problem_of_a_directory_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path / "a-syntax.yaml", "a: [\n")
    write(tmp_path / "b-field.yaml", service_yaml("web", port=0))
    write(tmp_path / "c-dup.yaml", service_yaml("dup"))
    write(tmp_path / "d-dup.yaml", service_yaml("dup"))
    (tmp_path / "e-binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ManifestErrors) as info:
        read_directory(tmp_path)
    files = [Path(e.path.split(":")[0].split("#")[0]).name for e in info.value.errors]
    assert sorted(files) == ["a-syntax.yaml", "b-field.yaml", "d-dup.yaml", "e-binary.yaml"]
    field_error = next(e for e in info.value.errors if "b-field" in e.path)
    assert (field_error.ref, field_error.field_path) == ("Service/default/web", "spec.ports[0].port")


def test_missing_directory_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestErrors, match="not a directory"):
        read_directory(tmp_path / "absent")


def test_unknown_kinds_and_fields_are_warnings_of_the_set(tmp_path: Path) -> None:
    write(tmp_path / "sa.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n")
    write(
        tmp_path / "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        "metadata:\n  name: r\nspec:\n  sparkle: true\n",
    )
    resources = read_directory(tmp_path)
    assert [r.name for r in resources.all(gatewayapi.HTTPRoute)] == ["r"]
    assert len(resources.warnings) == 2
    assert "field spec.sparkle" in resources.warnings[0]  # route.yaml, then sa.yaml
    assert "kind ServiceAccount" in resources.warnings[1]


# --- watch_directory -------------------------------------------------------------------------------

Read = ResourceSet | ManifestErrors
Watch = AsyncGenerator[Read, None]


async def next_until(watch: Watch, accept: Callable[[Read], bool]) -> Read:
    """The first yielded item ``accept`` likes (one save may be seen as several events), bounded."""

    async def scan() -> Read:
        async for item in watch:
            if accept(item):
                return item
        raise AssertionError("the watch ended early")

    return await asyncio.wait_for(scan(), WAIT_S)


def names_are(*expected: str) -> Callable[[Read], bool]:
    return lambda item: isinstance(item, ResourceSet) and service_names(item) == list(expected)


def ports_of(item: Read, name: str) -> list[int]:
    if not isinstance(item, ResourceSet):
        return []
    svc = item.get(core.Service, "default", name)
    return [p.port for p in svc.spec.ports] if svc is not None else []


@pytest.fixture
async def start_watch(tmp_path: Path) -> AsyncIterator[Callable[[], Watch]]:
    """Start watches of ``tmp_path``; each is stopped and closed after the test."""
    stop = asyncio.Event()
    started: list[Watch] = []

    def start() -> Watch:
        watch = cast(Watch, watch_directory(tmp_path, debounce_ms=20, stop_event=stop))
        started.append(watch)
        return watch

    yield start
    stop.set()
    for watch in started:
        await asyncio.wait_for(watch.aclose(), WAIT_S)


async def test_watch_yields_now_and_after_add_change_and_remove(
    tmp_path: Path, start_watch: Callable[[], Watch]
) -> None:
    write(tmp_path / "a.yaml", service_yaml("a"))
    watch = start_watch()
    first = await asyncio.wait_for(anext(watch), WAIT_S)
    assert names_are("a")(first)

    write(tmp_path / "sub" / "b.yaml", service_yaml("b"))
    await next_until(watch, names_are("a", "b"))

    write(tmp_path / "a.yaml", service_yaml("a", port=8080))
    changed = await next_until(watch, lambda item: ports_of(item, "a") == [8080])
    assert names_are("a", "b")(changed)

    (tmp_path / "a.yaml").unlink()
    await next_until(watch, names_are("b"))


async def test_watch_yields_errors_after_a_bad_write_then_recovers(
    tmp_path: Path, start_watch: Callable[[], Watch]
) -> None:
    write(tmp_path / "a.yaml", service_yaml("a"))
    write(tmp_path / "b.yaml", service_yaml("b"))
    watch = start_watch()
    assert names_are("a", "b")(await asyncio.wait_for(anext(watch), WAIT_S))

    write(tmp_path / "a.yaml", service_yaml("a", port=0))
    bad = await next_until(watch, lambda item: isinstance(item, ResourceSet) and bool(item.errors))
    assert isinstance(bad, ResourceSet)
    assert [(e.ref, e.field_path) for e in bad.errors] == [("Service/default/a", "spec.ports[0].port")]
    assert ports_of(bad, "a") == [80]  # the last good version is still served, and so is b
    assert names_are("a", "b")(bad)

    write(tmp_path / "b.yaml", service_yaml("b", port=82))  # other edits land meanwhile
    assert ports_of(await next_until(watch, lambda item: ports_of(item, "b") == [82]), "a") == [80]

    write(tmp_path / "a.yaml", service_yaml("a", port=81))
    fixed = await next_until(watch, lambda item: ports_of(item, "a") == [81])
    assert isinstance(fixed, ResourceSet) and not fixed.errors


async def test_a_change_right_after_the_first_read_is_not_lost(
    tmp_path: Path, start_watch: Callable[[], Watch]
) -> None:
    watch = start_watch()
    assert names_are()(await asyncio.wait_for(anext(watch), WAIT_S))
    # The consumer is still busy with the first set (translating it, say) when the file lands.
    write(tmp_path / "a.yaml", service_yaml("a"))
    await asyncio.sleep(0.2)
    await next_until(watch, names_are("a"))


async def test_watch_of_a_broken_directory_starts_with_its_errors(
    tmp_path: Path, start_watch: Callable[[], Watch]
) -> None:
    write(tmp_path / "a.yaml", "a: [\n")
    write(tmp_path / "b.yaml", service_yaml("b"))
    first = await asyncio.wait_for(anext(start_watch()), WAIT_S)
    assert isinstance(first, ResourceSet)
    assert names_are("b")(first)  # the rest is served from the start
    assert [e.path.split(":")[0] for e in first.errors] == [str(tmp_path / "a.yaml")]


async def test_watch_ends_when_the_stop_event_is_set(tmp_path: Path) -> None:
    stop = asyncio.Event()
    watch = watch_directory(tmp_path, debounce_ms=20, stop_event=stop)
    await asyncio.wait_for(anext(watch), WAIT_S)
    pending = asyncio.ensure_future(anext(watch, None))
    await asyncio.sleep(0.1)
    assert not pending.done()
    stop.set()
    assert await asyncio.wait_for(pending, WAIT_S) is None


# --- DirectorySource: incremental reads ---------------------------------------------------------


def test_a_change_re_reads_only_the_files_it_names(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.yaml", service_yaml(name))
    source = DirectorySource(tmp_path)
    assert service_names(source.read()) == ["a", "b", "c"]
    assert source.parsed_files == 3

    write(tmp_path / "b.yaml", service_yaml("b", port=8080))
    resources = source.read([str(tmp_path / "b.yaml")])
    assert source.parsed_files == 4
    assert [p.port for p in resources.get(core.Service, "default", "b").spec.ports] == [8080]  # type: ignore[union-attr]
    assert service_names(resources) == ["a", "b", "c"]


def test_unchanged_files_keep_their_parsed_objects(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("a"))
    write(tmp_path / "b.yaml", service_yaml("b"))
    source = DirectorySource(tmp_path)
    before = source.read()
    write(tmp_path / "b.yaml", service_yaml("b"))  # same bytes, new inode
    after = source.read(None)
    assert source.parsed_files == 2
    for name in ("a", "b"):
        assert after.get(core.Service, "default", name) is before.get(core.Service, "default", name)


def test_added_removed_and_folder_changes(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("a"))
    source = DirectorySource(tmp_path)
    source.read()
    write(tmp_path / "sub" / "b.yaml", service_yaml("b"))
    assert service_names(source.read([str(tmp_path / "sub")])) == ["a", "b"]
    (tmp_path / "sub" / "b.yaml").unlink()
    (tmp_path / "sub").rmdir()
    assert service_names(source.read([str(tmp_path / "sub")])) == ["a"]
    (tmp_path / "a.yaml").unlink()
    assert service_names(source.read([str(tmp_path / "a.yaml")])) == []


def test_a_file_deleted_before_it_is_read_is_gone_not_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("a"))
    source = DirectorySource(tmp_path)
    source.read()
    (tmp_path / "a.yaml").unlink()
    # The watcher reported files that were removed again before the read: no error, just gone.
    assert service_names(source.read([str(tmp_path / "a.yaml"), str(tmp_path / "never.yaml")])) == []


def test_a_change_in_a_hidden_folder_rescans_like_a_configmap_swap(tmp_path: Path) -> None:
    data = tmp_path / "..v1"
    write(data / "a.yaml", service_yaml("a"))
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "a.yaml").symlink_to(Path("..data") / "a.yaml")
    source = DirectorySource(tmp_path)
    assert [p.port for p in source.read().all(core.Service)[0].spec.ports] == [80]
    # kubelet writes a new folder and swaps the ..data link; a.yaml itself never changes.
    write(tmp_path / "..v2" / "a.yaml", service_yaml("a", port=81))
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    resources = source.read([str(tmp_path / "..data")])
    assert [p.port for p in resources.all(core.Service)[0].spec.ports] == [81]


def test_yaml_reads_timestamps_and_nulls_as_the_api_server_does(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  creationTimestamp: 2024-01-01T00:00:00Z\n"
        "  labels: null\nspec:\n  ports:\n    - port: 80\n",
    )
    resources = read_directory(tmp_path)
    assert service_names(resources) == ["a"]


def test_a_duplicate_takes_over_when_the_first_definition_goes(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("web", port=81))
    write(tmp_path / "b.yaml", service_yaml("web", port=82))
    source = DirectorySource(tmp_path)
    both = source.read()
    assert [(e.ref, e.path) for e in both.errors] == [("Service/default/web", str(tmp_path / "b.yaml"))]
    assert [p.port for p in both.all(core.Service)[0].spec.ports] == [81]  # the first definition
    (tmp_path / "a.yaml").unlink()
    resources = source.read([str(tmp_path / "a.yaml")])
    assert [p.port for p in resources.all(core.Service)[0].spec.ports] == [82]
    assert resources.origins["Service/default/web"] == str(tmp_path / "b.yaml")


def test_kinds_nothing_touched_are_handed_out_as_the_same_mapping(tmp_path: Path) -> None:
    write(tmp_path / "svc.yaml", service_yaml("web"))
    write(tmp_path / "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n")
    source = DirectorySource(tmp_path)
    before = source.read()
    write(tmp_path / "svc.yaml", service_yaml("web", port=81))
    after = source.read([str(tmp_path / "svc.yaml")])
    assert after.objects[core.Namespace] is before.objects[core.Namespace]
    assert after.objects[core.Service] is not before.objects[core.Service]


@pytest.mark.parametrize("seed", range(20))
def test_incremental_reads_equal_a_fresh_read(tmp_path: Path, seed: int) -> None:
    """Random edits (adds, rewrites, deletes, duplicates across files, broken files) read
    incrementally give what reading the directory afresh gives: objects, origins, errors; and
    the keys each read says changed (``changed_since``) find what a diff of everything finds."""
    import random

    rng = random.Random(seed)
    source = DirectorySource(tmp_path)
    handed: list[ResourceSet] = []

    def diffed_both_ways(resources: ResourceSet) -> None:
        if handed:
            hinted = changes_between(handed[-1], resources)
            assert resources.changed_since is not None and resources.changed_since[0] == handed[-1].token
            full = changes_between(handed[-1], dataclasses.replace(resources))  # a copy has no hint
            assert sorted(map(id, hinted.objects)) == sorted(map(id, full.objects))
            assert hinted.kinds == full.kinds
        handed.append(resources)

    def outcome(read: Callable[[], ResourceSet], *, incremental: bool = False) -> object:
        try:
            resources = read()
        except ManifestErrors as exc:
            return sorted((e.path, e.ref, e.message) for e in exc.errors)
        if incremental:
            diffed_both_ways(resources)
        if resources.errors:
            return sorted((e.path, e.ref, e.message) for e in resources.errors)
        return (
            {
                m.KIND: sorted((k, o.model_dump_json()) for k, o in v.items())
                for m, v in resources.objects.items()
            },
            dict(resources.origins),
            resources.warnings,
        )

    outcome(source.read, incremental=True)
    for _ in range(25):
        path = tmp_path / f"f{rng.randrange(6)}.yaml"
        action = rng.random()
        if action < 0.2 and path.exists():
            path.unlink()
        elif action < 0.3:
            write(path, "a: [\n")
        else:
            names = rng.sample(["a", "b", "c", "d"], k=rng.randrange(1, 3))
            write(path, "---\n".join(service_yaml(n, port=rng.randrange(1, 4)) for n in names))
        incremental = outcome(lambda changed=str(path): source.read([changed]), incremental=True)
        if not any(f.read_text() == "a: [\n" for f in tmp_path.glob("*.yaml")):
            # A broken file keeps its last good objects, which a fresh read cannot know.
            assert incremental == outcome(lambda: read_directory(tmp_path))


# --- the YAML reader process (a first read of a large directory) ------------------------------------


def _outcome(source: DirectorySource) -> tuple[object, ...]:
    resources = source.read()
    return (
        {
            m.KIND: sorted((k, o.model_dump_json()) for k, o in v.items())
            for m, v in resources.objects.items()
        },
        dict(resources.origins),
        resources.warnings,
        sorted((e.path, e.ref, e.field_path, e.message) for e in resources.errors),
    )


def _mixed_directory(root: Path) -> None:
    for i in range(40):
        write(
            root / f"svc/s{i:02}.yaml", service_yaml(f"s{i}") + "---\n---\n" + service_yaml(f"t{i}", port=81)
        )
    write(root / "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n")
    write(root / "extra.yaml", service_yaml("x").replace("ports:", "colour: blue\n  ports:"))
    write(root / "nulls.yaml", service_yaml("n").replace("metadata:", "metadata:\n  labels:"))
    write(
        root / "when.yaml",
        service_yaml("w").replace("metadata:", "metadata:\n  creationTimestamp: 2024-01-01T00:00:00Z"),
    )


def test_a_large_first_read_in_the_reader_process_equals_an_in_process_read(tmp_path: Path) -> None:
    _mixed_directory(tmp_path)
    worker = DirectorySource(tmp_path, worker_min_files=1)
    assert _outcome(worker) == _outcome(DirectorySource(tmp_path, worker_min_files=10**9))
    assert worker.parsed_files == 44
    # Later reads are incremental and in this process, from the cache the reader filled.
    write(tmp_path / "svc/s00.yaml", service_yaml("s0", port=99))
    assert service_names(worker.read([str(tmp_path / "svc/s00.yaml")])).count("s0") == 1
    assert worker.parsed_files == 45


def test_the_reader_process_reports_problems_as_an_in_process_read_does(tmp_path: Path) -> None:
    _mixed_directory(tmp_path)
    write(tmp_path / "a-syntax.yaml", "a: [\n")
    write(tmp_path / "b-field.yaml", service_yaml("web", port=0))
    write(tmp_path / "c-dup.yaml", service_yaml("dup"))
    write(tmp_path / "d-dup.yaml", service_yaml("dup"))
    (tmp_path / "e-binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "f-unreadable.yaml").mkdir()  # a folder named like a manifest: scanned as a folder
    in_process = _outcome(DirectorySource(tmp_path, worker_min_files=10**9))
    assert isinstance(in_process, tuple) and len(in_process[3]) == 4
    assert _outcome(DirectorySource(tmp_path, worker_min_files=1)) == in_process


def test_a_reader_process_that_fails_leaves_the_read_to_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshxds.sources import manifest_reader

    _mixed_directory(tmp_path)
    expected = _outcome(DirectorySource(tmp_path, worker_min_files=10**9))
    # A child that answers for nothing and exits: everything is read here instead.
    monkeypatch.setattr(manifest_reader.sys, "executable", "/bin/true")
    source = DirectorySource(tmp_path, worker_min_files=1)
    assert _outcome(source) == expected
    assert source.parsed_files == 44


def test_the_reader_process_answers_for_a_file_gone_before_it_was_read(tmp_path: Path) -> None:
    import subprocess
    import sys

    from meshxds.sources import manifest_reader

    write(tmp_path / "a.yaml", service_yaml("a"))
    (tmp_path / "b.yaml").write_bytes(b"\xff")
    paths = [str(tmp_path / "a.yaml"), str(tmp_path / "gone.yaml"), str(tmp_path / "b.yaml")]
    done = subprocess.run(
        [sys.executable, "-m", manifest_reader.__name__],
        input=b"\0".join(os.fsencode(p) for p in paths),
        capture_output=True,
        timeout=30,
        check=True,
    )
    import io

    (batch,) = list(manifest_reader._frames(io.BytesIO(done.stdout)))
    assert [(path, status) for path, _, _, status, _ in batch] == [
        (paths[0], manifest_reader.BODIES),
        (paths[1], manifest_reader.GONE),
        (paths[2], manifest_reader.NOT_UTF8),
    ]
    assert batch[0][4][0]["metadata"]["name"] == "a"


# --- one bad object never holds back the rest ---------------------------------------------------


def test_an_invalid_object_is_left_out_and_reported_and_the_rest_is_served(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("good") + "---\n" + service_yaml("bad", port=0))
    write(tmp_path / "b.yaml", service_yaml("other"))
    resources = DirectorySource(tmp_path).read()
    assert service_names(resources) == ["good", "other"]
    assert [(e.path, e.ref, e.field_path) for e in resources.errors] == [
        (f"{tmp_path / 'a.yaml'}#1", "Service/default/bad", "spec.ports[0].port")
    ]
    with pytest.raises(ManifestErrors):  # the CLI's read is all or nothing
        read_directory(tmp_path)


def test_an_object_turned_invalid_keeps_its_last_good_version(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("web", port=81) + "---\n" + service_yaml("api", port=90))
    source = DirectorySource(tmp_path)
    source.read()
    write(tmp_path / "a.yaml", service_yaml("web", port=0) + "---\n" + service_yaml("api", port=91))
    resources = source.read([str(tmp_path / "a.yaml")])
    assert ports_of(resources, "web") == [81] and ports_of(resources, "api") == [91]
    (error,) = resources.errors
    assert error.ref == "Service/default/web" and "still serving its last good version" in error.message
    # Deleting the document deletes the object: only an invalid document keeps the old one.
    write(tmp_path / "a.yaml", service_yaml("api", port=91))
    resources = source.read([str(tmp_path / "a.yaml")])
    assert service_names(resources) == ["api"] and not resources.errors


def test_a_file_that_no_longer_parses_keeps_its_last_good_objects(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_yaml("web") + "---\n" + service_yaml("api"))
    source = DirectorySource(tmp_path)
    source.read()
    write(tmp_path / "a.yaml", "a: [\n")
    resources = source.read([str(tmp_path / "a.yaml")])
    assert service_names(resources) == ["api", "web"]
    (error,) = resources.errors
    assert (
        error.message.startswith("invalid YAML") and "last good version of its 2 object(s)" in error.message
    )
    write(tmp_path / "a.yaml", service_yaml("web"))
    assert service_names(source.read([str(tmp_path / "a.yaml")])) == ["web"]


def test_a_prefetch_started_before_the_read_is_what_the_first_read_takes(tmp_path: Path) -> None:
    from meshxds.sources import manifest_reader

    _mixed_directory(tmp_path)
    expected = _outcome(DirectorySource(tmp_path, worker_min_files=10**9))
    prefetch = manifest_reader.Prefetch.start(manifest_reader.manifest_paths(str(tmp_path)))
    child = prefetch.child
    assert child is not None
    source = DirectorySource(tmp_path, prefetch=prefetch, worker_min_files=10**9)
    assert _outcome(source) == expected
    assert child.returncode is not None  # waited for, not left behind
    assert manifest_reader.prefetch(str(tmp_path / "absent")) is None
    assert manifest_reader.prefetch(str(tmp_path)) is None  # 44 files: not worth a child


def test_a_big_file_is_parsed_in_the_reader_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshxds.sources import manifest_reader

    big = "---\n".join(service_yaml(f"s{i}", port=80 + i % 100) for i in range(5000))
    assert len(big) > 512 * 1024
    write(tmp_path / "big.yaml", big)
    write(tmp_path / "small.yaml", service_yaml("small"))
    expected = _outcome(DirectorySource(tmp_path, worker_min_files=10**9))
    started: list[list[str]] = []
    real_start = manifest_reader.Prefetch.start
    monkeypatch.setattr(
        manifest_reader.Prefetch,
        "start",
        classmethod(lambda cls, paths: started.append(paths) or real_start(paths)),
    )
    source = DirectorySource(tmp_path, worker_min_files=10**9)
    assert _outcome(source) == expected
    assert started == [[str(tmp_path / "big.yaml")]]  # the small file is parsed here
    # An edit of the big file goes to the reader process again; the same bytes are not parsed.
    write(tmp_path / "big.yaml", big.replace("name: s0\n", "name: renamed\n", 1))
    assert "renamed" in service_names(source.read([str(tmp_path / "big.yaml")]))
    write(tmp_path / "big.yaml", big.replace("name: s0\n", "name: renamed\n", 1))
    source.read([str(tmp_path / "big.yaml")])
    assert len(started) == 2


async def test_reading_a_big_file_never_stalls_the_event_loop(tmp_path: Path) -> None:
    """The reading runs in a worker thread; YAML parsing, which holds the GIL for a whole file,
    runs in the reader process: the loop keeps ticking (issue 10: /healthz during a reload)."""
    write(tmp_path / "big.yaml", "---\n".join(service_yaml(f"s{i}") for i in range(20000)))
    from meshxds.memory import building

    source = DirectorySource(tmp_path, worker_min_files=10**9)

    def read() -> ResourceSet:
        with building():  # as watch_directory reads: no cyclic GC pass (a pause of its own)
            return source.read()

    gaps: list[float] = []
    reading = asyncio.ensure_future(asyncio.to_thread(read))
    last = asyncio.get_running_loop().time()
    for _ in range(5000):  # bounded: at 5 ms a tick, 25 s at most
        if reading.done():
            break
        await asyncio.sleep(0.005)
        now = asyncio.get_running_loop().time()
        gaps.append(now - last)
        last = now
    resources = await asyncio.wait_for(reading, WAIT_S * 6)
    assert len(resources.all(core.Service)) == 20000
    assert len(gaps) >= 10, "the read was too quick to tell"
    assert max(gaps) < 0.15, f"the loop stalled {max(gaps):.3f} s"


def test_explicit_nulls_found_in_real_inputs_are_absent_fields(tmp_path: Path) -> None:
    # As in Envoy Gateway's test inputs (bench/corpus_validate.py): the API server prunes a
    # null, then applies the CRD's default (a RouteGroupKind's group), so these are all valid.
    write(
        tmp_path / "nulls.yaml",
        """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default, creationTimestamp: 2024-05-01T10:00:00Z}
spec:
  gatewayClassName: c
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      kinds:
      - {group: null, kind: HTTPRoute}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  rules:
  - matches: null
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: null, add: null, remove: null}
    backendRefs: [{name: web, port: 80}]
""",
    )
    resources = read_directory(tmp_path)
    [gateway] = resources.all(gatewayapi.Gateway)
    [listener] = gateway.spec.listeners
    assert [(k.group, k.kind) for k in listener.allowed_routes.kinds] == [
        ("gateway.networking.k8s.io", "HTTPRoute")
    ]
    [route] = resources.all(gatewayapi.HTTPRoute)
    [rule] = route.spec.rules
    assert rule.matches == [gatewayapi.HTTPRouteMatch()]  # the CRD's default: every path
    modifier = rule.filters[0].request_header_modifier
    assert modifier is not None
    assert (modifier.set, modifier.add, modifier.remove) == ([], [], [])
