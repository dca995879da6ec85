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
    assert out["neighbours"]["a:0"][0][0] == "b:0" and out["neighbours"]["b:1"][0][0] == "a:0"
    assert out["neighbours"]["b:0"][0][0] == "a:0" and out["neighbours"]["b:0"][0][1] == pytest.approx(0.9 / (0.82**0.5), abs=1e-5)
    assert out["neighbours"]["c:0"] == []  # alone in its 3-d space
    assert set(out["skipped"]) == {"d", "e"} and "3 components" in out["skipped"]["d"]


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
