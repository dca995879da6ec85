"""Choosing the firing threshold: look at a few batches of activations before a harvest.

A component "fires" where its activation is above the harvest's threshold, and
every statistic (examples, token tables, co-firing, scores) is about firings, so
the threshold decides what the labeller sees. The right one depends on the
activation: 0 is natural for ReLU neurons and SAE latents (exact zeros when
silent), but a GELU or SiLU neuron is slightly negative or slightly positive
almost everywhere, and at 0 a quarter of all tokens can "fire". `probe_layers`
runs the target over ``n_batches`` batches and returns, per layer, activation
quantiles, the firing density (the share of (token, component) pairs above the
threshold) at a ladder of candidate thresholds, and a suggestion: the threshold
whose density is ``target_density`` (default 1%), or 0 where 0 already fires
less often than that. ``autointerp probe`` prints it; the suggestion is printed as
a ``--threshold layer=value,...`` argument for ``autointerp harvest``::

    from autointerp.probe import probe_layers
    from autointerp.run_harvest import HarvestOptions
    for layer in probe_layers(HarvestOptions(target="demo"), n_batches=2):
        print(layer.name, layer.suggested, layer.density_at(layer.suggested))

Densities at the candidates are exact counts over every valid token of the
batches; quantiles and the suggestion come from a seeded uniform sample of at
most ``max_values`` activations per layer (exact when the layer has fewer).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from attrs import define, evolve, field

from autointerp.batch import SparseActivations
from autointerp.data import check_vocab, token_batches
from autointerp.thresholds import format_threshold

#: thresholds whose firing density is counted exactly (before the data-driven ones)
CANDIDATE_THRESHOLDS = (0.0, 1e-6, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
QUANTILES = (0.0, 0.5, 0.9, 0.99, 0.999, 1.0)
DEFAULT_TARGET_DENSITY = 0.01


@define
class LayerProbe:
    """What a few batches say about one layer's activations."""

    name: str
    width: int
    n_tokens: int
    #: ``{q: value}`` for `QUANTILES` (0.0 is the minimum, 1.0 the maximum seen)
    quantiles: dict[float, float]
    #: ``{threshold: share of (token, component) pairs with activation > threshold}``
    densities: dict[float, float]
    suggested: float
    target_density: float
    #: share of activations that are exactly 0 (ReLU, SAE latents, SPD causal importances)
    zero_fraction: float
    sample: torch.Tensor = field(repr=False, eq=False)

    def density_at(self, threshold: float) -> float:
        """The density at ``threshold``: exact at a candidate, else estimated from the sample."""
        if threshold in self.densities:
            return self.densities[threshold]
        return float((self.sample > threshold).float().mean()) if self.sample.numel() else 0.0


def suggest_threshold(sample: torch.Tensor, target_density: float) -> float:
    """The threshold above which ``target_density`` of ``sample`` lies, never below 0, in 2 significant digits.

    At or below 0 the natural threshold is 0 (ReLU and SAE zeros; below it, negative values would fire).

    >>> suggest_threshold(torch.linspace(-1, 1, 10001), 0.01)
    0.98
    >>> suggest_threshold(torch.tensor([0.0] * 995 + [1.0] * 5), 0.01)
    0.0
    """
    if not 0 < target_density < 1:
        raise ValueError(f"target_density must be in (0, 1), got {target_density}")
    if sample.numel() == 0:
        return 0.0
    values = sample.double().sort().values
    k = min(values.numel() - 1, max(0, math.ceil((1 - target_density) * values.numel()) - 1))
    t = float(values[k])
    if t <= 0:
        return 0.0
    # two significant digits, rounded up: a readable number that never lets more than the target fire
    step = 10.0 ** (math.floor(math.log10(t)) - 1)
    return float(f"{math.ceil(t / step - 1e-4) * step:.2g}")


