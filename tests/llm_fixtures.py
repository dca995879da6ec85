"""Small harvests and helpers shared by the LLM/interpret tests (tests/test_llm_*.py, tests/test_interpret*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from autointerp.accumulators import CorrelationAcc, InputTokenAcc, OutputProbAcc, ReservoirAcc, TopActivationAcc
from autointerp.batch import HarvestBatch
from autointerp.harvest import HarvestLoop, HarvestResult
from autointerp.paths import RunPaths

WORDS = [" the", " cat", " sat", " on", " mat", ".", " dog", " ran", "\n", " <<x>>", " a", " big", " red", " car", " is", " fast"]

INTERPRET_SCHEMA_KEYS = {"label", "confidence", "reasoning"}


def decode(i: int) -> str:
    return WORDS[i % len(WORDS)]


def make_harvest(n_layers: int = 2, width: int = 6, n_batches: int = 3, seed: int = 0, dead: int = 1) -> HarvestResult:
    """A tiny harvest built from hand-made HarvestBatch tensors: component c of each layer
    fires on token id (c % V), so labels are checkable. The last ``dead`` components never fire."""
    g = torch.Generator().manual_seed(seed)
    V = len(WORDS)
    loop = HarvestLoop(
        [ReservoirAcc(k=12, context_tokens=4), TopActivationAcc(k=6, context_tokens=4), InputTokenAcc(top_k=5),
         OutputProbAcc(top_k=5), CorrelationAcc(top_k=4)],
        threshold=0.0,
        seed=seed,
        vocab_size=V,
        decode=decode,
        model={"class": "TinyTestModel", "n_layers": n_layers,
               "layer_descriptions": {f"h.{i}.mlp": f"MLP output of layer {i} of {n_layers}" for i in range(n_layers)}},
        dataset={"name": "unit-test text", "description": "random tokens"},
        progress=False,
    )
    for _ in range(n_batches):
        tokens = torch.randint(0, V, (4, 24), generator=g)
        acts = {}
        for layer in range(n_layers):
            a = torch.zeros(4, 24, width)
            for c in range(width - dead):
                hit = tokens == (c + layer) % V
                a[..., c] = hit.float() * (0.5 + torch.rand(4, 24, generator=g))
            acts[f"h.{layer}.mlp"] = a
        probs = torch.softmax(torch.randn(4, 24, V, generator=g), dim=-1)
        loop.update(HarvestBatch(tokens=tokens, activations=acts, output_probs=probs))
    return loop.finalize()


def make_run(tmp_path: Path, run_id: str = "test-run", **kw) -> RunPaths:
    paths = RunPaths.of(run_id, tmp_path)
    make_harvest(**kw).save(paths.harvest)
    return paths


def results_lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
