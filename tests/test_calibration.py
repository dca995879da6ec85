"""Calibration on planted ground truth: the scorers measure what they claim.

A synthetic model whose components fire by known rules is harvested; a scripted
judge behind a real HTTP server, reached through the real SDK, answers every
scorer prompt by applying the rule that the label states (intruder prompts,
which carry no label, from the planted rules: the excerpt whose marks do not
follow the majority's rule). True-rule labels must score near perfectly,
shuffled labels at chance on detection and far below on simulation; intruder
finds real outsiders far above chance and lands at chance when the "outsider"
is the component itself. Faults (429s, non-JSON answers) are injected so the retry path is
part of what is calibrated.
"""

from __future__ import annotations

import asyncio

import pytest
from attrs import evolve

from autointerp.llm.anthropic import AnthropicBackend
from autointerp.llm.openai_compat import OpenAICompatBackend
from autointerp.paths import ScoresFolder
from autointerp.scoring import WindowPool, build_evidence, score
from autointerp.scoring.intruder import IntruderConfig, IntruderScorer
from autointerp.storage import read_jsonl
from autointerp.testing.llm_server import LLMServer
from autointerp.testing.synthetic import rule_judge_responder
from scoring_helpers import synthetic_harvest

FAST_RETRIES = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_invalid_retries": 4}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    model, harvest = synthetic_harvest(seed=1)
    d = tmp_path_factory.mktemp("calibration") / "scores"
    with LLMServer(rule_judge_responder(rules=model.rules), fault_rates={"429": 0.03, "malformed_json": 0.03}, seed=1) as server:
        backend = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key="test-key")
        report = score(harvest, model.labels(), backend=backend, scores_dir=d, max_concurrent=8, runner_options=FAST_RETRIES)
        n_requests = len(server.requests)
        faults = dict(server.faults_served)
    print("\n" + report.table())
    return report, d, n_requests, faults


def test_true_rule_labels_score_high(calibrated):
    report, *_ = calibrated
    assert not report.pending
    det = report.row("detection", "label")
    sim = report.row("simulation", "label", "f1")
    assert det.n == 10 and det.mean >= 0.9, report.table()
    assert sim.n == 10 and sim.mean >= 0.9, report.table()
    assert min(report.scores("detection").values()) >= 0.8
    assert report.row("fuzzing", "label").mean >= 0.9
    assert report.row("simulation", "label", "correlation").mean >= 0.8


def test_shuffled_labels_land_at_chance(calibrated):
    report, *_ = calibrated
    det = report.row("detection", "shuffled")
    sim = report.row("simulation", "shuffled", "f1")
    true_sim = report.row("simulation", "label", "f1")
    assert det.n == 10 and abs(det.mean - 0.5) <= 0.1, report.table()
    assert sim.mean <= 0.3 and sim.mean <= true_sim.mean - 0.5, report.table()
    assert abs(report.row("fuzzing", "shuffled").mean - 0.5) <= 0.1


def test_intruder_finds_planted_outsiders_far_above_chance(calibrated):
    report, *_ = calibrated
    row = report.row("intruder", "none")
    assert row.chance == pytest.approx(0.2)
    assert row.n == 10 and row.mean >= 0.8, report.table()


def test_intruder_without_an_outsider_lands_at_chance():
    # the control: each "intruder" is a held-out example of the component itself, so the
    # planted-truth judge has nothing to find; accuracy must fall to 1 / (n_real + 1)
    model, harvest = synthetic_harvest(seed=1)
    pool = WindowPool.from_shared(harvest.shared["window_pool"])
    cfg = IntruderConfig(n_real=4, n_trials=3)
    hits = trials = 0
    with LLMServer(rule_judge_responder(rules=model.rules)) as server:
        backend = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key="test-key")
        for c in harvest.components:
            ev = build_evidence(c, pool, flat_index=c.index, threshold=harvest.config.threshold)
            n = cfg.n_real * cfg.n_trials
            assert len(ev.positives) > n + 3, ev
            twin = evolve(ev, key=c.key + "/twin", positives=ev.positives[n:])
            res = asyncio.run(IntruderScorer(cfg).score_one(
                evolve(ev, positives=ev.positives[:n]), "", backend=backend, label_source="none",
                context={twin.key: twin}, **FAST_RETRIES))  # fmt: skip
            assert not res.skipped, res.reason
            hits += int(res.metrics["n_correct"])
            trials += res.n_trials
    print(f"\nintruder with no outsider: {hits}/{trials} = {hits / trials:.2f} (chance 0.20)")
    assert trials == 30 and abs(hits / trials - 0.2) <= 0.15


def test_every_call_crossed_the_wire_and_faults_were_retried(calibrated):
    report, d, n_requests, faults = calibrated
    trials = list(read_jsonl(ScoresFolder(d).trial_records))
    assert report.run is not None and report.run.completed == len(trials)
    assert n_requests == report.run.requests > len(trials)  # the retries were real requests
    assert faults.get("429", 0) + faults.get("malformed_json", 0) == report.run.retries > 0
    assert all(r["model"] == "claude-haiku-4-5-20251001" for r in trials)


def test_openai_compatible_judge_agrees():
    model, harvest = synthetic_harvest(seed=1)
    with LLMServer(rule_judge_responder()) as server:
        backend = OpenAICompatBackend("local-judge", base_url=server.openai_url, api_key="test-key")
        report = score(harvest, model.labels(), backend=backend, scorers=["detection"], baselines=False, limit=4)
    assert report.row("detection", "label").mean >= 0.9
