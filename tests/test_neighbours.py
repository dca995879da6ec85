"""Neighbour context (issue 13 item 4): weight-space neighbours in bounded blocks against brute
force, and the second interpretation pass through the real Anthropic SDK against the local
server: its prompts show the partners' current labels, its label wins, it resumes without
paying twice, and it refuses to run before any labels exist."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autointerp import HarvestLoop, Interpreter
from autointerp.accumulators import CorrelationAcc, InputTokenAcc, ReservoirAcc, TopActivationAcc
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.logit_lens import OutputDirections
from autointerp.neighbours import WEIGHT_NEIGHBOURS, attach_weight_neighbours, cosine_topk, neighbour_context, weight_neighbours
from autointerp.paths import RunPaths
from autointerp.records import read_interpretations
from autointerp.storage import read_jsonl
from autointerp.testing.llm_server import LLMServer
from autointerp.testing.synthetic import SyntheticModel, _prompt_text

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "progress": False}


# -- weight-space neighbours ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 6), st.integers(1, 8), st.sampled_from([1, 7, 64, 10**6]), st.integers(0, 10**6))
def test_blocked_cosine_topk_equals_brute_force(n, d, k, block, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[0] = 0.0  # a zero direction has cosine 0 with everything
    idx, val = cosine_topk(x, k, block_elements=block)
    xn = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    full = xn @ xn.T
    full.fill_diagonal_(-float("inf"))
    want = full.sort(dim=1, descending=True).values[:, : min(k, n - 1)]
    assert idx.shape == (n, min(k, n - 1))
    assert torch.allclose(val, want, atol=1e-5)
    assert all(i not in row for i, row in enumerate(idx.tolist()))  # never its own neighbour
    assert torch.allclose(full.gather(1, idx), val, atol=1e-5)  # the indices hold those cosines


def test_layers_of_one_residual_stream_are_pooled():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.9, 0.1], [0.1, -0.9]])
    other = torch.tensor([[1.0, 0.0, 0.0]])
    dirs = {"a": OutputDirections(a), "b": OutputDirections(b), "c": OutputDirections(other), "d": OutputDirections(a)}
    out = weight_neighbours(dirs, {"a": 2, "b": 2, "c": 1, "d": 3, "e": 4}, k=1)
    assert out.get("a:0")[0][0] == "b:0" and out.get("b:1")[0][0] == "a:0"
    assert out.get("b:0")[0][0] == "a:0" and out.get("b:0")[0][1] == pytest.approx(0.9 / (0.82**0.5), abs=1e-5)
    assert out.get("c:0") == []  # alone in its 3-d space
    assert out.get("d:1") == [] and out.get("e:9") == [] and out.get("nope") == []
    assert set(out.skipped) == {"d", "e"} and "3 components" in out.skipped["d"] and len(out) == 4


# -- the second pass ----------------------------------------------------------------------------


class _Weights:
    """Output directions for the planted components: 0 and 4 point the same way, so do 1 and 5."""

    def output_directions(self):
        w = torch.eye(10, 12)
        w[4, 0], w[4, 4], w[4, 11] = 1.0, 0.0, 0.1
        w[5, 1], w[5, 5], w[5, 10] = 1.0, 0.0, 0.1
        return {"synth": OutputDirections(w)}


@pytest.fixture(scope="module")
def harvest():
    model = SyntheticModel.default(seed=3)
    loop = HarvestLoop([ReservoirAcc(k=20, context_tokens=5), TopActivationAcc(k=5, context_tokens=5), InputTokenAcc(),
                        CorrelationAcc()], vocab_size=model.vocab_size, decode=model.decode, seed=3, progress=False)  # fmt: skip
    result = loop.run(model.batches(4, 16, 48))
    assert attach_weight_neighbours(result, _Weights(), k=3, log=lambda _m: None) == 10
    return model, result


def _labeller(prefix: str, seen: list[str]):
    def respond(request):
        text = _prompt_text(request)
        seen.append(text)
        key = text.split("# Component ", 1)[1].split()[0]
        return {"reasoning": "scripted", "label": f"{prefix} {key}", "confidence": "high"}

    return respond


def test_the_second_pass_shows_neighbours_labels_and_its_label_wins(harvest, tmp_path):
    model, result = harvest
    run = RunPaths.of("nb", tmp_path)
    first, second = [], []
    with LLMServer(_labeller("first", first), fault_rates={"429": 0.05}, seed=3) as server:
        backend = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key="k")
        interp = Interpreter(backend, **FAST)
        with pytest.raises(ValueError, match="neighbours is a second pass.*without --neighbours"):
            interp.run(result, run, neighbours=True)
        assert not server.requests  # refused before any call
        interp.run(result, run)
    assert len(first) == 10 and not any("## Neighbours" in p for p in first)
    with LLMServer(_labeller("second", second), seed=4) as server:
        backend = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key="k")
        out = Interpreter(backend, **FAST).run(result, run, neighbours=True, n_neighbours=3, limit=4)
        assert len(out) == 10 and sum(r.label.startswith("second") for r in out) == 4  # a partial pass ...
        Interpreter(backend, **FAST).run(result, run, neighbours=True, n_neighbours=3)  # ... resumed
        n_asked = len(server.requests)
        Interpreter(backend, **FAST).run(result, run, neighbours=True, n_neighbours=3)
        assert len(server.requests) == n_asked  # nothing paid twice
    assert len(second) == 10
    prompt = next(p for p in second if "# Component synth:4" in p)
    assert "## Neighbours" in prompt and "Components that fire together" not in prompt
    nb = prompt.split("## Neighbours", 1)[1]
    assert '- synth:0: "first synth:0" -- cosine' in nb or '- synth:0: "second synth:0" -- cosine' in nb
    # the partners by co-firing come with their statistics
    ctx = neighbour_context(result["synth:4"], {}, n=3, weight_table=result.shared[WEIGHT_NEIGHBOURS])
    assert ctx.weight[0].key == "synth:0" and ctx.weight[0].stats["cosine"] > 0.99
    assert all(f"- {n.key}: " in nb for n in ctx.cofiring) and "co-firings" in nb
    # one append-only file; the second pass's label wins for every reader
    lines = list(read_jsonl(run.interpretation_results))
    assert len(lines) == 20 and sum("neighbours.j2" in x["template_name"] for x in lines) == 10
    labels = {k: r.label for k, r in read_interpretations(run).items()}
    assert labels == {k: f"second {k}" for k in model.keys()}
    assert all(r.evidence is not None for r in read_interpretations(run).values())


def test_the_command_line_runs_the_second_pass(harvest, tmp_path, monkeypatch, capsys):
    from autointerp.cli import main

    model, result = harvest
    run = RunPaths.of("nbcli", tmp_path)
    result.save(run.harvest)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    seen: list[str] = []
    with LLMServer(_labeller("lab", seen)) as server:
        base = ["interpret", "nbcli", "--out", str(tmp_path), "--base_url", server.url, "--no_progress", "--backoff", "0"]
        assert main([*base, "--neighbours"]) == 2 and "without --neighbours" in capsys.readouterr().err
        assert main(base) == 0
        assert main([*base, "--neighbours", "--n_neighbours", "2"]) == 0
    assert len(seen) == 20 and sum("## Neighbours" in p for p in seen) == 10
    assert json.loads(run.interpretation_results.read_text().splitlines()[-1])["template_name"].endswith("neighbours.j2")
    assert main(["interpret", "nbcli", "--out", str(tmp_path), "--neighbours", "--n_neighbours", "0"]) == 2
    assert "n_neighbours" in capsys.readouterr().err


# -- the stored table -----------------------------------------------------------------------------


def test_the_table_is_brute_force_top_k_across_pooled_layers():
    g = torch.Generator().manual_seed(5)
    a, b, c = torch.randn(7, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(3, 6, generator=g)
    table = weight_neighbours({"a": OutputDirections(a), "b": OutputDirections(b), "c": OutputDirections(c)},
                              {"a": 7, "b": 5, "c": 3}, k=4)
    for rows, keys in ((torch.cat([a, b]), [f"a:{i}" for i in range(7)] + [f"b:{i}" for i in range(5)]),
                       (c, [f"c:{i}" for i in range(3)])):
        xn = rows / rows.norm(dim=1, keepdim=True)
        full = xn @ xn.T
        full.fill_diagonal_(-float("inf"))
        for r, key in enumerate(keys):
            got = table.get(key)
            want = full[r].sort(descending=True).values[: min(4, len(keys) - 1)]
            assert len(got) == len(want)
            assert [cos for _, cos in got] == pytest.approx(want.tolist(), abs=1e-6)
            assert all(full[r, keys.index(other)].item() == pytest.approx(cos, abs=1e-6) for other, cos in got)


def test_a_saved_harvest_reads_the_table_a_row_at_a_time(harvest, tmp_path):
    from autointerp.harvest import load_harvest
    from autointerp.harvest_store import SharedRows
    from autointerp.neighbours import WeightNeighbours, weight_table

    _, result = harvest
    table = weight_table(result)
    result.save(tmp_path / "h")
    shared = tmp_path / "h" / "shared"
    assert (shared / "weight_neighbours.rows").stat().st_size == 10 * 3 * 8
    meta = json.loads((shared / "weight_neighbours.json").read_text())
    assert meta["format"] == "autointerp.weight_neighbours/2" and meta["k"] == 3 and "neighbours" not in meta
    lazy = load_harvest(tmp_path / "h")
    assert isinstance(lazy.shared[WEIGHT_NEIGHBOURS], SharedRows)  # opened, not read
    loaded = weight_table(lazy)
    assert loaded == table and all(loaded.get(k) == table.get(k) for k in result.keys())
    assert loaded.get("synth:4")[0][0] == "synth:0"
    lazy.save(tmp_path / "copy")  # a lazy harvest saved elsewhere takes its rows along
    assert weight_table(load_harvest(tmp_path / "copy")) == table
    lazy.save(tmp_path / "h")  # ... and saved over its own folder
    assert weight_table(load_harvest(tmp_path / "h")) == table
    # a harvest of format 1 (one JSON document) reads the same
    v1 = {"format": "autointerp.weight_neighbours/1", "k": 3, "skipped": {},
          "neighbours": {k: [[o, c] for o, c in table.get(k)] for k in result.keys()}}
    old = WeightNeighbours.of(v1, [(layer.name, layer.width) for layer in result.config.layers])
    assert all(old.get(k) == table.get(k) for k in result.keys()) and old == table


def test_a_damaged_rows_file_is_named(harvest, tmp_path):
    from autointerp.harvest import load_harvest
    from autointerp.storage import CorruptRunFile

    _, result = harvest
    result.save(tmp_path / "h")
    rows = tmp_path / "h" / "shared" / "weight_neighbours.rows"
    rows.write_bytes(rows.read_bytes()[:-5])
    with pytest.raises(CorruptRunFile, match=r"weight_neighbours\.rows: the rows file is 235 bytes; expected 240 bytes"):
        load_harvest(tmp_path / "h").shared["weight_neighbours"]
    rows.unlink()
    with pytest.raises(CorruptRunFile, match="the rows file is missing"):
        load_harvest(tmp_path / "h").shared["weight_neighbours"]
