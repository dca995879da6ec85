"""Files that survive a kill: atomic writes, tolerant JSONL, folder swaps, the run lock."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading

import attrs
import pytest

from autointerp.storage import (
    CorruptRunFile,
    JsonlAppender,
    RunLock,
    append_jsonl,
    atomic_write_text,
    atomic_write_with,
    completed_keys,
    from_dict,
    read_jsonl,
    read_jsonl_as,
    recover_dir,
    replace_dir_atomically,
    to_dict,
)
from autointerp.schemas import ActivationExample, ComponentData, HarvestConfig, LayerSpec, TokenStats, TokenUsage


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.pt"
    atomic_write_text(path, "old")

    def crash(tmp):
        tmp.write_text("half of the new fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(path, crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_torn_last_jsonl_line_is_dropped_and_the_next_append_starts_clean(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"i": 0})
    append_jsonl(path, TokenUsage(input_tokens=3))
    with open(path, "ab") as f:
        f.write(b'{"i": 2, "label": "half a')  # killed mid-write
    assert list(read_jsonl(path)) == [{"i": 0}, {"input_tokens": 3, "output_tokens": 0,
                                                  "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}]
    append_jsonl(path, {"i": 3})
    assert [r.get("i") for r in read_jsonl(path)] == [0, None, 3]
    assert read_jsonl_as(path, TokenUsage) == [TokenUsage(), TokenUsage(input_tokens=3), TokenUsage()]


def test_read_jsonl_of_a_missing_file_is_empty(tmp_path):
    assert list(read_jsonl(tmp_path / "nope.jsonl")) == []


def _fill(files):
    def fill(tmp):
        for name, text in files.items():
            (tmp / name).write_text(text)
    return fill


def test_replace_dir_swaps_the_whole_folder(tmp_path):
    target = tmp_path / "harvest"
    replace_dir_atomically(target, _fill({"config.json": "1", "components.jsonl": "1"}))
    replace_dir_atomically(target, _fill({"config.json": "2", "components.jsonl": "2"}))
    assert {p.name: p.read_text() for p in target.iterdir()} == {"config.json": "2", "components.jsonl": "2"}
    assert [p.name for p in tmp_path.iterdir()] == ["harvest"]


def test_a_failed_fill_leaves_the_old_folder(tmp_path):
    target = tmp_path / "harvest"
    replace_dir_atomically(target, _fill({"config.json": "1"}))

    def crash(tmp):
        (tmp / "config.json").write_text("2")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_dir_atomically(target, crash)
    assert (target / "config.json").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["harvest"]


def test_recover_dir_repairs_a_crash_between_the_two_renames(tmp_path):
    target = tmp_path / "harvest"
    old = tmp_path / ".harvest.old"
    half = tmp_path / ".harvest.new-abc"
    old.mkdir()
    (old / "config.json").write_text("old")
    half.mkdir()
    (half / "config.json").write_text("complete but never renamed")
    recover_dir(target)
    assert (target / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["harvest"]


def test_recover_dir_drops_the_old_copy_after_a_finished_swap(tmp_path):
    target = tmp_path / "harvest"
    target.mkdir()
    (target / "config.json").write_text("new")
    (tmp_path / ".harvest.old").mkdir()
    recover_dir(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["harvest"]
    assert (target / "config.json").read_text() == "new"


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from autointerp.storage import RunLock
    with RunLock(sys.argv[1], "the test run"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_run_lock_refuses_a_second_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=r"another process is writing the run \(.*\); wait for it"):
            with RunLock(tmp_path, "the run"):
                pass
        assert (tmp_path / ".lock").read_text() == str(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    # a killed holder releases the lock with its file descriptors: no stale lock
    with RunLock(tmp_path, "the run"):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())


def test_run_lock_is_released_on_exit(tmp_path):
    with RunLock(tmp_path):
        pass
    with RunLock(tmp_path):
        pass
    with RunLock(tmp_path):
        with pytest.raises(RuntimeError, match="another process is writing this run"):
            with RunLock(tmp_path):
                pass
    assert json.loads((tmp_path / ".lock").read_text()) == os.getpid()


def test_appender_group_commit(tmp_path):
    app = JsonlAppender(tmp_path / "x.jsonl")

    async def main():
        await asyncio.gather(*(app.append({"i": i}) for i in range(200)))

    asyncio.run(main())
    app.close()
    assert sorted(r["i"] for r in read_jsonl(tmp_path / "x.jsonl")) == list(range(200))


def test_appender_cuts_a_torn_tail_before_appending_and_completed_keys_skips_unnamed_records(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"component_key": "a"}\n{"other": 1}\n{"component_key": "b", "lab')
    app = JsonlAppender(path)
    app.submit({"component_key": "c"}).result()
    app.close()
    assert path.read_bytes().endswith(b'{"other": 1}\n{"component_key": "c"}\n')
    assert completed_keys(path, lambda r: r["component_key"]) == {"a", "c"}


_SLOW_SWAP = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from autointerp.storage import replace_dir_atomically
    target, go, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def fill(tmp):
        (tmp / "config.json").write_text("new")
        print("filling", flush=True)
        if how == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        while not go.exists():
            time.sleep(0.01)
        (tmp / "components.jsonl").write_text("new")

    replace_dir_atomically(target, fill)
    print("swapped", flush=True)
    """
)


