"""``--rank R --world_size N`` workers, then ``autointerp merge``: equals one process over all batches."""

from __future__ import annotations

import pytest

from autointerp.cli import main as cli_main
from autointerp.harvest import load_harvest
from autointerp.run_harvest import HarvestOptions, merge_workers, run_harvest

COMMON = dict(target="demo", n_batches=5, batch_size=2, context_length=32, checkpoint_every=0, progress=False,
              device="cpu", threshold=0.5, layers=["blocks.1.mlp.act", "blocks.3.mlp.act"])


def test_three_workers_merged_equal_one_process(tmp_path, capsys):
    single = run_harvest(HarvestOptions(out=str(tmp_path), run_id="single", **COMMON), log=None)
    for rank in range(3):
        path = run_harvest(HarvestOptions(out=str(tmp_path), run_id="split", rank=rank, world_size=3, **COMMON),
                           log=None)
        assert path.name == f"rank{rank}-of-3.pt"
    assert cli_main(["merge", "split", "--out", str(tmp_path)]) == 0
    merged = load_harvest(tmp_path / "split" / "harvest")
    assert merged.config.n_tokens == single.config.n_tokens and merged.config.n_batches == 5
    assert merged.config.model == single.config.model and merged.config.dataset == single.config.dataset
    n_checked = 0
    for a, b in zip(single, merged):
        assert (a.key, a.firing_count, a.max_activation) == (b.key, b.firing_count, b.max_activation)
        assert a.mean_activation == pytest.approx(b.mean_activation, rel=1e-9)
        assert a.examples == b.examples and a.top_examples == b.top_examples
        assert a.input_tokens == b.input_tokens  # exact counts
        assert a.correlations == b.correlations
        if a.output_tokens is not None:
            # probability mass is summed in float32 stages, so merged sums differ in the last bits;
            # compare the ranked masses (robust to a reordering of near-ties) and most of the ids
            ca = [s.count for s in a.output_tokens.top_recall]
            cb = [s.count for s in b.output_tokens.top_recall]
            assert ca == pytest.approx(cb, rel=1e-5)
            ids_a = {s.token_id for s in a.output_tokens.top_recall}
            ids_b = {s.token_id for s in b.output_tokens.top_recall}
            assert len(ids_a & ids_b) >= len(ids_a) - 1
        n_checked += len(a.examples)
    assert n_checked > 100
    if "window_pool" in single.shared:
        assert single.shared["window_pool"] == merged.shared["window_pool"]


def test_merge_refuses_missing_workers(tmp_path):
    run_harvest(HarvestOptions(out=str(tmp_path), run_id="part", rank=0, world_size=2, **COMMON), log=None)
    with pytest.raises(FileNotFoundError, match=r"missing \['rank1-of-2.pt'\]"):
        merge_workers("part", out=str(tmp_path), log=None)


def test_workers_of_one_run_lock_only_their_own_rank(tmp_path):
    from autointerp.paths import RunPaths
    from autointerp.run_harvest import harvest_lock

    paths = RunPaths.of("locked", str(tmp_path))
    opts = dict(out=str(tmp_path), run_id="locked", world_size=2, **COMMON)
    with harvest_lock(paths, 0, 2):  # worker 0 is running
        assert run_harvest(HarvestOptions(rank=1, **opts), log=None).name == "rank1-of-2.pt"
        with pytest.raises(RuntimeError, match="another process is writing worker 0 of 2 of the harvest of run locked"):
            run_harvest(HarvestOptions(rank=0, **opts), log=None)
    run_harvest(HarvestOptions(rank=0, **opts), log=None)
    with harvest_lock(paths):  # a one-process harvest of the run is writing harvest/
        with pytest.raises(RuntimeError, match="another process is writing the harvest of run locked"):
            merge_workers("locked", out=str(tmp_path), log=None)
    assert len(merge_workers("locked", out=str(tmp_path), log=None)) == 2 * 512


def test_a_merged_job_array_stores_the_shared_outputs_of_one_process(tmp_path):
    """The weight outputs (logit lens per component, weight-space neighbours in shared/) of a merged
    job array are those of a one-process harvest: shared/ byte for byte, every lens equal."""
    from autointerp.neighbours import weight_table

    single = run_harvest(HarvestOptions(out=str(tmp_path), run_id="one", **COMMON), log=None)
    for rank in range(2):
        run_harvest(HarvestOptions(out=str(tmp_path), run_id="arr", rank=rank, world_size=2, **COMMON), log=None)
    merged = merge_workers("arr", out=str(tmp_path), log=None)
    a, b = tmp_path / "one" / "harvest" / "shared", tmp_path / "arr" / "harvest" / "shared"
    names = sorted(p.name for p in a.iterdir())
    assert "weight_neighbours.json" in names and "weight_neighbours.rows" in names and "window_pool.json" in names
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ta, tb = weight_table(single), weight_table(merged)
    assert ta is not None and ta == tb and len(ta) == 2 * 512
    assert ta.get("blocks.1.mlp.act:3") == tb.get("blocks.1.mlp.act:3") and len(ta.get("blocks.1.mlp.act:3")) == 8
    n_lens = 0
    for x, y in zip(single, merged):
        assert x.output_logits == y.output_logits
        n_lens += x.output_logits is not None
    assert n_lens == 2 * 512


