"""The three evidence sets (explain / validate / test) are disjoint by window, recorded with
every label, and `autointerp score` never scores on a validation window."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scoring_helpers import synthetic_harvest  # noqa: E402

from autointerp.accumulators.window_pool import firing_columns
from autointerp.evidence_sets import EvidenceSets
from autointerp.heldout import example_span, split_recorded
from autointerp.interpret import Interpreter
from autointerp.llm.offline import OfflineBackend
from autointerp.paths import RunPaths
from autointerp.records import read_interpretations
from autointerp.schemas import EXPLAIN_SET, VALIDATE_SET
from autointerp.scoring import score_run
from autointerp.scoring.token_match import TokenMatchBackend


def positions(spans):
    """Every (sequence, position) a list of spans covers: the brute-force reading of "shares a position"."""
    return {(s, p) for s, a, b in spans for p in range(a, b)}


def test_explain_validate_and_test_share_no_token_position():
    _, harvest = synthetic_harvest()
    sets = EvidenceSets(harvest, n_explain=10, n_top=5, n_validate=8)
    from autointerp.scoring.plan import EvidenceCache
    from autointerp.scoring.options import ScoringConfig

    records = {c.key: sets.record(c) for c in harvest.components}
    cache = EvidenceCache(harvest, ScoringConfig(), seed=0, records=records)
    n_test = 0
    for c in harvest.components:
        record, val = sets.of(c)
        explain = positions(record.windows[EXPLAIN_SET])
        validate = positions(record.windows[VALIDATE_SET])
        assert explain and validate and not explain & validate, c.key
        # the validation set has its positives and pool windows, all recorded
        assert len(val.positives) == 8 and len(val.negatives) == 8 and len(val.randoms) == 4
        assert positions((w.sequence_index, w.start, w.start + len(w)) for w in val.positives + val.negatives + val.randoms) == validate
        assert all(not any(w.fires) for w in val.negatives) and all(any(w.fires) for w in val.positives)
        test = cache.full(c)  # what `autointerp score` would show the judge
        test_spans = [(w.sequence_index, w.start, w.start + len(w)) for w in test.positives + test.negatives + test.randoms]
        n_test += len(test_spans)
        assert not positions(test_spans) & (explain | validate), c.key
        assert len(test.positives) >= 4 and len(test.negatives) >= 4  # still enough to score
    assert n_test > 300


def test_the_sets_are_the_same_on_every_run_and_none_without_n_validate():
    _, harvest = synthetic_harvest()
    a = EvidenceSets(harvest, n_validate=8)
    b = EvidenceSets(harvest, n_validate=8)
    for c in harvest.components[:3]:
        assert a.record(c) == b.record(c)
    none = EvidenceSets(harvest, n_validate=0).record(harvest.components[0])
    assert set(none.windows) == {EXPLAIN_SET} and none.reserved() == []


def test_split_recorded_keeps_validation_examples_out_of_the_held_out_ones():
    _, harvest = synthetic_harvest()
    sets = EvidenceSets(harvest, n_validate=8)
    c = harvest.components[2]
    record = sets.record(c)
    split = split_recorded(c, record)
    assert len(split.validate) == 8
    val = positions(record.reserved())
    assert all(not positions([example_span(e)]) & val for e in split.holdout + split.holdout_top)
    assert {example_span(e) for e in split.explain + split.explain_top} <= set(record.shown())


@pytest.mark.parametrize("n_validate", [8, 0])
def test_score_never_uses_a_validation_window(tmp_path, n_validate):
    _, harvest = synthetic_harvest()
    paths = RunPaths.of("sets", tmp_path)
    harvest.save(paths.harvest)
    Interpreter(OfflineBackend(), progress=False, n_validate=n_validate).run(harvest, out=paths)
    labels = read_interpretations(paths)
    assert len(labels) == 10 and all(r.evidence.n_validate == n_validate for r in labels.values())
    report = score_run(paths, backend=TokenMatchBackend(), scorers=["detection", "simulation"], baselines=False)
    n = 0
    for r in report.results:
        assert not r.skipped, r.reason
        record = labels[r.component_key].evidence
        excluded = positions(record.spans())
        assert bool(record.reserved()) == (n_validate > 0)
        assert r.details["held_out"].get("validate_windows", 0) == len(record.reserved())
        for refs in r.details["windows"]:
            for ref in refs:
                span = (ref["sequence_index"], ref["start"], ref["start"] + ref["length"])
                assert not positions([span]) & excluded
                n += 1
    assert n > 200


def _free_offsets_brute(fired, spans, start, n_tok, want):
    """The negatives' crop rule as it was written: every offset, every firing, every span."""
    from autointerp.heldout import SpanIndex

    index = SpanIndex([(0, a, b) for a, b in spans])
    return [o for o in range(n_tok - want + 1)
            if not any(o <= f < o + want for f in set(fired)) and not index.overlaps(0, start + o, start + o + want)]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.integers(0, 40), st.lists(st.integers(-2, 26), max_size=6),
       st.lists(st.tuples(st.integers(0, 70), st.integers(0, 12)), max_size=4), st.booleans())