def _slow_swap(target, go, how):
    return subprocess.Popen([sys.executable, "-c", _SLOW_SWAP, str(target), str(go), how], stdout=subprocess.PIPE, text=True)


def test_recover_dir_leaves_a_live_writers_fill_alone(tmp_path):
    target = tmp_path / "run" / "harvest"
    replace_dir_atomically(target, _fill({"config.json": "old"}))
    go = tmp_path / "go"
    proc = _slow_swap(target, go, "wait")
    try:
        assert proc.stdout.readline().strip() == "filling"
        (building,) = target.parent.glob(".harvest.new-*")
        recover_dir(target)  # what a loader in another process does first
        assert (building / "config.json").read_text() == "new"
        assert (target / "config.json").read_text() == "old"
        go.touch()
        assert proc.stdout.readline().strip() == "swapped"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert {p.name: p.read_text() for p in target.iterdir()} == {"config.json": "new", "components.jsonl": "new"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["harvest"]


def test_recover_dir_clears_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "run" / "harvest"
    replace_dir_atomically(target, _fill({"config.json": "old"}))
    proc = _slow_swap(target, tmp_path / "go", "die")
    assert proc.stdout.readline().strip() == "filling"
    assert proc.wait(timeout=30) == -9
    proc.stdout.close()
    assert len(list(target.parent.glob(".harvest.new-*"))) == 1  # and its swap lock file, no longer held
    recover_dir(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["harvest"]
    assert (target / "config.json").read_text() == "old"


def test_two_swaps_of_one_folder_take_turns(tmp_path):
    target = tmp_path / "harvest"
    go = tmp_path / "go"
    proc = _slow_swap(target, go, "wait")
    try:
        assert proc.stdout.readline().strip() == "filling"
        release = threading.Timer(0.3, go.touch)
        release.start()
        replace_dir_atomically(target, _fill({"config.json": "mine"}))  # waits for the other swap
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert {p.name: p.read_text() for p in target.iterdir()} == {"config.json": "mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "harvest"]


def test_a_record_that_cannot_be_stored_is_refused_before_a_byte_is_written(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"component_key": "a"})
    before = path.read_bytes()
    for bad in ({"component_key": "h.0.mlp:2", "label": "smile \ud83d"}, {"component_key": "b", "score": float("nan")}):
        with pytest.raises(ValueError, match=rf"cannot store the record of '{bad['component_key']}' as a line of UTF-8 JSON"):
            append_jsonl(path, bad)
    with pytest.raises(ValueError, match=r"the record of 'x'.*surrogates not allowed"):
        append_jsonl(path, TokenUsageWithKey())
    app = JsonlAppender(path)
    with pytest.raises(ValueError, match="surrogates not allowed"):
        app.submit({"key": "c", "reason": "\udc80"})
    app.submit({"component_key": "d"}).result()
    app.close()
    assert path.read_bytes() == before + b'{"component_key": "d"}\n'


@attrs.define
class TokenUsageWithKey:
    key: str = "x"
    text: str = "\ud83d"


@pytest.mark.parametrize(
    ("data", "cls", "problem"),
    [
        ({"component_key": 7}, "InterpretationResult", "expected a string, got the int 7 @ $.component_key"),
        ({"key": "a:0", "layer": "a", "index": 0, "input_tokens": "abc"}, ComponentData,
         "expected a TokenStats object, got the str 'abc' @ $.input_tokens"),
        ({"key": "a:0", "layer": "a", "index": 0, "input_tokens": []}, ComponentData, "expected a TokenStats object, got a list"),
        ({"key": "a:0", "layer": "a", "index": 0, "examples": "abc"}, ComponentData, "expected a list, got the str 'abc'"),
        ({"key": "a:0", "layer": "a", "index": 0, "extras": [[1, 2]]}, ComponentData, "expected an object, got a list"),
        ({"key": "a:0", "layer": "a", "index": 1.0}, ComponentData, "expected an integer, got the float 1.0"),
        ({"token_ids": [1, "2"], "activations": [], "firing_offset": 0, "sequence_index": 0, "position": 0},
         ActivationExample, "expected a list of int, but item 1 is the str '2' @ $.token_ids"),
        ({"token_ids": [1], "activations": [0.5], "firing_offset": 0, "sequence_index": 0, "position": 0, "tokens": "ab"},
         ActivationExample, "expected a list of str, got the str 'ab' @ $.tokens"),
        ({"layers": [{"name": "l", "width": "3"}]}, HarvestConfig, "expected an integer, got the str '3' @ $.layers[0].width"),
        ({"top_pmi": [{"token_id": 1, "count": 1, "precision": 1, "recall": 1, "pmi": "x"}]}, TokenStats,
         "expected a number, got the str 'x' @ $.top_pmi[0].pmi"),
    ],
)
def test_the_converter_is_strict_where_cattrs_coerces(data, cls, problem):
    """cattrs turned 7 into "7", "abc" into default TokenStats, "3" into 3: a damaged record read as another value."""
    import cattrs

    from autointerp import schemas
    from autointerp.storage import schema_problem

    cls = getattr(schemas, cls) if isinstance(cls, str) else cls
    with pytest.raises((cattrs.BaseValidationError, TypeError)) as e:
        from_dict(data, cls)
    assert problem in schema_problem(e.value)


def test_the_strict_converter_still_round_trips_and_widens_ints_to_floats():
    ex = ActivationExample([1, 2], [0.5, 1], 1, 0, 3, ["a", "b"])
    assert from_dict(to_dict(ex), ActivationExample) == ex
    got = from_dict({"token_ids": [1], "activations": [1], "firing_offset": 0, "sequence_index": 0, "position": 0},
                    ActivationExample)
    assert got.activations == [1.0] and type(got.activations[0]) is float
    cfg = HarvestConfig(layers=[LayerSpec("l", 3)], vocab_size=None, model={"n": [1, "x"]})
    assert from_dict(json.loads(json.dumps(to_dict(cfg))), HarvestConfig) == cfg


def test_the_resume_scan_refuses_a_line_that_is_not_a_record(tmp_path):
    """completed_keys used to skip [1,2,3] silently (and pay for it again); now it names the line."""
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"component_key": "a"}\n[1,2,3]\n{"component_key": "b"}\n')
    with pytest.raises(CorruptRunFile, match=r"results.jsonl, line 2: a JSON list, not an object"):
        completed_keys(path, lambda r: r["component_key"])


def test_the_appender_completes_a_whole_last_record_and_cuts_only_torn_text(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"component_key": "a"}\n{"component_key": "b"}')  # whole, only the newline is missing
    assert completed_keys(path, lambda r: r["component_key"]) == {"a", "b"}
    app = JsonlAppender(path)
    app.submit({"component_key": "c"}).result()
    app.close()
    assert completed_keys(path, lambda r: r["component_key"]) == {"a", "b", "c"}  # b is not lost after resume


_WHOLE_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from llm_fixtures import make_harvest
    from autointerp.cli import main
    from autointerp.harvest import HarvestLoop
    from autointerp.paths import RunPaths
    from autointerp.storage import atomic_write_text

    out = sys.argv[1]
    paths = RunPaths.of("shared-run", out)
    make_harvest(width=8).save(paths.harvest)
    make_harvest(width=8).save(paths.harvest)  # a second save swaps the folder
    loop = HarvestLoop([], progress=False)
    loop.save_checkpoint(paths.checkpoints / "harvest.pt")
    atomic_write_text(paths.root / "note.txt", "x")
    for argv in (["interpret", "shared-run", "--backend", "offline", "--no_progress"],
                 ["score", "shared-run", "--backend", "offline", "--scorers", "detection", "--quiet"],
                 ["report", "shared-run"], ["export", "shared-run"],
                 ["export", "shared-run", "--format", "neuronpedia"]):
        assert main([*argv, "--out", out]) == 0, argv
    """
)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_file_and_folder_of_a_run_follows_the_umask(tmp_path, umask):
    """Collaborators on a shared machine read a run: mkstemp/mkdtemp made harvest/, report/ and several files private."""
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text(_WHOLE_RUN)
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.run([sys.executable, str(script), str(out), str(Path(__file__).parent)], capture_output=True,
                       text=True, timeout=300, preexec_fn=lambda: os.umask(umask))
    assert p.returncode == 0, p.stderr[-3000:]
    run = out / "shared-run"
    want = {"file": 0o666 & ~umask, "folder": 0o777 & ~umask}
    wrong = []
    seen = {"file": 0, "folder": 0}
    for path in [run, *run.rglob("*")]:
        kind = "folder" if path.is_dir() else "file"
        seen[kind] += 1
        mode = path.stat().st_mode & 0o777
        if mode != want[kind]:
            wrong.append(f"{oct(mode)} {path.relative_to(out)}")
    assert not wrong, f"expected files {oct(want['file'])} and folders {oct(want['folder'])}: {wrong}"
    for part in ("harvest", "interpretations", "scores", "report", "export", "checkpoints"):
        assert (run / part).is_dir()
    assert seen["file"] >= 15


# -- the converter's fast path ------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from autointerp import schemas  # noqa: E402
from autointerp.storage import make_converter, schema_problem  # noqa: E402


def _rich_component() -> dict:
    """A record with every kind of field the schema has (lists of scalars and classes, optionals, dicts)."""
    ex = schemas.ActivationExample([5, 6, 7], [0.0, 1.5, 0.25], 1, 3, 40, ["a", " b", "<0xE2>"])
    stat = schemas.TokenStat(6, 3.0, 0.5, 0.25, 1.2, " b", 0.0, 0.1)
    partner = schemas.CorrelatedComponent("l:1", 4, 0.5, 0.4, 0.9, 0, None)
    comp = schemas.ComponentData(
        "l:0", "l", 0, 9, 0.01, 0.7, 1.5, examples=[ex, ex], top_examples=[ex],
        input_tokens=schemas.TokenStats([stat], [stat], []), output_tokens=None,
        correlations=schemas.ComponentCorrelations([partner], [], [partner], []),
        output_logits=schemas.LogitLens([schemas.LogitToken(1, 2.5, "x")], [], "W_U"),
        histogram=schemas.ActivationHistogram([0.0, 1.0, 2.0], [4, 5]),
        quantile_examples=[schemas.QuantileExamples(0.0, 0.5, 0.0, 1.0, 4, [ex]),
                           schemas.QuantileExamples(0.5, 1.0, 1.0, None, 5, [])],
        early_firing_share=0.5, fires_early=True, extras={"mine": {"a": [1, None]}},
    )
    return json.loads(json.dumps(to_dict(comp)))


def _paths(value, prefix=()):
    """Every place in a JSON value: (path to it, the value there)."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


_RICH = _rich_component()
_PLACES = [p for p, _ in _paths(_RICH) if p]
_json_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
              | st.text(max_size=3))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
                     max_leaves=4)


