"""Interpreter: prompts (sections, held-out examples, templates), runs against the fake server, batches."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import jinja2
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from llm_fixtures import make_harvest  # noqa: E402

from autointerp.accumulators import TensorAccumulator, TopActivationAcc
from autointerp.batch import HarvestBatch
from autointerp.harvest import HarvestLoop
from autointerp.heldout import split_examples
from autointerp.interpret import (
    INTERPRETATION_SCHEMA,
    InterpretOptions,
    Interpreter,
    describe_layer,
    interpret_run,
    load_interpretations,
)
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.llm.batches import BatchRunner
from autointerp.llm.offline import OfflineBackend
from autointerp.paths import RESULTS_FILE, RunPaths
from autointerp.prompts import inline_token, one_in, show_token
from autointerp.testing.llm_server import LLMServer

KEY = "sk-ant-TESTSECRET-interp"
FAST = dict(backoff_initial_s=0.001, backoff_max_s=0.01, progress=False)


@pytest.fixture(scope="module")
def harvest():
    return make_harvest()


def claude(server):
    return AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key=KEY, timeout_s=2)


# -- prompts ---------------------------------------------------------------------------


def test_default_prompt_has_the_evidence(harvest):
    it = Interpreter(OfflineBackend(), **FAST)
    parts = it.render(harvest["h.0.mlp:1"], harvest)
    system, prompt = parts["system"], parts["prompt"]
    assert "TinyTestModel, 2 layers" in system and "unit-test text: random tokens" in system
    assert "h.0.mlp:1" not in system  # the system part is the same for every component (cacheable)
    assert it.render(harvest["h.1.mlp:2"], harvest)["system"] == system
    assert "MLP output of layer 0 of 2; 6 components in this layer" in prompt
    assert "Fires about 1 in " in prompt
    assert "<< cat>>" in prompt and "activations: ' cat'" in prompt
    assert "## Input tokens" in prompt and "## Output tokens" in prompt and "## Components that fire together" in prompt
    assert "‹‹x››" in prompt or "<<x>>" not in prompt  # the dataset token " <<x>>" cannot fake a marker


def test_explainer_sees_only_explain_examples(harvest, tmp_path):
    """Override the example sections to print where each shown example came from."""
    (tmp_path / "sections").mkdir()
    for name in ("examples", "top_examples"):
        (tmp_path / "sections" / f"{name}.j2").write_text(
            "{% for ex in value %}SHOWN " + name + " {{ ex.sequence_index }}:{{ ex.position }}\n{% endfor %}"
        )
    it = Interpreter(OfflineBackend(), templates_dir=tmp_path, n_explain=4, n_top=2, **FAST)
    for comp in harvest:
        if comp.firing_count == 0:
            continue
        prompt = it.render(comp, harvest)["prompt"]
        shown = {tuple(map(int, l.split()[-1].split(":"))) for l in prompt.splitlines() if l.startswith("SHOWN")}
        split = split_examples(comp, 4, 2)
        assert shown == split.shown_ids()
        assert not shown & {(e.sequence_index, e.position) for e in split.holdout + split.holdout_top}


def test_custom_accumulator_section_generic_and_registered(harvest, tmp_path):
    comp = harvest["h.0.mlp:2"]
    comp.extras["activation_histogram"] = [3, 1, 0, 2]
    comp.extras["window_pool"] = {"secret": "scoring only"}
    try:
        it = Interpreter(OfflineBackend(), **FAST)
        prompt = it.render(comp, harvest)["prompt"]
        assert "## activation histogram\n[3, 1, 0, 2]" in prompt  # generic fallback
        assert "scoring only" not in prompt  # excluded by default
        tmpl = tmp_path / "hist.j2"
        tmpl.write_text("## Histogram of {{ name }}\n{% for c in value %}bin {{ loop.index0 }}: {{ c }}\n{% endfor %}")
        it2 = Interpreter(OfflineBackend(), section_templates={"activation_histogram": str(tmpl)}, **FAST)
        prompt2 = it2.render(comp, harvest)["prompt"]
        assert "## Histogram of activation_histogram\nbin 0: 3" in prompt2
        assert it2.template_hash(harvest) != it.template_hash(harvest)
    finally:
        comp.extras.clear()


class HistogramAcc(TensorAccumulator):
    """A custom accumulator whose section template is named by prompt_section, not by its name."""

    name = "activation_histogram"
    prompt_section = "my_histogram.j2"

    def state_bytes(self, ctx):
        return 8 * ctx.n_components * 2

    def setup(self, ctx):
        self.add_state("hist", torch.zeros(ctx.n_components, 2, dtype=torch.int64))

    def update(self, batch):
        b = (batch.firing_act > 1.0).long()
        self.hist.view(-1).index_add_(0, batch.firing_comp * 2 + b, torch.ones_like(b))

    def finalize(self):
        return dict(enumerate(self.hist.cpu().tolist()))


def histogram_harvest():
    g = torch.Generator().manual_seed(0)
    batches = [HarvestBatch(torch.randint(0, 16, (2, 8), generator=g), {"h.0.mlp": torch.rand(2, 8, 3, generator=g) * 2})
               for _ in range(2)]
    return HarvestLoop([TopActivationAcc(k=2, context_tokens=2), HistogramAcc()], progress=False).run(batches)


def test_section_template_is_found_through_the_recorded_prompt_section(tmp_path, caplog):
    h = histogram_harvest()
    spec = next(a for a in h.config.accumulators if a["name"] == "activation_histogram")
    assert spec["prompt_section"] == "my_histogram.j2"  # what the harvest recorded
    (tmp_path / "sections").mkdir()
    (tmp_path / "sections" / "my_histogram.j2").write_text("## Histogram via prompt_section: {{ value }}")
    prompt = Interpreter(OfflineBackend(), templates_dir=tmp_path, **FAST).render(h[0], h)["prompt"]
    assert f"## Histogram via prompt_section: {h[0].extras['activation_histogram']}" in prompt
    # not on the search path: the generic section, and a warning naming the recorded template
    with caplog.at_level("WARNING", logger="autointerp.interpret"):
        prompt = Interpreter(OfflineBackend(), **FAST).render(h[0], h)["prompt"]
    assert "## activation histogram\n" in prompt and "via prompt_section" not in prompt
    assert "sections/my_histogram.j2" in caplog.text
    # a harvest saved before the key existed: sections/<name>.j2, then the generic one
    del spec["prompt_section"]
    (tmp_path / "sections" / "activation_histogram.j2").write_text("## Histogram by name: {{ value }}")
    assert "## Histogram by name" in Interpreter(OfflineBackend(), templates_dir=tmp_path, **FAST).render(h[0], h)["prompt"]


def test_built_in_sections_come_through_their_recorded_templates(harvest):
    recorded = {a["name"]: a.get("prompt_section") for a in harvest.config.accumulators}
    assert recorded["top_examples"] == "top_examples.j2" and recorded["correlations"] == "correlations.j2"
    it = Interpreter(OfflineBackend(), **FAST)
    for name in ("top_examples", "examples", "input_tokens", "output_tokens", "correlations"):
        _, source = it._section(name, harvest)
        assert source == it.env.loader.get_source(it.env, f"sections/{recorded[name]}")[0]


def test_strict_undefined_and_user_template(harvest, tmp_path):
    bad = tmp_path / "bad.j2"
    bad.write_text("{% block system %}x{% endblock %}{% block prompt %}{{ no_such_variable }}{% endblock %}")
    with pytest.raises(jinja2.UndefinedError):
        Interpreter(OfflineBackend(), prompt_template=bad, **FAST).render(harvest[0], harvest)
    good = tmp_path / "mine.j2"
    good.write_text("{% block system %}Be brief.{% endblock %}{% block prompt %}Label {{ component_key }}.\n"
                    "{% for s in sections %}{{ s.text }}\n{% endfor %}{% endblock %}")
    it = Interpreter(OfflineBackend(), prompt_template=good, **FAST)
    parts = it.render(harvest[1], harvest)
    assert parts["system"] == "Be brief.\n" and parts["prompt"].startswith("Label h.0.mlp:1.")
    assert it.template_name == "mine.j2"
    with pytest.raises(FileNotFoundError, match="no prompt template"):
        Interpreter(OfflineBackend(), prompt_template="nope.j2")


def test_empty_model_and_dataset_descriptions(harvest):
    import copy

    h = copy.copy(harvest)
    h.config = copy.deepcopy(harvest.config)
    h.config.model, h.config.dataset = {}, {}
    parts = Interpreter(OfflineBackend(), **FAST).render(h[1], h)
    assert "Dataset" not in parts["system"] and "Model:" not in parts["system"]
    assert "layer 0 (h.0.mlp)" in parts["prompt"]


def test_co_firing_labels_appear_when_known(harvest):
    comp = harvest["h.0.mlp:1"]
    partner = comp.correlations.top_recall[0].key
    prompt = Interpreter(OfflineBackend(), **FAST).render(comp, harvest, labels={partner: "the word cat"})["prompt"]
    assert f'{partner}: ' in prompt and 'labeled "the word cat"' in prompt


def test_helpers():
    assert one_in(0.0123) == "about 1 in 81 tokens"
    assert one_in(1 / 2317) == "about 1 in 2,300 tokens"
    assert one_in(0) == "never"
    assert show_token(" cat") == "' cat'" and show_token("\n") == "'\\n'"
    assert inline_token("a<<b>>\\\n", 0) == "a\\<\\<b\\>\\>\\\\\\n"  # marker characters escaped (issue 10 item 12)
    assert describe_layer("h.3.mlp.c_fc", {"n_layers": 4}) == "MLP up-projection in layer 3 of 4 (h.3.mlp.c_fc)"
    assert describe_layer("blocks.1.attn.q_proj", {}) == "attention query projection in layer 1 (blocks.1.attn.q_proj)"
    assert describe_layer("x", {"layer_descriptions": {"x": "the embedding"}}) == "the embedding"


# -- running ---------------------------------------------------------------------------


def test_offline_run_and_resume(harvest, tmp_path):
    it = Interpreter(OfflineBackend(), **FAST)
    results = it.run(harvest, tmp_path)
    live = [c.key for c in harvest if c.firing_count > 0]
    assert [r.component_key for r in results] == live
    assert it.summary.completed == len(live) and it.n_dead == 2
    assert all(r.template_hash and r.template_name == "interpret.j2" for r in results)
    again = Interpreter(OfflineBackend(), **FAST)
    assert len(again.run(harvest, tmp_path)) == len(live)
    assert again.summary.completed == 0 and again.summary.skipped == len(live)



def test_resume_and_reads_follow_the_records_rule(harvest, tmp_path):
    """The last record with a non-empty label wins; a component whose only record has an
    empty label is not done, so the next run labels it."""
    results = tmp_path / RESULTS_FILE
    base = {"confidence": "low", "reasoning": "", "raw_response": "", "model": "hand", "template_name": "",
            "template_hash": ""}
    lines = [{**base, "component_key": "h.0.mlp:0", "label": "first"},
             {**base, "component_key": "h.0.mlp:0", "label": "second"},
             {**base, "component_key": "h.0.mlp:0", "label": ""},
             {**base, "component_key": "h.0.mlp:1", "label": "  "}]
    results.write_text("".join(json.dumps(l) + "\n" for l in lines))
    it = Interpreter(OfflineBackend(), **FAST)
    out = {r.component_key: r for r in it.run(harvest, tmp_path, keys=["h.0.mlp:0", "h.0.mlp:1"])}
    assert out["h.0.mlp:0"].label == "second" and out["h.0.mlp:0"].model == "hand"  # done: not sent again
    assert out["h.0.mlp:1"].label.strip() and out["h.0.mlp:1"].model == "offline-token-lookup"
    assert it.summary.completed == 1 and it.summary.skipped == 1
    assert [r.label for r in load_interpretations(results, keys=["h.0.mlp:0"])] == ["second"]


# -- options -----------------------------------------------------------------------------


def test_options_are_one_object_for_the_interpreter_and_its_runs(harvest, tmp_path):
    assert len(Interpreter(OfflineBackend(), InterpretOptions(limit=2), **FAST).run(harvest, tmp_path / "a")) == 2
    assert len(Interpreter(OfflineBackend(), limit=2, **FAST).run(harvest, tmp_path / "b")) == 2
    it = Interpreter(OfflineBackend(), **FAST)
    assert len(it.run(harvest, tmp_path / "c", options=InterpretOptions(limit=3, **FAST))) == 3
    assert len(it.dry_run(harvest, tmp_path / "p", keys=["h.1.mlp:0", "h.1.mlp:1"])) == 2
    pending, _ = it.jobs(harvest, limit=4)
    assert len(pending) == 4
    assert it.options.limit is None  # a run's options do not stick


def test_options_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"interpret option limit must be a whole number >= 0 or None, got -1"):
        Interpreter(OfflineBackend(), limit=-1)
    with pytest.raises(ValueError, match=r"interpret option max_concurrent must be a whole number >= 1, got 0"):
        InterpretOptions(max_concurrent=0)
    with pytest.raises(ValueError, match=r"interpret option keys must be a list of component keys.*got 'h.0.mlp:1'"):
        InterpretOptions(keys="h.0.mlp:1")
    with pytest.raises(ValueError, match=r"poll_interval_s must be a number of seconds > 0"):
        InterpretOptions(poll_interval_s=0)
    with pytest.raises(TypeError, match=r"unknown interpret option 'max_concurent' \(did you mean 'max_concurrent'\?\)"):
        Interpreter(OfflineBackend(), max_concurent=4)
    with pytest.raises(TypeError, match=r"options must be an InterpretOptions or None, got \{'limit': 3\}"):
        Interpreter(OfflineBackend(), {"limit": 3})


def test_prompt_options_are_fixed_per_interpreter(harvest, tmp_path):
    it = Interpreter(OfflineBackend(), n_explain=4, **FAST)
    with pytest.raises(ValueError, match=r"n_explain is fixed when the Interpreter is made.*got 10 for this run"):
        it.run(harvest, tmp_path, options=InterpretOptions())
    with pytest.raises(ValueError, match=r"prompt_template is fixed"):
        it.dry_run(harvest, tmp_path, prompt_template="other.j2")


def test_claude_run_against_server_with_faults(harvest, tmp_path):
    with LLMServer(api_key=KEY, retry_after_s=0.01, slow_s=1.0) as server:
        server.push_faults("429", "malformed_json", "drop", "max_tokens")
        it = Interpreter(claude(server), max_concurrent=4, request_timeout_s=0.5, **FAST)
        results = it.run(harvest, RunPaths(tmp_path))
        assert len(results) == 10 and it.summary.failed == 0 and it.summary.retries == 4
        r = results[0]
        assert r.model and r.raw_response and r.usage.output_tokens > 0 and r.confidence in ("low", "medium", "high")
        body = server.requests[-1].body
        assert body["output_config"]["format"]["schema"] == INTERPRETATION_SCHEMA
        assert it.summary.cost_usd > 0 and it.summary.usage.cache_read_input_tokens > 0
    assert RunPaths(tmp_path).interpretation_results.exists()


def test_limit_and_keys(harvest, tmp_path):
    it = Interpreter(OfflineBackend(), **FAST)
    assert len(it.run(harvest, tmp_path, limit=3)) == 3
    assert len(it.run(harvest, tmp_path, keys=["h.1.mlp:0"])) == 1


def test_run_inside_running_loop(harvest, tmp_path):
    async def cell():
        return Interpreter(OfflineBackend(), **FAST).run(harvest, tmp_path)

    assert len(asyncio.run(cell())) == 10


def test_dry_run_calls_nothing(harvest, tmp_path):
    with LLMServer(api_key=KEY) as server:
        paths = Interpreter(claude(server), **FAST).dry_run(harvest, tmp_path / "prompts", limit=4)
        assert server.requests == []
    assert len(paths) == 4
    text = paths[0].read_text()
    assert "### system" in text and "### prompt" in text and "h.0.mlp:0" in text


def test_interpret_run_falls_back_to_offline_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    paths = RunPaths.of("r", tmp_path)
    make_harvest().save(paths.harvest)
    said = []
    results = interpret_run(paths, announce=said.append, progress=False)
    assert len(results) == 10 and results[0].model == "offline-token-lookup"
    assert any("offline token-lookup baseline" in s for s in said)
    assert load_interpretations(paths)[0].component_key == results[0].component_key


# -- batches ---------------------------------------------------------------------------


def test_batch_run_and_resume(harvest, tmp_path):
    with LLMServer(api_key=KEY, batch_polls=2) as server:
        server.push_faults(None, "schema_violation", "529")  # two items fail inside the batch
        it = Interpreter(claude(server), **FAST)
        results = it.run(harvest, tmp_path, batch=True, poll_interval_s=0.01)
        assert len(results) == 8 and it.summary.failed == 2
        assert len(server.batches) == 1
        assert not (tmp_path / "batch.json").exists() and list(tmp_path.glob("batch.*.done.json"))
        # the next run sends only the two failures, in a new batch
        results = it.run(harvest, tmp_path, batch=True, poll_interval_s=0.01)
        assert len(results) == 10 and len(server.batches) == 2
        assert it.summary.cost_usd > 0


def test_batch_killed_after_submit_resumes_same_batch(harvest, tmp_path):
    class Interrupted(Exception):
        pass

    class DiesWhilePolling(BatchRunner):
        async def _poll(self, client, state):
            raise Interrupted()

    with LLMServer(api_key=KEY, batch_polls=1) as server:
        it = Interpreter(claude(server), **FAST)
        pending, jobs = it.jobs(harvest)
        runner = DiesWhilePolling(claude(server), tmp_path / RESULTS_FILE, poll_interval_s=0.01, progress=False)
        with pytest.raises(Interrupted):
            asyncio.run(runner.run(jobs))
        state = json.loads((tmp_path / "batch.json").read_text())
        assert state["batch_id"] in server.batches and len(state["custom_ids"]) == 10
        results = it.run(harvest, tmp_path, batch=True, poll_interval_s=0.01)
        assert len(results) == 10
        assert len(server.batches) == 1  # resumed, not resubmitted


def test_batch_needs_anthropic(harvest, tmp_path):
    with pytest.raises(ValueError, match="needs the Anthropic backend"):
        Interpreter(OfflineBackend(), **FAST).run(harvest, tmp_path, batch=True)
