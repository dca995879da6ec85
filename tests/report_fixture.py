"""A small, hand-made run for the report, notebook and export tests.

A real `HarvestLoop` over hand-made `HarvestBatch` tensors with a GPT-2 style
vocabulary (``Ġ`` spaces, ``Ċ`` newlines, a character split across two byte
tokens), hostile tokens that try to inject HTML, and interpretation and score
lines written with `append_jsonl`, the way the interpreter and scorers do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from autointerp import (
    CorrelationAcc,
    HarvestBatch,
    HarvestLoop,
    InputTokenAcc,
    InterpretationResult,
    OutputProbAcc,
    ReservoirAcc,
    ScoreResult,
    TensorAccumulator,
    TopActivationAcc,
)
from autointerp.paths import RunPaths
from autointerp.storage import append_jsonl

INJECT_IMG = "</script><img src=x onerror=alert(1)>"
INJECT_SCRIPT = "<script>window.__pwned=1</script>"

#: GPT-2 spelling: "Ġ" is a space, "Ċ" a newline, "Ã©" is "é", "âĢ" + "Ķ" is "—" (E2 80 | 94)
VOCAB = [
    "Ġthe", "Ġcat", "Ġsat", "Ċ", "Ġcaf", "Ã©", "âĢ", "Ķ",
    INJECT_IMG, INJECT_SCRIPT, "Ġon", "Ġmat", ".", "Ġ\"", "ĠÐŁ", "ÑĢ",
]
V = len(VOCAB)
PLAIN = [i for i, t in enumerate(VOCAB) if t not in ("âĢ", "Ķ", "ĠÐŁ", "ÑĢ") and not t.startswith("<")]
LAYERS = {"h.0.mlp": 6, "h.1.mlp": 4}
N_COMPONENTS = sum(LAYERS.values())
# component h.0.mlp:0 fires on the injection tokens; h.0.mlp:1 on the "—" byte pair; h.0.mlp:5 never fires
DEAD = "h.0.mlp:5"


def decode(i: int) -> str:
    return VOCAB[i]


class ActivationHistogramAcc(TensorAccumulator):
    """A custom accumulator (the docstring example of TensorAccumulator): lands in extras."""

    name = "activation_histogram"

    def __init__(self, bins: int = 5, max_value: float = 1.0):
        self.bins, self.max_value = bins, max_value

    def config(self):
        return {"bins": self.bins, "max_value": self.max_value}

    def setup(self, ctx):
        self.add_state("hist", torch.zeros(ctx.n_components, self.bins, dtype=torch.int64))

    def update(self, batch):
        b = (batch.firing_act / self.max_value * self.bins).long().clamp(0, self.bins - 1)
        self.hist.view(-1).index_add_(0, batch.firing_comp * self.bins + b, torch.ones_like(b))

    def finalize(self):
        return dict(enumerate(self.hist.cpu().tolist()))


def _batches(n_batches: int = 3, B: int = 4, S: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for bi in range(n_batches):
        # random text from whole-character tokens; the byte fragments only where placed below
        tokens = torch.tensor(PLAIN, dtype=torch.int64)[torch.randint(0, len(PLAIN), (B, S), generator=g)]
        # make sure the interesting tokens appear
        tokens[0, 3] = VOCAB.index(INJECT_IMG)
        tokens[1, 5] = VOCAB.index(INJECT_SCRIPT)
        tokens[2, 6], tokens[2, 7] = VOCAB.index("âĢ"), VOCAB.index("Ķ")
        tokens[3, 2], tokens[3, 3] = VOCAB.index("Ġcaf"), VOCAB.index("Ã©")
        acts = {}
        for layer, width in LAYERS.items():
            a = torch.rand(B, S, width, generator=g)
            a = torch.where(a > 0.7, a, torch.zeros_like(a))
            if layer == "h.0.mlp":
                inj = (tokens == VOCAB.index(INJECT_IMG)) | (tokens == VOCAB.index(INJECT_SCRIPT))
                a[..., 0] = torch.where(inj, 0.9, 0.0)
                a[..., 1] = torch.where(tokens == VOCAB.index("Ķ"), 0.8, torch.where(tokens == VOCAB.index("Ã©"), 0.5, 0.0))
                a[..., 5] = 0.0
            acts[layer] = a
        probs = torch.softmax(torch.randn(B, S, V, generator=g), dim=-1)
        yield HarvestBatch(tokens=tokens, activations=acts, output_probs=probs, sequence_ids=torch.arange(bi * B, (bi + 1) * B))


def make_harvest():
    loop = HarvestLoop(
        [
            ReservoirAcc(k=6, context_tokens=4),
            TopActivationAcc(k=3, context_tokens=4),
            InputTokenAcc(top_k=4),
            OutputProbAcc(top_k=4),
            CorrelationAcc(top_k=3),
            ActivationHistogramAcc(),
        ],
        threshold=0.0,
        seed=0,
        decode=decode,
        model={"name": "toy <b>model</b>"},
        dataset={"name": "hand-made"},
        progress=False,
    )
    return loop.run(_batches())


def labels_for(keys: list[str]) -> dict[str, str]:
    out = {k: f"fires on token pattern {i}" for i, k in enumerate(keys)}
    out["h.0.mlp:0"] = "HTML-looking tokens " + INJECT_SCRIPT
    out["h.0.mlp:1"] = "em dash — and café"
    return out


def make_run(root: Path, run_id: str = "toy") -> RunPaths:
    """Harvest, label all but two components, score with one scorer and its baselines."""
    paths = RunPaths.of(run_id, root)
    harvest = make_harvest()
    harvest.save(paths.harvest)
    keys = harvest.keys()
    labels = labels_for(keys)
    unlabeled = {"h.1.mlp:3", DEAD}
    for k in keys:
        if k in unlabeled:
            continue
        append_jsonl(
            paths.interpretation_results,
            InterpretationResult(k, labels[k], "high" if k.endswith("0") else "medium", f"Reasoning for {k}: {INJECT_IMG}", model="offline"),
        )
    # the runner's failure records name the component "key"; h.0.mlp:2 failed once, then succeeded
    append_jsonl(paths.interpretation_failures, {"key": "h.1.mlp:3", "reason": "invalid JSON"})
    append_jsonl(paths.interpretation_failures, {"key": "h.0.mlp:2", "reason": "rate limited"})
    # a scorer that judges the component itself (intruder) writes label_source "none"
    for k in ("h.1.mlp:0", "h.1.mlp:1"):
        append_jsonl(paths.score_file("intruder"), ScoreResult(k, "intruder", "none", "", 0.75, n_trials=10))
    for i, k in enumerate(keys):
        if k in unlabeled:
            continue
        score = 0.5 + 0.05 * i
        append_jsonl(paths.score_file("detection"), ScoreResult(k, "detection", "label", labels[k], score, {"precision": 0.7}, n_trials=20))
        append_jsonl(paths.score_file("detection"), ScoreResult(k, "detection", "shuffled", "some other label", 0.5, n_trials=20))
        append_jsonl(paths.score_file("detection"), ScoreResult(k, "detection", "token_lookup", "token list", 0.55, n_trials=20))
    # a torn last line, as a killed scorer leaves it
    with open(paths.score_file("detection"), "a") as f:
        f.write('{"component_key": "h.0.mlp:2", "scor')
    return paths


# -- a refined run: the label history the report and notebook show (issue 13) -------------

#: a revised label and reasoning that try to inject HTML and reorder text
HOSTILE_REVISION = "revised " + INJECT_IMG + " \u202Eexe.txt " + INJECT_SCRIPT
HOSTILE_NEIGHBOUR = "second pass " + INJECT_SCRIPT + " \u2067isolated\u2069"
REFINE_MODEL = "claude-haiku-4-5-20251001"


def make_refined_run(root: Path, run_id: str = "refined"):
    """A planted-truth harvest refined for real (``refine=1``, through the Anthropic SDK and the local
    LLM server) on three components, then a neighbour pass over one of them.

    The labeller is `refining_labeller_responder`: an incomplete first label, revised from the misses it is
    shown. For the first component its revision is `HOSTILE_REVISION` (which validates worse, so round 0 is
    kept); for the neighbour pass the labeller answers `HOSTILE_NEIGHBOUR`. Returns
    ``(paths, keys, hostile_key, neighbour_key, revision_prompts)``, the last ``{key: prompt}``.
    """
    from autointerp.accumulators import InputTokenAcc, ReservoirAcc, TopActivationAcc
    from autointerp.accumulators.window_pool import RandomWindowAcc
    from autointerp.interpret import Interpreter
    from autointerp.llm.anthropic import AnthropicBackend
    from autointerp.testing.llm_server import LLMServer
    from autointerp.testing.synthetic import AnyTokenRule, SyntheticModel, refining_labeller_responder

    model = SyntheticModel.partial(seed=2)
    loop = HarvestLoop(
        [ReservoirAcc(k=30, context_tokens=8), TopActivationAcc(k=8, context_tokens=8), InputTokenAcc(),
         RandomWindowAcc(n_windows=160, window_len=24)],
        vocab_size=model.vocab_size, decode=model.decode, seed=2, progress=False,
    )  # fmt: skip
    harvest = loop.run(model.batches(4, 32, 48))
    paths = RunPaths.of(run_id, root)
    harvest.save(paths.harvest)
    keys = [k for k, r in zip(model.keys(), model.rules) if isinstance(r, AnyTokenRule)][:3]
    hostile_key, neighbour_key = keys[0], keys[1]
    base = refining_labeller_responder(rules=model.rules)

    def labeller(request):
        out = base(request)
        if (isinstance(out, dict) and "## Your label, tested on examples you have not seen" in request.prompt
                and f"# Component {hostile_key}\n" in request.prompt):
            out = {**out, "label": HOSTILE_REVISION, "reasoning": "because " + INJECT_IMG}
        return out

    fast = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_invalid_retries": 4}
    with LLMServer(labeller) as server:
        backend = AnthropicBackend(REFINE_MODEL, base_url=server.url, api_key="test-key")
        Interpreter(backend, progress=False, refine=1, keys=keys, **fast).run(harvest, paths)
        prompts = {k: r.prompt for r in server.requests for k in keys
                   if "## Your label, tested on" in r.prompt and f"# Component {k}\n" in r.prompt}
    with LLMServer(lambda r: {"reasoning": "the neighbours say so", "label": HOSTILE_NEIGHBOUR, "confidence": "low"}) as server:
        backend = AnthropicBackend(REFINE_MODEL, base_url=server.url, api_key="test-key")
        Interpreter(backend, progress=False, neighbours=True, keys=[neighbour_key], **fast).run(harvest, paths)
    return paths, keys, hostile_key, neighbour_key, prompts


def make_threshold_output_run(root: Path, run_id: str = "per-layer"):
    """The toy harvest (GPT-2 spelled tokens, no tokenizer kind) with a threshold per layer, labelled and
    scored by the output scorer through the token-match judge (`TokenMatchBackend`)."""
    from autointerp.scoring import OutputConfig, ScoringConfig, TokenMatchBackend, score_run

    loop = HarvestLoop([ReservoirAcc(k=6, context_tokens=4), OutputProbAcc(top_k=8)],
                       threshold={"h.0.mlp": 0.0, "h.1.mlp": 0.75}, seed=0, decode=decode, progress=False)
    harvest = loop.run(_batches())
    paths = RunPaths.of(run_id, root)
    harvest.save(paths.harvest)
    for k in harvest.keys():
        append_jsonl(paths.interpretation_results, InterpretationResult(k, f"predicts the tokens of {k}", "medium", ""))
    # a 16-token vocabulary: candidate lists may overlap, or no component has three distinct ones
    config = ScoringConfig(output=OutputConfig(n_tokens=4, n_candidates=3, n_trials=2, max_overlap=1.0, min_tokens=2))
    score_run(paths, backend=TokenMatchBackend(), scorers=["output"], config=config)
    return paths