def _mutated(rec: dict, changes: list) -> dict:
    rec = json.loads(json.dumps(rec))
    for place, kind, value in changes:
        parent = rec
        try:
            for step in place[:-1]:
                parent = parent[step]
            if kind == "delete" and isinstance(parent, dict):
                parent.pop(place[-1], None)
            elif kind == "delete" and isinstance(parent, list) and place[-1] < len(parent):
                del parent[place[-1]]
            else:
                parent[place[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed the place
    return rec


_FAST, _CHECKED = make_converter(), make_converter(fast=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PLACES), st.sampled_from(["set", "delete"]), _json), max_size=3))
def test_the_fast_path_gives_what_the_checked_path_gives(changes):
    """The generated fast structurer never decides alone: on any record (damaged anywhere: a wrong type,
    a missing field, a huge int for a float) it returns exactly the checked converter's value, types
    included, or the same error."""
    rec = _mutated(_RICH, changes)
    try:
        want = _CHECKED.structure(rec, ComponentData)
    except Exception as e:  # noqa: BLE001
        with pytest.raises(type(e)) as got:
            _FAST.structure(rec, ComponentData)
        assert schema_problem(got.value) == schema_problem(e)
        return
    got = _FAST.structure(rec, ComponentData)
    assert got == want
    assert to_dict(got) == to_dict(want) and json.dumps(to_dict(got)) == json.dumps(to_dict(want))  # float stays float


