"""Comparing label sets: the paired bootstrap against brute force and known coverage, the result's
bookkeeping, and `compare` on planted truth (a true-rule set ahead of a shuffled one).

The planted-truth test labels through the real anthropic SDK against the local fault
server (`scripted_labeller`) and scores through it too (`rule_judge_responder`, the
planted-truth judge of tests/test_calibration.py).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from scoring_helpers import synthetic_harvest  # noqa: E402

import autointerp.compare as compare_mod
from autointerp.cli import main as cli_main
from autointerp.compare import bootstrap_mean_ci, compare_label_sets, compare_scores
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.paths import RunPaths
from autointerp.records import group_scores
from autointerp.schemas import ScoreResult
from autointerp.scoring import score_run
from autointerp.testing.llm_server import LLMServer
from autointerp.testing.synthetic import rule_judge_responder, scripted_labeller

KEY = "test-key"
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_invalid_retries": 4}


# -- the bootstrap ---------------------------------------------------------------------------


def test_bootstrap_matches_the_exact_bootstrap_distribution():
    # n = 5: the bootstrap distribution of the mean is the mean over all 5**5 equally likely index tuples
    x = np.array([0.0, 0.1, 0.4, 0.5, 1.0])
    means = np.array([x[list(t)].mean() for t in itertools.product(range(5), repeat=5)])
    exact = np.quantile(means, [0.025, 0.975])
    lo, hi = bootstrap_mean_ci(x, n_resamples=200_000, seed=3)
    assert lo == pytest.approx(exact[0], abs=0.021) and hi == pytest.approx(exact[1], abs=0.021)  # means move in steps of 0.02


def test_bootstrap_is_the_same_whatever_the_block_size(monkeypatch):
    x = np.random.default_rng(0).normal(size=37)
    whole = bootstrap_mean_ci(x, n_resamples=999, seed=5)
    monkeypatch.setattr(compare_mod, "_BLOCK_ELEMENTS", 37 * 7)  # 7 resamples a block, the last one short
    assert bootstrap_mean_ci(x, n_resamples=999, seed=5) == whole
    assert bootstrap_mean_ci(x, n_resamples=999, seed=6) != whole


def test_bootstrap_ci_covers_a_known_mean_difference_about_95_percent_of_the_time():
    # paired samples with a known mean difference of 0.1 (fixed seed): the 95% interval must cover it ~95% of the time
    rng = np.random.default_rng(2024)
    n_reps, covered = 400, 0
    for r in range(n_reps):
        a = rng.uniform(0.3, 0.9, size=30)
        b = a - 0.1 + rng.normal(0, 0.3, size=30)
        lo, hi = bootstrap_mean_ci(a - b, n_resamples=2000, seed=r)
        covered += lo <= 0.1 <= hi
    rate = covered / n_reps
    print(f"\ncoverage of the true difference: {rate:.3f} over {n_reps} samples of 30 pairs")
    assert 0.91 <= rate <= 0.98  # the percentile bootstrap runs slightly short of 95% at n = 30


def test_bootstrap_edge_cases_and_bad_input():
    assert bootstrap_mean_ci([0.25]) == (0.25, 0.25)
    assert all(np.isnan(bootstrap_mean_ci([])))
    assert bootstrap_mean_ci([0.0] * 8) == (0.0, 0.0)
    with pytest.raises(ValueError, match="n_resamples must be a whole number >= 1, got 0"):
        bootstrap_mean_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="level must be a number between 0 and 1"):
        bootstrap_mean_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="values must be finite numbers"):
        bootstrap_mean_ci([1.0, float("nan")])


# -- the comparison's bookkeeping ------------------------------------------------------------


def _scores(values: dict[str, float | None], scorer: str = "detection", tag: str = "") -> dict:
    lines = [ScoreResult(component_key=k, scorer=scorer, label_source="label", label=f"{tag}{k}", score=v,
                         skipped=v is None, reason="no evidence" if v is None else "") for k, v in values.items()]
    return group_scores(lines)


scores_st = st.dictionaries(st.sampled_from([f"l:{i}" for i in range(12)]),
                            st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])), min_size=1, max_size=12)


@given(scores_st, scores_st)
def test_comparison_bookkeeping(a, b):
    c = compare_scores(_scores(a, tag="A "), _scores(b, tag="B "), n_resamples=200, top=3)["detection"]
    paired = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    d = [a[k] - b[k] for k in paired]
    assert c.n == len(paired) and c.wins + c.ties + c.losses == c.n
    assert c.wins == sum(x > 0 for x in d) and c.losses == sum(x < 0 for x in d)
    if paired:
        assert c.mean_diff == pytest.approx(np.mean(d)) and c.mean_diff == pytest.approx(c.mean_a - c.mean_b)
        assert min(d) - 1e-12 <= c.ci_low <= c.ci_high <= max(d) + 1e-12
        # the largest |differences|, with the labels each set scored
        assert [abs(x.diff) for x in c.disagreements] == sorted((abs(x) for x in d if x != 0), reverse=True)[:3]
        assert all(x.label_a == "A " + x.key and x.label_b == "B " + x.key for x in c.disagreements)
        swapped = compare_scores(_scores(b), _scores(a), n_resamples=200)["detection"]
        assert (swapped.wins, swapped.losses) == (c.losses, c.wins)
        assert swapped.mean_diff == pytest.approx(-c.mean_diff)
    else:
        assert not c.excludes_zero and c.verdict == "no component scored in both sets"


def test_a_component_level_scorer_is_left_out_and_unknown_scorers_are_refused():
    a = {**_scores({"l:0": 1.0}), **group_scores([ScoreResult("l:0", "intruder", "none", "", 0.8)])}
    b = {**_scores({"l:0": 0.5}), **group_scores([ScoreResult("l:0", "intruder", "none", "", 0.8)])}
    c = compare_scores(a, b)
    assert [s.scorer for s in c.scorers] == ["detection"] and "judges the component" in c.skipped["intruder"]
    with pytest.raises(ValueError, match=r"scorers: 'fuzzing' has no scores in label set 'A' or 'B'; scored in both: \['detection', 'intruder'\]"):
        compare_scores(a, b, scorers=["fuzzing"])
    with pytest.raises(KeyError, match="no comparison for scorer 'fuzzing'"):
        c["fuzzing"]


def test_compare_label_sets_refuses_missing_sets_clearly(tmp_path):
    model, harvest = synthetic_harvest(seed=1)
    paths = RunPaths.of("r", tmp_path)
    harvest.save(paths.harvest)
    with pytest.raises(ValueError, match="set_a and set_b must be two different label sets"):
        compare_label_sets(paths, "A", "A")
    with pytest.raises(ValueError, match=r"set_b must be a name of letters"):
        compare_label_sets(paths, "A", "../B")
    with pytest.raises(ValueError, match=r"set_a: the run has no label set 'A' .*it has none"):
        compare_label_sets(paths, "A", "B")
    from autointerp.schemas import InterpretationResult
    from autointerp.storage import append_jsonl

    for name in ("A", "B"):
        append_jsonl(paths.with_label_set(name).interpretation_results, InterpretationResult("synth:0", "x", "high", ""))
    with pytest.raises(ValueError, match=r"set_a: label set 'A' has no scores .*autointerp score r --label_set A"):
        compare_label_sets(paths, "A", "B")


# -- planted truth ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A planted-rule run with two label sets, each labelled and scored through the real SDK:
    ``true`` (every planted rule) and ``shuffled`` (each component given another's rule)."""
    tmp = tmp_path_factory.mktemp("compare")
    model, harvest = synthetic_harvest(seed=1)
    paths = RunPaths.of("planted", tmp)
    harvest.save(paths.harvest)
    true = model.labels()
    keys = list(true)
    shuffled = {k: true[keys[(i + 1) % len(keys)]] for i, k in enumerate(keys)}
    for name, labels in (("true", true), ("shuffled", shuffled)):
        with LLMServer(scripted_labeller(labels), api_key=KEY) as server:
            mp = pytest.MonkeyPatch()
            mp.setenv("ANTHROPIC_API_KEY", KEY)
            try:
                assert cli_main(["interpret", "planted", "--out", str(tmp), "--label_set", name, "--base_url", server.url,
                                 "--no_progress", "--backoff", "0.01"]) == 0
            finally:
                mp.undo()
    with LLMServer(rule_judge_responder(rules=model.rules), api_key=KEY, fault_rates={"429": 0.03}, seed=2) as server:
        judge = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key=KEY)
        for name in ("true", "shuffled"):
            score_run(paths, label_set=name, backend=judge, scorers=["detection", "simulation"], baselines=False,
                      max_concurrent=8, runner_options=FAST)
    return tmp, paths