def test_a_worker_writes_its_weight_outputs_before_its_state(tmp_path, monkeypatch):
    """Killed between the two, worker 0 leaves no state file, so merge never runs without its outputs."""
    import autointerp.run_harvest as rh

    def killed(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(rh.HarvestLoop, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        run_harvest(HarvestOptions(out=str(tmp_path), run_id="k", rank=0, world_size=2, checkpoint_every=0,
                                   **{k: v for k, v in COMMON.items() if k != "checkpoint_every"}), log=None)
    workers = tmp_path / "k" / "workers"
    assert not list(workers.glob("rank*.pt"))
    assert (workers / "output-logits.jsonl").exists() and (workers / "shared" / "weight_neighbours.rows").exists()


def test_merge_reads_the_lens_a_line_at_a_time_and_stores_what_one_process_stores(tmp_path, monkeypatch):
    """Worker 0's logit lens is one line per component (``workers/output-logits.jsonl``); merge joins it
    with the components as they are written, so it never holds every lens: at each component the
    lines read are those up to it. The merged harvest's lenses equal a one-process harvest's."""
    import autointerp.run_harvest as rh

    opts = {**COMMON, "n_batches": 2}
    single = run_harvest(HarvestOptions(out=str(tmp_path), run_id="one", **opts), log=None)
    for rank in range(2):
        run_harvest(HarvestOptions(out=str(tmp_path), run_id="two", rank=rank, world_size=2, **opts), log=None)
    lens_file = tmp_path / "two" / "workers" / "output-logits.jsonl"
    assert not (tmp_path / "two" / "workers" / "output-logits.json").exists()
    n_lines = len(lens_file.read_text().splitlines())
    assert n_lines == sum(1 for c in single if c.output_logits is not None) > 0
    seen = []
    real = rh.LensLines.attach

    def attach(self, comp):
        real(self, comp)
        seen.append((comp.key, self.parsed))

    monkeypatch.setattr(rh.LensLines, "attach", attach)
    merged = merge_workers("two", out=str(tmp_path), log=None)
    keys = [k for k, _ in seen]
    assert keys == single.keys()
    with_lens = [c.key for c in single if c.output_logits is not None]
    for i, (key, parsed) in enumerate(seen):  # read: the lenses of the components so far, and the next one
        assert parsed <= sum(1 for k in keys[: i + 1] if k in set(with_lens)) + 1
    assert [c.output_logits for c in merged] == [c.output_logits for c in single]


def test_a_lens_file_out_of_order_is_refused_before_the_harvest_is_written(tmp_path):
    from autointerp.storage import CorruptRunFile

    opts = {**COMMON, "n_batches": 2}
    for rank in range(2):
        run_harvest(HarvestOptions(out=str(tmp_path), run_id="two", rank=rank, world_size=2, **opts), log=None)
    lens_file = tmp_path / "two" / "workers" / "output-logits.jsonl"
    lines = lens_file.read_text().splitlines(keepends=True)
    lens_file.write_text(lines[1] + lines[0] + "".join(lines[2:]))
    with pytest.raises(CorruptRunFile, match=r"output-logits.jsonl, line 2: .* comes after a later component"):
        merge_workers("two", out=str(tmp_path), log=None)
    assert not (tmp_path / "two" / "harvest").exists()
    lens_file.write_text(lines[0].replace('"key": "', '"key": "nope.', 1) + "".join(lines[1:]))
    with pytest.raises(CorruptRunFile, match=r"line 1: key 'nope\..*' is not a component of this harvest"):
        merge_workers("two", out=str(tmp_path), log=None)


def test_merge_still_reads_the_lens_of_an_earlier_worker(tmp_path):
    """A job array begun before the lens was stored a line a component (``output-logits.json``, one object)."""
    import json

    opts = {**COMMON, "n_batches": 2}
    for rank in range(2):
        run_harvest(HarvestOptions(out=str(tmp_path), run_id="two", rank=rank, world_size=2, **opts), log=None)
    workers = tmp_path / "two" / "workers"
    recs = [json.loads(l) for l in (workers / "output-logits.jsonl").read_text().splitlines()]
    (workers / "output-logits.json").write_text(json.dumps({r["key"]: r["lens"] for r in recs}))
    (workers / "output-logits.jsonl").unlink()
    merged = merge_workers("two", out=str(tmp_path), log=None)
    got = {c.key: c.output_logits for c in merged if c.output_logits is not None}
    assert len(got) == len(recs) and got[recs[0]["key"]].source == recs[0]["lens"]["source"]
