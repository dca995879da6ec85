"""Refinement against the validation set's mistakes, measured on planted truth.

`SyntheticModel.partial` has components that fire on any of two tokens; the
scripted labeller behind the local LLM server (`refining_labeller_responder`,
reached through the real Anthropic and OpenAI SDKs) names only the most frequent
firing token at first (an incomplete label) and revises from the misses it is
shown. Refinement must lift the test scores of those components to the true
rule's level, while shuffled labels stay at chance. The judge applies the rule
a label states (the scorers' calibration judge). Faults are injected so retries
are part of what is measured.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autointerp.accumulators import InputTokenAcc, ReservoirAcc, TopActivationAcc
from autointerp.accumulators.window_pool import RandomWindowAcc
from autointerp.harvest import HarvestLoop
from autointerp.interpret import Interpreter
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.llm.offline import OfflineBackend
from autointerp.llm.openai_compat import OpenAICompatBackend
from autointerp.paths import RefineFolder, RunPaths
from autointerp.records import read_interpretations
from autointerp.schemas import RefinementRound
from autointerp.scoring import score
from autointerp.storage import read_jsonl, read_jsonl_as
from autointerp.testing.llm_server import LLMServer
from autointerp.testing.synthetic import AnyTokenRule, SyntheticModel, refining_labeller_responder

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_invalid_retries": 4}
MODEL = "claude-haiku-4-5-20251001"


@functools.lru_cache(maxsize=1)
def partial_harvest():
    model = SyntheticModel.partial(seed=2)
    loop = HarvestLoop(
        [ReservoirAcc(k=40, context_tokens=10), TopActivationAcc(k=10, context_tokens=10), InputTokenAcc(),
         RandomWindowAcc(n_windows=256, window_len=32)],
        vocab_size=model.vocab_size, decode=model.decode, seed=2, progress=False,
    )  # fmt: skip
    return model, loop.run(model.batches(6, 32, 64))


def partial_keys(model):
    return [k for k, r in zip(model.keys(), model.rules) if isinstance(r, AnyTokenRule)]


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    model, harvest = partial_harvest()
    d = tmp_path_factory.mktemp("refine")
    with LLMServer(refining_labeller_responder(rules=model.rules), fault_rates={"429": 0.02, "malformed_json": 0.02},
                   seed=3) as server:
        backend = AnthropicBackend(MODEL, base_url=server.url, api_key="test-key")
        first = Interpreter(backend, progress=False, **FAST).run(harvest, d / "first")
        interp = Interpreter(backend, progress=False, refine=2, **FAST)
        refined = interp.run(harvest, d / "refined")
        prompts = [r.prompt for r in server.requests if "## Your label, tested on examples" in r.prompt]
        reports = {}
        for name, labels in (("first", first), ("refined", refined), ("true", model.labels())):
            reports[name] = score(harvest, labels, backend=backend, scorers=["detection", "simulation"],
                                  baselines=name == "refined", max_concurrent=16, runner_options=FAST)
    for name, rep in reports.items():
        print(f"\n{name}\n{rep.table()}")
    return model, harvest, d, interp, first, refined, reports, prompts


def scores_of(report, scorer, keys, metric=None, source="label"):
    out = []
    for r in report.results:
        if r.scorer == scorer and r.label_source == source and r.component_key in keys and not r.skipped:
            out.append(r.metrics[metric] if metric else r.score)
    assert len(out) == len(keys)
    return mean(out)


def test_refinement_lifts_incomplete_labels_to_the_true_rule(calibrated):
    model, _, _, _, first, refined, reports, _ = calibrated
    keys = partial_keys(model)
    firsts = {r.component_key: r.label for r in first}
    assert all(AnyTokenRule not in (type(None),) and firsts[k].startswith("the token ") for k in keys)  # incomplete
    for scorer in ("detection", "simulation"):
        true = scores_of(reports["true"], scorer, keys)
        before = scores_of(reports["first"], scorer, keys)
        after = scores_of(reports["refined"], scorer, keys)
        print(f"{scorer}: incomplete {before:.3f}, refined {after:.3f}, true rule {true:.3f}")
        assert before <= true - 0.05, (scorer, before, true)  # the incomplete label is measurably worse
        assert after >= true - 0.05, (scorer, after, true)  # refinement closes the gap
    labels = {r.component_key: r.label for r in refined}
    assert sum(labels[k] == model.labels()[k] for k in keys) >= len(keys) - 1


def test_shuffled_refined_labels_stay_at_chance(calibrated):
    model, *_, reports, _ = calibrated
    keys = model.keys()
    det = scores_of(reports["refined"], "detection", keys, source="shuffled")
    sim = scores_of(reports["refined"], "simulation", keys, source="shuffled")
    assert abs(det - 0.5) <= 0.1 and sim <= 0.3, (det, sim)


def test_every_round_is_recorded_and_the_best_validated_label_is_kept(calibrated):
    model, _, d, interp, _, refined, _, prompts = calibrated
    folder = RefineFolder.of(d / "refined")
    rounds = read_jsonl_as(folder.rounds, RefinementRound)
    by_comp: dict[str, list[RefinementRound]] = {}
    for r in rounds:
        by_comp.setdefault(r.component_key, []).append(r)
    assert set(by_comp) == set(model.keys())
    labels = list(read_jsonl(folder.labels))
    assert len({r["key"] for r in labels}) == len(labels)  # every labeller answer asked once
    trials = list(read_jsonl(folder.trials))
    assert len({r["key"] for r in trials}) == len(trials)
    for res in refined:
        rs = sorted(by_comp[res.component_key], key=lambda r: r.round)
        assert [r.round for r in rs] == list(range(len(rs)))
        best = max(rs, key=lambda r: (r.score, -r.round))
        assert res.label == best.label and res.refinement.chosen_round == best.round
        assert res.refinement.validation_score == best.score
        assert res.refinement.first_validation_score == rs[0].score
        assert res.refinement.cost_usd == pytest.approx(sum(r.cost_usd for r in rs))
        assert all(r.cost_usd > 0 and r.judge_usage.input_tokens > 0 for r in rs)
        assert res.evidence is not None and res.evidence.reserved()  # the validation set is recorded
    # a revision was asked only where the label made mistakes, and it showed them
    for key in partial_keys(model):
        assert by_comp[key][0].wrong and by_comp[key][0].score < 1
    assert all(len(by_comp[k]) == 1 for k in model.keys() if k not in partial_keys(model))
    assert prompts and all("### Misses" in p and "<<" in p.split("### Misses")[1] for p in prompts)
    assert interp.summary.completed == len(model.keys()) and interp.summary.cost_usd > 0
    assert [name for name, _ in interp.refine_stages][:2] == ["label round 0 (candidate)", "validate rounds 0-0"]


def test_rerun_asks_nothing(calibrated):
    model, harvest, d, *_ = calibrated
    with LLMServer(refining_labeller_responder(rules=model.rules)) as server:
        backend = AnthropicBackend(MODEL, base_url=server.url, api_key="test-key")
        again = Interpreter(backend, progress=False, refine=2, **FAST).run(harvest, d / "refined")
        assert not [r for r in server.requests if r.path == "/v1/messages"]
    assert len(again) == len(model.keys())


def test_best_of_k_candidates_with_the_openai_compatible_backend(tmp_path):
    model, harvest = partial_harvest()
    keys = model.keys()[:3]
    with LLMServer(refining_labeller_responder(rules=model.rules)) as server:
        backend = OpenAICompatBackend("local-labeller", base_url=server.openai_url, api_key="test-key")
        interp = Interpreter(backend, progress=False, candidates=2, keys=keys, prices={"local-labeller": (0, 0)}, **FAST)
        results = interp.run(harvest, tmp_path)
        candidate_prompts = [r.prompt for r in server.requests if "## Earlier candidate labels" in r.prompt]
    assert len(candidate_prompts) == 3
    rounds = read_jsonl_as(RefineFolder.of(tmp_path).rounds, RefinementRound)
    assert sorted((r.component_key, r.round, r.kind) for r in rounds) == sorted((k, i, "candidate") for k in keys for i in (0, 1))
    for res in results:
        rs = [r for r in rounds if r.component_key == res.component_key]
        assert res.refinement.validation_score == max(r.score for r in rs)
        assert res.refinement.stopped in ("best of 2 candidates", "no mistake on the validation set")
        assert res.label.startswith("the token ")  # the two candidates name different single tokens
    assert len({r.label for r in rounds if r.component_key == keys[0]}) == 2


def test_the_offline_labeller_does_not_refine():
    _, harvest = partial_harvest()
    with pytest.raises(ValueError, match="offline token-lookup labeller does not refine"):
        Interpreter(OfflineBackend(), progress=False, refine=1).run(harvest, None)


def test_refine_options_are_checked():
    for bad in ({"refine": -1}, {"candidates": 0}, {"n_validate": -2}, {"judge": "claude"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Interpreter(OfflineBackend(), progress=False, **bad)


def test_the_cost_cap_covers_refinement_and_a_rerun_finishes_without_paying_twice(tmp_path):
    model, harvest = partial_harvest()
    keys = partial_keys(model)[:3]
    prices = {MODEL: (1000.0, 1000.0)}  # dear enough that a few calls reach the cap
    with LLMServer(refining_labeller_responder(rules=model.rules)) as server:
        backend = AnthropicBackend(MODEL, base_url=server.url, api_key="test-key")
        capped = Interpreter(backend, progress=False, refine=2, keys=keys, prices=prices, max_concurrent=1,
                             max_cost_usd=5.0, **FAST)
        part = capped.run(harvest, tmp_path)
        first_requests = len([r for r in server.requests if r.path == "/v1/messages"])
        assert capped.summary.stopped_reason.startswith("cost limit")
        assert len(part) < len(keys)
        spent = capped.summary.cost_usd
        full = Interpreter(backend, progress=False, refine=2, keys=keys, prices=prices, **FAST).run(harvest, tmp_path)
    assert len(full) == len(keys)
    # the capped run stopped soon after the cap (one request in flight at a time)
    assert spent < 5.0 + 3 * max(r.cost_usd for r in read_jsonl_as(RefineFolder.of(tmp_path).rounds, RefinementRound))
    folder = RefineFolder.of(tmp_path)
    assert len({r["key"] for r in read_jsonl(folder.labels)}) == len(list(read_jsonl(folder.labels)))
    assert len({r["key"] for r in read_jsonl(folder.trials)}) == len(list(read_jsonl(folder.trials)))
    assert first_requests > 0


def test_refine_through_message_batches(tmp_path):
    model, harvest = partial_harvest()
    keys = partial_keys(model)[:2]
    with LLMServer(refining_labeller_responder(rules=model.rules), batch_polls=1) as server:
        backend = AnthropicBackend(MODEL, base_url=server.url, api_key="test-key")
        results = Interpreter(backend, progress=False, refine=1, keys=keys, batch=True, poll_interval_s=0.01).run(harvest, tmp_path)
        kinds = {r.api for r in server.requests}
    assert kinds == {"batch"}  # the labeller and the judge both went through batches
    assert [r.label for r in results] == [model.labels()[k] for k in keys]


# -- a real SIGKILL mid-round --------------------------------------------------------------


def test_sigkill_mid_round_resumes_without_paying_twice(tmp_path):
    model, harvest = partial_harvest()
    paths = RunPaths.of("refine-run", tmp_path)
    harvest.save(paths.harvest)
    folder = paths.refinement
    rng = random.Random(0)
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env["ANTHROPIC_API_KEY"] = "sk-ant-test-000"

    def lines() -> int:
        return sum(len(p.read_text().splitlines()) for p in (folder.labels, folder.trials, folder.rounds) if p.exists())

    with LLMServer(refining_labeller_responder(rules=model.rules), latency_s=0.02) as server:
        args = [sys.executable, "-m", "autointerp", "interpret", "refine-run", "--out", str(tmp_path), "--base_url",
                server.url, "--refine", "2", "--max_concurrent", "2", "--no_progress", "--backoff", "0.01"]
        kills = 0
        for _ in range(2):
            p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            before = lines()
            deadline = time.monotonic() + 60
            while lines() <= before + rng.randint(2, 12) and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.communicate(timeout=60)
            for f in (folder.labels, folder.trials, folder.rounds):  # complete lines only, after every kill
                if f.exists():
                    [json.loads(l) for l in f.read_text().splitlines()[:-1]]
        p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert "refinement stages:" in p.stderr
        asked = [r for r in server.requests if r.path == "/v1/messages"]
    assert kills >= 1
    labels = list(read_jsonl(folder.labels))
    trials = list(read_jsonl(folder.trials))
    rounds = list(read_jsonl(folder.rounds))
    assert len({r["key"] for r in labels}) == len(labels)
    assert len({r["key"] for r in trials}) == len(trials)
    assert len({(r["component_key"], r["round"]) for r in rounds}) == len(rounds)
    results = [json.loads(l) for l in paths.interpretation_results.read_text().splitlines()]
    assert sorted(r["component_key"] for r in results) == sorted(model.keys())
    # what was written was never asked again: at most the requests in flight at each kill were repeated
    assert len(asked) <= len(labels) + len(trials) + 2 * kills
    final = read_interpretations(paths)
    assert sum(final[k].label == model.labels()[k] for k in partial_keys(model)) >= len(partial_keys(model)) - 1


def test_cli_refuses_to_refine_with_the_offline_labeller(tmp_path):
    _, harvest = partial_harvest()
    paths = RunPaths.of("offline-run", tmp_path)
    harvest.save(paths.harvest)
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    p = subprocess.run([sys.executable, "-m", "autointerp", "interpret", "offline-run", "--out", str(tmp_path),
                        "--backend", "offline", "--refine", "1", "--no_progress"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "offline token-lookup labeller does not refine" in p.stderr
    assert not paths.interpretation_results.exists()


def test_cli_judge_backend_validates_through_another_sdk(tmp_path, monkeypatch):
    """`--judge_backend openai --judge_model ... --judge_base_url ...`: the labeller is Claude (the Anthropic
    SDK), the validation judge an OpenAI-compatible server (the OpenAI SDK), both the local test server."""
    from autointerp.cli import main as cli_main

    model, harvest = partial_harvest()
    paths = RunPaths.of("judged", tmp_path)
    harvest.save(paths.harvest)
    keys = partial_keys(model)[:2]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with LLMServer(refining_labeller_responder(rules=model.rules), api_key="test-key") as server:
        rc = cli_main(["interpret", "judged", "--out", str(tmp_path), "--base_url", server.url, "--refine", "1",
                       "--judge_backend", "openai", "--judge_model", "local-judge", "--judge_base_url", server.openai_url,
                       "--no_progress", "--backoff", "0.01", *[a for k in keys for a in ("--component", k)]])
        asked = [r for r in server.requests if r.path.endswith(("/messages", "/chat/completions"))]
    assert rc == 0
    labels = [r for r in asked if r.api == "anthropic"]
    judged = [r for r in asked if r.api == "openai"]
    assert labels and judged
    assert {r.model for r in judged} == {"local-judge"} and {r.model for r in labels} == {MODEL}
    rounds = read_jsonl_as(paths.refinement.rounds, RefinementRound)
    assert {r.judge_model for r in rounds} == {"local-judge"} and {r.model for r in rounds} == {MODEL}
    trials = list(read_jsonl(paths.refinement.trials))
    assert len(trials) == sum(1 for r in judged)  # every judge answer is a validation trial, none was a label
    assert sorted(read_interpretations(paths)) == sorted(keys)