def test_free_crop_offsets_equal_the_brute_force_rule(n_tok, want, start, fired, spans, allow_empty):
    from autointerp.scoring.evidence import _free_offsets

    want = min(want, n_tok)
    spans = [(a, a + w if w or allow_empty else a + 1) for a, w in spans]  # some empty spans when allowed
    assert _free_offsets(fired, spans, start, n_tok, want) == _free_offsets_brute(fired, spans, start, n_tok, want)


def test_the_pool_groups_each_components_firings_as_the_file_lists_them():
    """`WindowPool` reads a component's firings from its slice of the grouped tensors: the same
    ``{window: [(offset, activation)]}`` as a plain scan of the file's lists, for every component."""
    from autointerp.scoring.evidence import WindowPool

    _, harvest = synthetic_harvest()
    shared = harvest.shared["window_pool"]
    pool = WindowPool.from_shared(shared)
    f = {name: col.tolist() for name, col in firing_columns(shared).items()}
    want: dict = {}
    for w, o, c, a in zip(f["window"], f["offset"], f["component"], f["activation"]):
        want.setdefault(int(c), {}).setdefault(int(w), []).append((int(o), float(a)))
    assert want and len(f["component"]) > 100
    for c in range(harvest.config.n_components):
        assert pool._of(c) == want.get(c, {})
        assert all(type(o) is int and type(a) is float for firings in pool._of(c).values() for o, a in firings)


def test_the_pool_keeps_only_the_last_components_it_was_asked_for():
    """A pool asked for every component (interpret's validation sets do) keeps the firings of the
    last ``KEEP_COMPONENTS`` only, and what it answers for a component read again after it was
    dropped equals a plain scan of the file's lists: offsets and activations per window, windows."""
    from autointerp.scoring.evidence import WindowPool, silent_value

    _, harvest = synthetic_harvest()
    shared = harvest.shared["window_pool"]
    pool = WindowPool.from_shared(shared)
    pool.KEEP_COMPONENTS = 3
    f = {name: col.tolist() for name, col in firing_columns(shared).items()}
    want: dict = {}
    for w, o, c, a in zip(f["window"], f["offset"], f["component"], f["activation"]):
        want.setdefault(int(c), {}).setdefault(int(w), []).append((int(o), float(a)))
    n = harvest.config.n_components
    asked = list(range(n)) + [0, 1, 0, 5, 2, n - 1, 0]  # every component, then some dropped ones again
    for c in asked:
        assert pool.windows_firing(c) == set(want.get(c, {}))
        for w in range(len(pool)):
            fired = want.get(c, {}).get(w, [])
            assert pool.firing_offsets(w, c) == [o for o, _ in fired]
            dense = [silent_value(pool.threshold_of(c))] * len(pool.windows[w]["token_ids"])
            for o, a in fired:
                dense[o] = a
            assert pool.activations(w, c) == dense
        assert len(pool._recent) <= 3 and next(reversed(pool._recent)) == c
    assert list(pool._recent) == [5, 2, n - 1, 0][-3:]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(0, 2**32))
def test_shuffled_yields_each_index_once(n, seed):
    """The lazy shuffle the negatives and randoms walk the pool in is a permutation of ``range(n)``."""
    import random

    from autointerp.scoring.evidence import shuffled

    assert sorted(shuffled(n, random.Random(seed))) == list(range(n))


def test_shuffled_is_uniform_over_orders_and_prefixes():
    """Every order of 5 indices equally likely (fixed seed, chi-square over the 120 orders), and a
    prefix read and abandoned is uniform too (the first two of 9: 72 ordered pairs)."""
    import itertools
    import random

    from scipy.stats import chisquare

    from autointerp.scoring.evidence import shuffled

    rng = random.Random(1234)
    perms = {p: i for i, p in enumerate(itertools.permutations(range(5)))}
    counts = [0] * len(perms)
    for _ in range(24_000):
        counts[perms[tuple(shuffled(5, rng))]] += 1
    assert chisquare(counts).pvalue > 0.001
    pairs = {p: i for i, p in enumerate(itertools.permutations(range(9), 2))}
    counts = [0] * len(pairs)
    for _ in range(14_400):
        it = shuffled(9, rng)
        counts[pairs[(next(it), next(it))]] += 1
    assert chisquare(counts).pvalue > 0.001


def test_a_components_sets_are_worked_out_from_one_split(monkeypatch):
    """`EvidenceSets.of` splits a component's examples once (it did so twice: for the validation
    windows and again for the record), and the record equals the one `evidence_split` works out
    alone from the same validation windows; the prompt's shown examples are the split's."""
    import autointerp.evidence_sets as es
    from autointerp.heldout import evidence_split, shown_examples, split_examples

    _, harvest = synthetic_harvest()
    sets = EvidenceSets(harvest, n_explain=10, n_top=5, n_validate=8)
    calls = []
    monkeypatch.setattr(es, "split_examples", lambda *a, **k: calls.append(a[0].key) or split_examples(*a, **k))
    comps = [c for c in harvest.components if c.examples][:6]
    for c in comps:
        record, val = sets.of(c)
        alone = evidence_split(c, 10, 5, sets.seed, 8, [(w.sequence_index, w.start, w.start + len(w))
                                                         for w in val.positives + val.negatives + val.randoms])
        assert record == alone
        split = split_examples(c, 10, 5, 8)
        assert shown_examples(c, 10, 5) == (split.explain, split.explain_top)
    assert calls == [c.key for c in comps]