def _layer_batches(opts, n_batches: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """``({layer: [P, C] activations}, [P] valid mask)`` for each of the first ``n_batches`` batches."""
    from autointerp import run_harvest as rh

    target = rh.load_target(opts)
    opts = rh.with_target_defaults(opts, target)
    if target.max_context_length is not None and opts.context_length > target.max_context_length:
        raise ValueError(f"--context_length {opts.context_length} is longer than the model's context length "
                         f"{target.max_context_length}; pass --context_length {target.max_context_length} or less")
    source = rh.open_source(opts, target)
    check_vocab(source, target.vocab_size)
    fn = target.harvest_fn
    device = getattr(fn, "device", None) or torch.device("cpu")
    for tb in token_batches(source, opts.batch_size, n_batches=n_batches, seed=opts.seed, shuffle=opts.shuffle):
        with torch.no_grad():
            batch = fn(tb.tokens.to(device))
        B, S = batch.tokens.shape
        valid = torch.ones(B * S, dtype=torch.bool)
        if tb.mask is not None:
            valid &= tb.mask.reshape(-1).cpu()
        if batch.mask is not None:
            valid &= batch.mask.reshape(-1).cpu()
        yield {l: (a.to_dense() if isinstance(a, SparseActivations) else a).reshape(B * S, -1).float().cpu()
               for l, a in batch.activations.items()}, valid


def probe_layers(opts, *, n_batches: int = 4, target_density: float = DEFAULT_TARGET_DENSITY,
                 candidates: Sequence[float] = CANDIDATE_THRESHOLDS, max_values: int = 1 << 22) -> list[LayerProbe]:
    """Per layer of ``opts`` (a `HarvestOptions`): quantiles, densities at ``candidates`` and a suggested threshold."""
    if n_batches < 1:
        raise ValueError(f"--n_batches must be at least 1, got {n_batches}")
    if not 0 < target_density < 1:
        raise ValueError(f"--target_density must be a share in (0, 1), e.g. 0.01 for 1%, got {target_density}")
    opts = evolve(opts, output_probs="off", n_batches=n_batches, progress=False)
    gen = torch.Generator().manual_seed(opts.seed)
    cands = sorted(set(float(c) for c in candidates))
    above: dict[str, torch.Tensor] = {}
    zeros: dict[str, int] = {}
    samples: dict[str, list[torch.Tensor]] = {}
    widths: dict[str, int] = {}
    n_tokens = 0
    per_batch = max(1, max_values // n_batches)
    thr = torch.tensor(cands)
    for acts, valid in _layer_batches(opts, n_batches):
        n_tokens += int(valid.sum())
        for layer, a in acts.items():
            a = a[valid]
            widths[layer] = a.shape[1]
            flat = a.reshape(-1)
            counts = (flat[:, None] > thr[None, :]).sum(0) if flat.numel() * len(cands) <= 1 << 27 else \
                torch.stack([(flat > t).sum() for t in cands])
            above[layer] = above.get(layer, torch.zeros(len(cands), dtype=torch.int64)) + counts
            zeros[layer] = zeros.get(layer, 0) + int((flat == 0).sum())
            if flat.numel() > per_batch:
                flat = flat[torch.randperm(flat.numel(), generator=gen)[:per_batch]]
            samples.setdefault(layer, []).append(flat)
    if not widths:
        raise ValueError(f"the dataset gave no batches for {opts.target!r}; check --dataset")
    out = []
    for layer, width in widths.items():
        total = max(n_tokens * width, 1)
        sample = torch.cat(samples[layer])
        qs = torch.quantile(sample.double(), torch.tensor(QUANTILES, dtype=torch.float64)) if sample.numel() <= 1 << 24 \
            else torch.tensor([float(sample.kthvalue(max(1, int(q * sample.numel())))[0]) for q in QUANTILES])
        out.append(LayerProbe(
            name=layer, width=width, n_tokens=n_tokens,
            quantiles={q: float(v) for q, v in zip(QUANTILES, qs.tolist())},
            densities={c: int(n) / total for c, n in zip(cands, above[layer].tolist())},
            suggested=suggest_threshold(sample, target_density), target_density=target_density,
            zero_fraction=zeros[layer] / total, sample=sample,
        ))
    return out


def _pct(x: float) -> str:
    return f"{x:.1%}" if x >= 0.001 or x == 0 else f"{x:.2g}"


def format_probe(layers: Sequence[LayerProbe]) -> str:
    """The table ``autointerp probe`` prints, ending with the ``--threshold`` argument to pass."""
    lines = []
    for p in layers:
        lines.append(f"{p.name}: {p.width:,} components x {p.n_tokens:,} tokens"
                     + (f"; {p.zero_fraction:.0%} exactly 0" if p.zero_fraction >= 0.01 else ""))
        q = "  ".join(f"{'min' if k == 0 else 'max' if k == 1 else f'{k:.1%}'.replace('.0%', '%')} {v:.3g}"
                      for k, v in p.quantiles.items())
        lines.append(f"  activation quantiles  {q}")
        cells = [(f"{t:g}", _pct(d)) for t, d in p.densities.items()]
        lines.append("  threshold  " + "  ".join(f"{a:>7}" for a, _ in cells))
        lines.append("  density    " + "  ".join(f"{b:>7}" for _, b in cells))
        lines.append(f"  suggested  {p.suggested:g} (density {_pct(p.density_at(p.suggested))}, "
                     f"target {_pct(p.target_density)})")
    lines.append("")
    if layers:  # one value when every layer suggests the same; else layer=value,... (autointerp.thresholds)
        spec = {p.name: p.suggested for p in layers}
        lines.append("suggested: --threshold " + format_threshold(spec if len(set(spec.values())) > 1
                                                                   else layers[0].suggested))
    return "\n".join(lines)


__all__ = ["CANDIDATE_THRESHOLDS", "LayerProbe", "format_probe", "probe_layers", "suggest_threshold"]