def test_compare_puts_the_true_rule_set_ahead_of_the_shuffled_set(planted):
    tmp, paths = planted
    result = compare_label_sets(paths, "true", "shuffled")
    print("\n" + result.table())
    for scorer in ("detection", "simulation"):
        c = result[scorer]
        assert c.n == 10 and c.excludes_zero and c.ci_low > 0, result.table()
        assert c.mean_a >= 0.9 and c.mean_diff >= 0.3 and c.wins >= 8, result.table()
        assert c.disagreements and c.disagreements[0].label_a != c.disagreements[0].label_b
    assert result["detection"].verdict == "A ahead"
    # the other way round: B ahead by the same amount
    back = compare_label_sets(paths, "shuffled", "true")
    assert back["detection"].mean_diff == pytest.approx(-result["detection"].mean_diff)
    assert back["detection"].ci_high < 0 and back["detection"].verdict == "B ahead"


def test_compare_command_prints_the_table_and_json(planted, capsys):
    tmp, paths = planted
    assert cli_main(["compare", "planted", "--out", str(tmp), "--sets", "true,shuffled", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "label set A = 'true' vs B = 'shuffled'" in out and "10,000 resamples, seed 0" in out
    assert "detection" in out and "simulation" in out and "A ahead" in out
    assert out.count("  synth:") == 4  # two disagreements for each of two scorers
    assert cli_main(["compare", "planted", "--out", str(tmp), "--sets", "true,shuffled", "--scorers", "detection",
                     "--json", "--resamples", "500"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_resamples"] == 500 and [s["scorer"] for s in doc["scorers"]] == ["detection"]
    assert doc["scorers"][0]["excludes_zero"] is True
    with pytest.raises(SystemExit):
        cli_main(["compare", "planted", "--out", str(tmp), "--sets", "true"])
    assert "expected two label sets as A,B" in capsys.readouterr().err
    assert cli_main(["compare", "planted", "--out", str(tmp), "--sets", "true,nope"]) == 2
    assert "set_b: the run has no label set 'nope'" in capsys.readouterr().err
