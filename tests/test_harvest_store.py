"""The random-access harvest store: load_harvest is lazy, one component is cheap, iteration streams."""

from __future__ import annotations

import os
import re
import stat
import time
import tracemalloc

import pytest

from autointerp.harvest import HarvestResult, load_harvest
from autointerp.paths import HARVEST_COMPONENTS, HARVEST_STORE
from autointerp.records import CorruptRunFile
from autointerp.schemas import ActivationExample, ComponentData, HarvestConfig, LayerSpec


def make_result(widths=(3, 4), n_examples=2) -> HarvestResult:
    layers = [LayerSpec(f"blocks.{i}.mlp", w) for i, w in enumerate(widths)]
    comps = []
    for layer in layers:
        for i in range(layer.width):
            fc = (i * 7) % 5
            comps.append(ComponentData(
                key=f"{layer.name}:{i}", layer=layer.name, index=i, firing_count=fc, firing_rate=fc / 100,
                mean_activation=0.5 * fc, max_activation=float(fc),
                examples=[ActivationExample(token_ids=[1, 2], activations=[0.0, float(fc)], firing_offset=1,
                                            sequence_index=j, position=1, tokens=["a", "b"])
                          for j in range(n_examples)]))
    cfg = HarvestConfig(layers=layers, n_tokens=100)
    return HarvestResult(cfg, comps, {"pool": {"n": 3}})


def test_a_saved_harvest_loads_lazily_with_the_same_api(tmp_path):
    res = make_result()
    res.save(tmp_path / "h")
    assert (tmp_path / "h" / HARVEST_STORE).exists()
    h = load_harvest(tmp_path / "h")
    assert h.lazy
    assert len(h) == len(res) and h.keys() == res.keys()
    assert h["blocks.1.mlp:2"] == res["blocks.1.mlp:2"]
    assert h[0] == res[0] and h[-1] == res[-1]
    assert "blocks.0.mlp:2" in h and "blocks.0.mlp:9" not in h and 3 not in h
    assert list(h) == list(res)
    assert h.n_fired() == res.n_fired()
    assert h.shared == {"pool": {"n": 3}}
    with pytest.raises(KeyError, match="no component 'nope'"):
        h["nope"]
    with pytest.raises(IndexError, match="out of range"):
        h[len(res)]
    assert h.lazy  # none of that parsed the whole harvest
    assert h.components == res.components and not h.lazy


def test_summaries_list_by_layer_and_firing_rate_without_parsing_examples(tmp_path, monkeypatch):
    res = make_result()
    res.save(tmp_path / "h")
    h = load_harvest(tmp_path / "h")
    import autointerp.harvest_store as hs

    monkeypatch.setattr(hs, "from_dict", lambda *a: pytest.fail("a summary parsed a component"))
    rows = h.summaries(layer="blocks.1.mlp", order="firing_rate")
    assert rows == res.summaries(layer="blocks.1.mlp", order="firing_rate")
    assert [r.key for r in rows] == ["blocks.1.mlp:2", "blocks.1.mlp:1", "blocks.1.mlp:3", "blocks.1.mlp:0"]
    assert [r.firing_rate for r in rows] == sorted((r.firing_rate for r in rows), reverse=True)
    assert {r.key for r in h.summaries(min_firing_rate=0.03)} == {c.key for c in res if c.firing_rate >= 0.03}
    assert len(h.summaries(limit=2)) == 2
    with pytest.raises(ValueError, match="order must be"):
        h.summaries(order="rate")


def test_an_old_folder_without_the_index_loads_and_gets_one(tmp_path):
    res = make_result()
    res.save(tmp_path / "h")
    (tmp_path / "h" / HARVEST_STORE).unlink()
    h = load_harvest(tmp_path / "h")
    assert list(h) == list(res)
    assert (tmp_path / "h" / HARVEST_STORE).exists()


