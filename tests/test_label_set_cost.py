"""A label set's cost is kept across resumes: ``summary.json`` is made from the append-only cost log.

Through the real Anthropic SDK against the local fault server (malformed answers injected, so
answers that are billed and asked again are part of it). ``summary.json`` used to be one run's
`RunSummary`, overwritten by each run: a resumed run that labelled nothing wrote a cost of zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_fixtures import make_run  # noqa: E402

from autointerp.cli import main as cli_main
from autointerp.harvest import load_harvest
from autointerp.interpret import BEFORE_COST_LOG, Interpreter
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.llm.runner import DEFAULT_PRICES, PriceTable
from autointerp.records import read_costs, read_interpretations
from autointerp.schemas import CostEntry, TokenUsage
from autointerp.storage import read_jsonl, read_jsonl_as
from autointerp.testing.llm_server import LLMServer

KEY = "test-key"
MODEL = "claude-haiku-4-5-20251001"
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_invalid_retries": 4}


def summary_of(paths) -> dict:
    return json.loads(paths.interpretation_summary.read_text())


def test_a_resumed_run_keeps_the_cost_of_the_earlier_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    paths = make_run(tmp_path)
    runs = []
    with LLMServer(api_key=KEY, fault_rates={"malformed_json": 0.2, "429": 0.1}, retry_after_s=0.01, seed=5) as server:
        for extra in (["--limit", "4"], [], []):  # part, the rest, nothing left
            assert cli_main(["interpret", "test-run", "--out", str(tmp_path), "--base_url", server.url,
                             "--no_progress", "--backoff", "0.01", "--max_retries", "20", *extra]) == 0
            runs.append(summary_of(paths))
    first, second, third = (r["last_run"] for r in runs)
    assert first["completed"] == 4 and second["completed"] > 0 and third["completed"] == 0 and third["cost_usd"] == 0
    assert first["cost_usd"] > 0 and second["cost_usd"] > 0
    total = runs[-1]
    assert total["cost_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"], rel=1e-9)
    assert runs[1]["cost_usd"] == pytest.approx(total["cost_usd"], rel=1e-9)  # the empty run changed nothing
    assert total["cost_known"] and set(total["by_stage"]) == {"interpret"}
    # independently: the labels' own billed usage, priced, is in the total (which also holds invalid answers)
    prices = PriceTable(DEFAULT_PRICES)
    labelled = read_interpretations(paths)
    labels_cost = sum(prices.cost(r.model, r.usage) for r in labelled.values())
    assert labels_cost > 0 and total["cost_usd"] >= labels_cost - 1e-12
    entries = list(read_jsonl_as(paths.interpretation_costs, CostEntry))
    assert {e.key for e in entries} >= set(labelled)  # every label on disk has its cost on disk
    assert total["billed_answers"] == len(entries) >= len(labelled)
    assert any("invalid" in f.get("reason", "") for f in read_jsonl(paths.interpretation_failures)) or \
        total["billed_answers"] > len(labelled)  # the injected malformed answers were billed too


def test_neighbour_and_refinement_passes_add_to_the_label_sets_cost(tmp_path):
    paths = make_run(tmp_path)
    harvest = load_harvest(paths.harvest)
    with LLMServer(api_key=KEY) as server:
        backend = AnthropicBackend(MODEL, base_url=server.url, api_key=KEY)
        spent = []
        for opts in ({}, {"neighbours": True}):
            interp = Interpreter(backend, progress=False, **opts, **FAST)
            interp.run(harvest, paths)
            spent.append(interp.summary.cost_usd)
        default = read_costs(paths)
        refined = paths.with_label_set("refined")
        keys = harvest.keys()[:3]
        interp = Interpreter(backend, progress=False, refine=1, keys=keys, **FAST)
        interp.run(harvest, refined)
        refine_cost = interp.summary.cost_usd
        again = Interpreter(backend, progress=False, refine=1, keys=keys, **FAST)
        again.run(harvest, refined)  # resumed: only what failed is asked again
    s = summary_of(paths)
    assert set(s["by_stage"]) == {"interpret", "interpret --neighbours"}
    assert s["by_stage"]["interpret"]["cost_usd"] == pytest.approx(spent[0], rel=1e-9)
    assert s["by_stage"]["interpret --neighbours"]["cost_usd"] == pytest.approx(spent[1], rel=1e-9)
    assert s["cost_usd"] == pytest.approx(default.cost_usd, rel=1e-9) and spent[1] > 0
    r = summary_of(refined)
    assert refine_cost > 0 and r["cost_usd"] == pytest.approx(refine_cost + again.summary.cost_usd, rel=1e-9)
    assert r["last_run"]["cost_usd"] == pytest.approx(again.summary.cost_usd)
    assert {st.split(" ")[0] for st in r["by_stage"]} == {"label", "validate"}


def test_a_summary_from_before_the_cost_log_is_carried_into_it(tmp_path):
    """A label set labelled by an older autointerp: its summary.json (one run's RunSummary) is the log's first line."""
    paths = make_run(tmp_path)
    paths.interpretations.mkdir(parents=True)
    old = {"total": 4, "completed": 4, "usage": {"input_tokens": 900, "output_tokens": 50, "cache_read_input_tokens": 0,
                                                 "cache_creation_input_tokens": 0},
           "cost_usd": 0.125, "cost_known": True, "model": MODEL}
    paths.interpretation_summary.write_text(json.dumps(old))
    assert cli_main(["interpret", "test-run", "--out", str(tmp_path), "--backend", "offline", "--no_progress"]) == 0
    s = summary_of(paths)
    assert s["cost_usd"] == pytest.approx(0.125) and s["by_stage"][BEFORE_COST_LOG]["billed_answers"] == 1
    assert s["usage"] == {**old["usage"]} and s["last_run"]["completed"] > 0
    assert read_costs(paths).usage == TokenUsage(900, 50)
    # the offline labeller bills nothing, and a second run carries nothing twice
    assert cli_main(["interpret", "test-run", "--out", str(tmp_path), "--backend", "offline", "--no_progress"]) == 0
    assert summary_of(paths)["cost_usd"] == pytest.approx(0.125)
