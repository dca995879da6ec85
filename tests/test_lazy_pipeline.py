"""Interpret, score and the notebook views read a lazy harvest one component at a time.

A real harvest (the planted synthetic model, 80 components) is saved and opened
with `load_harvest`; the store's line parser is wrapped to record which
components are parsed. Labelling or scoring a few components parses those (plus,
for the interpreter's template hash, the first `TEMPLATE_PEEK` by position, and
for intruder the candidates nearest in firing rate), never the whole harvest.
"""

from __future__ import annotations

import collections
import functools

import pytest

from autointerp.accumulators import InputTokenAcc, ReservoirAcc, TopActivationAcc
from autointerp.accumulators.window_pool import RandomWindowAcc
from autointerp.harvest import HarvestLoop, load_harvest
from autointerp.harvest_store import HarvestStore
from autointerp.interpret import TEMPLATE_PEEK, Interpreter
from autointerp.llm.offline import OfflineBackend
from autointerp.paths import RunPaths
from autointerp.report import open_run
from autointerp.report.notebook import harvest_html
from autointerp.scoring import TokenMatchBackend, score
from autointerp.testing.synthetic import DEFAULT_WORDS, SyntheticModel, TokenRule

N = 80
FAST = dict(backoff_initial_s=0.001, backoff_max_s=0.01, progress=False)


@functools.lru_cache(maxsize=1)
def _harvest():
    words = [" " + w for w in DEFAULT_WORDS]
    base = SyntheticModel.default(seed=1)
    model = SyntheticModel(vocab=base.vocab, rules=[TokenRule(words[i % len(words)]) for i in range(N)], seed=1)
    loop = HarvestLoop([ReservoirAcc(k=30, context_tokens=10), TopActivationAcc(k=10, context_tokens=10), InputTokenAcc(),
                        RandomWindowAcc(n_windows=128, window_len=32)],
                       vocab_size=model.vocab_size, decode=model.decode, seed=1, threshold=0.0, progress=False)
    return model, loop.run(model.batches(6, 32, 64))


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """(run paths, model, parsed counter): the harvest saved as a run, and a count of parses by key."""
    model, result = _harvest()
    paths = RunPaths(tmp_path / "run")
    result.save(paths.harvest)
    parsed: collections.Counter = collections.Counter()
    real = HarvestStore._parse

    def counting(self, raw, key):
        parsed[key] += 1
        return real(self, raw, key)

    monkeypatch.setattr(HarvestStore, "_parse", counting)
    return paths, model, parsed


def test_interpreting_a_few_components_parses_only_those(saved):
    paths, _, parsed = saved
    h = load_harvest(paths.harvest)
    keys = h.keys()
    assert len(keys) == N and not parsed
    chosen = keys[-3:]
    results = Interpreter(OfflineBackend(), **FAST).run(h, paths, keys=chosen)
    assert [r.component_key for r in results] == chosen
    assert set(parsed) == set(keys[:TEMPLATE_PEEK]) | set(chosen)
    assert all(parsed[k] == 1 for k in chosen)  # each labelled component read once
    assert h.lazy
    # a dry run and skip_dead over a key list read the index, then only the keys asked for
    parsed.clear()
    Interpreter(OfflineBackend(), **FAST).dry_run(h, paths, keys=[keys[-1]])
    assert parsed[keys[-1]] == 1 and set(parsed) <= set(keys[:TEMPLATE_PEEK]) | {keys[-1]}
    with pytest.raises(KeyError, match="no component 'synth:999'"):
        Interpreter(OfflineBackend(), **FAST).run(h, paths, keys=["synth:999"])


def test_scoring_a_few_components_parses_only_those(saved):
    paths, model, parsed = saved
    h = load_harvest(paths.harvest)
    chosen = h.keys()[10:13]
    labels = {k: model.labels()[k] for k in chosen}
    report = score(h, labels, scorers=("detection", "fuzzing", "simulation"), backend=TokenMatchBackend())
    assert {r.component_key for r in report.results} == set(chosen)
    assert set(parsed) == set(chosen) and all(parsed[k] == 1 for k in chosen)  # one read serves every scorer


def test_intruder_reads_the_chosen_components_and_their_rate_neighbours_only(saved):
    paths, model, parsed = saved
    h = load_harvest(paths.harvest)
    chosen = h.keys()[20:22]
    report = score(h, {k: model.labels()[k] for k in chosen}, scorers=("intruder",), backend=TokenMatchBackend(),
                   baselines=False)
    assert {r.component_key for r in report.results} == set(chosen)
    from autointerp.scoring.options import ScoringConfig

    n = ScoringConfig().scorer("intruder").context_neighbors()
    rate = sorted(h.summaries(), key=lambda r: r.firing_rate)
    near = set()
    for k in chosen:
        i = next(j for j, r in enumerate(rate) if r.key == k)
        near |= {r.key for r in rate[max(0, i - 2 * n - 2): i + 2 * n + 3]}
    assert set(chosen) <= set(parsed) <= near
    assert len(parsed) < N


def test_the_notebook_views_and_run_view_parse_only_what_they_show(saved):
    paths, _, parsed = saved
    view = open_run(paths.root)
    assert len(view) == N and view.keys()[0] == "synth:0" and "synth:5" in view
    assert not parsed  # the keys came from the index
    assert view["synth:5"].key == "synth:5" and view[7].key == "synth:7"
    assert set(parsed) == {"synth:5", "synth:7"}
    html = view._repr_html_()
    assert f"{N:,} components" in html and set(parsed) == {"synth:5", "synth:7"}
    with pytest.raises(KeyError, match="no component 'nope'"):
        view.component("nope")
    parsed.clear()
    h = load_harvest(paths.harvest)
    assert "Most frequent components (top 20)" in harvest_html(h, max_rows=20)
    assert sum(parsed.values()) <= 20 + min(200, N) and h.lazy