def test_a_read_only_old_folder_is_indexed_in_memory(tmp_path):
    res = make_result()
    res.save(tmp_path / "h")
    (tmp_path / "h" / HARVEST_STORE).unlink()
    os.chmod(tmp_path / "h", stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(tmp_path / "h", os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        h = load_harvest(tmp_path / "h")
        assert h["blocks.1.mlp:3"] == res["blocks.1.mlp:3"]
        assert not (tmp_path / "h" / HARVEST_STORE).exists()
    finally:
        os.chmod(tmp_path / "h", stat.S_IRWXU)


def test_an_edited_jsonl_is_indexed_again_and_checked(tmp_path):
    res = make_result()
    res.save(tmp_path / "h")
    comp = tmp_path / "h" / HARVEST_COMPONENTS
    lines = comp.read_text(encoding="utf-8").splitlines(keepends=True)
    comp.write_text("".join(lines[:2] + lines[3:]), encoding="utf-8")  # a component dropped
    with pytest.raises(CorruptRunFile, match="blocks.0.mlp:2"):
        load_harvest(tmp_path / "h")
    comp.write_text("".join(lines[:2] + [re.sub(r'"firing_count": ?4', '"firing_count":9', lines[2])] + lines[3:]),
                    encoding="utf-8")
    h = load_harvest(tmp_path / "h")
    assert h["blocks.0.mlp:2"].firing_count == 9 and h.summaries()[2].firing_count == 9


def test_saving_a_lazy_result_over_its_own_folder(tmp_path):
    res = make_result()
    res.save(tmp_path / "h")
    h = load_harvest(tmp_path / "h")
    h.save(tmp_path / "h")
    assert list(h) == list(res)
    h.save(tmp_path / "copy")
    assert list(load_harvest(tmp_path / "copy")) == list(res)
    assert load_harvest(tmp_path / "copy").shared == res.shared


def test_a_100k_component_harvest_opens_and_reads_one_component_in_under_100ms(tmp_path):
    res = make_result(widths=(50_000, 50_000), n_examples=1)
    res.save(tmp_path / "h")
    t0 = time.perf_counter()
    h = load_harvest(tmp_path / "h")
    comp = h["blocks.1.mlp:40123"]
    elapsed = time.perf_counter() - t0
    assert comp == res["blocks.1.mlp:40123"]
    assert elapsed < 0.1, f"open + one component took {elapsed * 1000:.0f} ms"


def test_iterating_streams_in_bounded_memory(tmp_path):
    res = make_result(widths=(4000,), n_examples=20)
    res.save(tmp_path / "h")
    del res
    h = load_harvest(tmp_path / "h")
    size = (tmp_path / "h" / HARVEST_COMPONENTS).stat().st_size
    tracemalloc.start()
    n = 0
    for comp in h:
        n += comp.firing_count >= 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 4000
    # the whole harvest as objects is several times the file; streaming holds a few lines
    assert peak < size / 10, f"iteration peaked at {peak} bytes for a {size}-byte file"


def test_a_dropped_lazy_harvest_closes_its_files(tmp_path):
    """A lazy harvest nobody closes (the usual case) leaks no file handle: no ResourceWarning when it is collected."""
    import gc
    import warnings

    make_result().save(tmp_path / "h")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        h = load_harvest(tmp_path / "h")
        assert h[h.keys()[1]].index == 1
        del h
        gc.collect()
        h = load_harvest(tmp_path / "h")
        h._store.close()  # closed by hand, then collected: closed once
        del h
        gc.collect()
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []


def test_a_lazy_harvest_opened_in_one_thread_is_read_from_others(tmp_path):
    """A notebook's event loop runs the scorers in a worker thread: the harvest opened in the
    caller's thread must answer there too (sqlite3 refuses cross-thread use by default)."""
    import threading

    make_result(widths=(30, 40)).save(tmp_path)
    lazy = load_harvest(tmp_path)
    keys = lazy.keys()
    got: dict[str, object] = {}
    errors: list[BaseException] = []

    def read(part):
        try:
            for k in part:
                got[k] = lazy[k]
            got["n"] = len(lazy.keys())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=read, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(got[k].key == k for k in keys)


def test_shared_outputs_are_read_one_key_at_a_time(tmp_path, monkeypatch):
    """A lazy harvest's ``shared`` lists its outputs without reading them and parses one only when its key is asked for."""
    import autointerp.records as records

    res = make_result()
    res.shared = {"pool": {"n": 3}, "big": {"rows": list(range(50))}, "other": [1, 2]}
    res.save(tmp_path / "h")
    parsed = []
    real = records.read_shared_json
    monkeypatch.setattr(records, "read_shared_json", lambda p: parsed.append(p.name) or real(p))
    h = load_harvest(tmp_path / "h")
    shared = h.shared
    assert sorted(shared) == ["big", "other", "pool"] and len(shared) == 3 and "pool" in shared and "nope" not in shared
    assert parsed == [] and shared.reads == 0
    assert shared["pool"] == {"n": 3} and shared.get("pool") == {"n": 3}
    assert parsed == ["pool.json"] and shared.reads == 1  # asked twice, read once; the others untouched
    assert shared.get("nope") is None
    with pytest.raises(KeyError):
        shared["nope"]
    shared["added"] = {"x": 1}
    del shared["other"]
    assert sorted(shared) == ["added", "big", "pool"] and parsed == ["pool.json"]
    h.save(tmp_path / "copy")  # saves what the mapping holds now
    assert dict(load_harvest(tmp_path / "copy").shared) == {"added": {"x": 1}, "big": {"rows": list(range(50))}, "pool": {"n": 3}}