def test_the_fast_path_covers_the_harvest_schema():
    """Every class of a component record gets a fast structurer (none falls back to cattrs for the whole class)."""
    from autointerp.storage import _fast_structurer

    cache: dict = {}
    assert _fast_structurer(ComponentData, _FAST, cache) is not None
    assert {c.__name__ for c, fn in cache.items() if fn is not None} >= {
        "ComponentData", "ActivationExample", "TokenStats", "TokenStat", "ComponentCorrelations",
        "CorrelatedComponent", "LogitLens", "LogitToken", "ActivationHistogram", "QuantileExamples"}
    assert _FAST.structure(_RICH, ComponentData) == _CHECKED.structure(_RICH, ComponentData)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), _JSON_VALUES, max_size=5), max_size=6))
def test_jsonl_lines_read_the_same_with_and_without_orjson(records):
    """iter_jsonl reads through orjson where it is installed; every line reads to the standard
    library's values (ints past 64 bits, long mantissas, NaN, 1e400, lone surrogates included)."""
    import autointerp.storage as storage

    special = [b'{"a": 123456789012345678901234567890}', b'{"a": -9223372036854775809, "b": 1}', b'{"a": NaN}',
               b'{"a": 1e400, "b": -Infinity}', b'{"a": "\\ud800"}', b'{"a": 0.12345678901234567890123}',
               b'{"a": 1, "a": 2}', b'{"a": -0.0, "b": -0}', b'{"a":[12345678901234567890123,-18446744073709551616]}',
               b'{"a": 0.00012345678901234567891, "b": 1e-0000000000000000000005, "c": 9223372036854775807}']
    lines = [json.dumps(r).encode() for r in records] + special
    want = [json.loads(line) for line in lines]
    got = [storage.json_loads(line) for line in lines]
    assert json.dumps(got) == json.dumps(want) and [type(v) for r in got for v in r.values()] == \
        [type(v) for r in want for v in r.values()]
    for bad in (b'{"a": "\xff"}', b'{"a": [1, 2}', b"\xef\xbb\xbf{}"):  # refused as before
        with pytest.raises(ValueError):
            storage.json_loads(bad)
        with pytest.raises(ValueError):
            json.loads(bad.decode("utf-8"))


def test_the_collector_is_paused_while_a_harvest_is_written_and_runs_again_after(tmp_path):
    """`paused_gc` (finalize + save build ~200 acyclic objects a component; the collector's walks were half of
    a save): paused inside, nested uses included, running again after the save and after a save that fails."""
    import gc

    from autointerp import HarvestLoop, ReservoirAcc
    from autointerp.storage import paused_gc
    from harvest_helpers import make_stream

    assert gc.isenabled()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()

    seen = []

    class Watch(ReservoirAcc):
        name = "watch"

        def finalize_block(self, lo, hi):
            seen.append(gc.isenabled())
            if getattr(self, "fail", False):
                raise RuntimeError("a failing block")
            return super().finalize_block(lo, hi)

    watch = Watch(k=2, context_tokens=1)
    loop = HarvestLoop([watch], progress=False)
    loop.run(make_stream(0, 2))
    loop.save(tmp_path / "h", block_size=3)
    assert seen and not any(seen) and gc.isenabled()
    watch.fail = True
    with pytest.raises(RuntimeError, match="a failing block"):
        loop.save(tmp_path / "h2")
    assert gc.isenabled() and not (tmp_path / "h2").exists()
