"""The real anthropic and openai SDKs against the fake server on 127.0.0.1: wire format and every fault."""

from __future__ import annotations

import asyncio
import json

import pytest

from llm_fixtures import make_harvest

from autointerp.interpret import Interpreter
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.llm.base import AuthenticationFailed, InvalidResponse, LLMRequest, RequestRejected, TransientError
from autointerp.llm.offline import OfflineBackend, token_lookup_label
from autointerp.llm.openai_compat import OpenAICompatBackend
from autointerp.llm.runner import Job, JobRunner
from autointerp.paths import RunPaths
from autointerp.testing.llm_server import LLMServer

SCHEMA = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "label": {"type": "string"},
                   "confidence": {"type": "string", "enum": ["low", "medium", "high"]}},
    "required": ["reasoning", "label", "confidence"],
    "additionalProperties": False,
}
KEY = "sk-ant-TESTSECRET-0123456789"
FAST = dict(backoff_initial_s=0.001, backoff_max_s=0.01, progress=False)


@pytest.fixture
def server():
    with LLMServer(api_key=KEY, retry_after_s=0.05, slow_s=1.0) as s:
        yield s


def req(key="c1", system="STATIC INSTRUCTIONS " * 20):
    return LLMRequest(prompt=f"component: {key}", system=system, schema=SCHEMA, max_tokens=300, metadata={"key": key})


def anthropic_backend(server, **kw):
    return AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key=KEY, timeout_s=0.5, **kw)


def openai_backend(server, **kw):
    return OpenAICompatBackend("gpt-4o-mini", base_url=server.openai_url, api_key=KEY, timeout_s=0.5, **kw)


def run(coro):
    return asyncio.run(coro)


def test_anthropic_wire_format(server):
    b = anthropic_backend(server)
    resp = run(b.complete(req()))
    assert set(resp.data) == {"reasoning", "label", "confidence"}
    body = server.requests[-1].body
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "temperature" not in body
    assert body["messages"] == [{"role": "user", "content": "component: c1"}]
    assert body["max_tokens"] == 300
    # the system prompt is written to the cache once, then read from it
    assert resp.usage.cache_creation_input_tokens > 0
    resp2 = run(b.complete(req("c2")))
    assert resp2.usage.cache_read_input_tokens > 0 and resp2.usage.cache_creation_input_tokens == 0


def test_openai_wire_format(server):
    resp = run(openai_backend(server).complete(req()))
    assert resp.data["confidence"] in ("low", "medium", "high")
    body = server.requests[-1].body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["messages"][0]["role"] == "system"
    assert body["max_tokens"] == 300


@pytest.mark.parametrize("make", [anthropic_backend, openai_backend], ids=["anthropic", "openai"])
@pytest.mark.parametrize(
    "fault,error",
    [
        ("429", TransientError), ("529", TransientError), ("500", TransientError), ("drop", TransientError),
        ("slow", TransientError), ("malformed_json", InvalidResponse), ("schema_violation", InvalidResponse),
        ("max_tokens", InvalidResponse), ("400", RequestRejected), ("401", AuthenticationFailed),
        ("bad_body", TransientError),
    ],
)
def test_each_fault_maps_to_the_seam(server, make, fault, error):
    server.push_faults(fault)
    with pytest.raises(error) as info:
        run(make(server).complete(req()))
    if fault == "429":
        assert info.value.retry_after == pytest.approx(0.05)
    assert "TESTSECRET" not in str(info.value)


@pytest.mark.parametrize("make", [anthropic_backend, openai_backend], ids=["anthropic", "openai"])
def test_runner_survives_every_fault(server, make, tmp_path):
    faults = ["429", "529", "500", "drop", "slow", "malformed_json", "schema_violation", "max_tokens"]
    server.push_faults(*faults)
    jobs = [Job(f"k{i}", req(f"k{i}"), lambda r, i=i: {"component_key": f"k{i}", **r.data}) for i in range(12)]
    runner = JobRunner(make(server), tmp_path / "results.jsonl", max_concurrent=4, request_timeout_s=0.5, **FAST)
    s = runner.run_sync(jobs)
    assert s.completed == 12 and s.failed == 0
    assert s.retries == len(faults)
    assert sum(server.faults_served.values()) == len(faults)
    keys = [json.loads(l)["component_key"] for l in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(f"k{i}" for i in range(12))


def test_wrong_key_stops_before_any_message(tmp_path):
    with LLMServer(api_key="the-right-key") as server:
        b = AnthropicBackend("claude-haiku-4-5", base_url=server.url, api_key="sk-ant-TESTSECRET-wrong")
        jobs = [Job("a", req("a"), lambda r: {"component_key": "a"})]
        with pytest.raises(AuthenticationFailed) as info:
            JobRunner(b, tmp_path / "results.jsonl", **FAST).run_sync(jobs)
        assert "TESTSECRET" not in str(info.value)
        assert [r.path for r in server.requests if r.path == "/v1/messages"] == []


def test_missing_key_fails_at_construction(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(AuthenticationFailed, match="ANTHROPIC_API_KEY is not set"):
        AnthropicBackend()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AuthenticationFailed, match="OPENAI_API_KEY"):
        OpenAICompatBackend("gpt-4o-mini")
    OpenAICompatBackend("llama3.1", base_url="http://127.0.0.1:9/v1")  # a local server needs no key


def test_user_client_is_used(server):
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=server.url, api_key=KEY, max_retries=0)

    async def main():
        return await AnthropicBackend(client=client).complete(req())

    assert run(main()).data["label"]


def test_backend_usable_across_event_loops(server):
    """A notebook calls run twice: two loops; the backend must not reuse a dead loop's client."""
    b = anthropic_backend(server)
    run(b.complete(req("a")))
    run(b.complete(req("b")))


def test_custom_responder_sees_request():
    seen = []

    def judge(r):
        seen.append((r.api, r.system, r.prompt, r.schema))
        return {"reasoning": "rule", "label": r.prompt.upper(), "confidence": "high"}

    with LLMServer(judge) as server:
        resp = run(AnthropicBackend(base_url=server.url, api_key="k-123456").complete(req("zz")))
    assert resp.data["label"] == "COMPONENT: ZZ"
    assert seen[0][0] == "anthropic" and seen[0][3] == SCHEMA


def test_offline_backend_needs_component():
    with pytest.raises(InvalidResponse):
        run(OfflineBackend().complete(req()))


def test_token_lookup_label():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from llm_fixtures import make_harvest

    h = make_harvest()
    assert token_lookup_label(h["h.0.mlp:1"]).startswith("fires on ' cat'")
    assert token_lookup_label(h["h.0.mlp:5"]) == "never fires"


# -- the one picker: llm/factory.make_backend ------------------------------------------


@pytest.mark.parametrize("role", ["label", "judge"])
def test_auto_without_a_key_is_the_roles_stand_in_and_says_so(monkeypatch, role):
    from autointerp.llm.factory import make_backend
    from autointerp.scoring.token_match import TokenMatchBackend

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    said: list[str] = []
    b = make_backend("auto", role=role, announce=said.append)
    assert isinstance(b, OfflineBackend if role == "label" else TokenMatchBackend)
    assert len(said) == 1 and "ANTHROPIC_API_KEY is not set" in said[0]
    assert ("BASELINE" in said[0]) == (role == "judge")


def test_auto_with_a_key_is_claude_for_either_role(monkeypatch):
    from autointerp.llm.factory import make_backend

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for role in ("label", "judge"):
        b = make_backend("auto", role=role, announce=lambda msg: pytest.fail(f"announced {msg!r}"))
        assert isinstance(b, AnthropicBackend) and b.model.startswith("claude")


def test_label_stand_in_is_announced_on_stderr_by_default(monkeypatch, capsys):
    from autointerp.llm.factory import make_backend

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    make_backend("auto")
    assert "offline token-lookup baseline" in capsys.readouterr().err


def test_picker_refuses_unknown_words():
    from autointerp.llm.factory import make_backend

    with pytest.raises(ValueError, match="role must be one of"):
        make_backend("offline", role="grader")
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        make_backend("gpt")


# -- an answer that cannot be stored (issue 10 item 7) ----------------------------------


@pytest.mark.parametrize("make", [anthropic_backend, openai_backend], ids=["anthropic", "openai"])
def test_an_answer_with_a_lone_surrogate_is_a_recorded_failure_and_a_rerun_retries_it(server, make, tmp_path):
    results, failures = tmp_path / "results.jsonl", tmp_path / "failures.jsonl"
    jobs = [Job(f"k{i}", req(f"k{i}"), lambda r, i=i: {"component_key": f"k{i}", **r.data}) for i in range(5)]
    server.fault_for = lambda r: "lone_surrogate" if "k2" in r.prompt else None
    s = JobRunner(make(server), results, max_concurrent=2, **FAST).run_sync(jobs)
    assert s.completed == 4 and s.failed == 1
    assert sorted(r["component_key"] for r in map(json.loads, results.read_text().splitlines())) == ["k0", "k1", "k3", "k4"]
    (failure,) = map(json.loads, failures.read_text().splitlines())
    assert failure["key"] == "k2" and failure["error"] == "unstorable"
    assert "cannot store the record of 'k2'" in failure["reason"] and "surrogates not allowed" in failure["reason"]

    server.fault_for = None
    again = JobRunner(make(server), results, **FAST).run_sync(jobs)
    assert again.completed == 1 and again.skipped == 4 and again.failed == 0
    assert len(results.read_text().splitlines()) == 5


def test_interpret_goes_on_past_a_label_it_cannot_store(server, tmp_path):
    harvest = make_harvest()
    server.push_faults("lone_surrogate")
    it = Interpreter(anthropic_backend(server), max_concurrent=1, **FAST)
    first = it.run(harvest, RunPaths(tmp_path))
    assert it.summary.failed == 1 and len(first) == it.summary.completed == 9
    (failure,) = map(json.loads, (tmp_path / "interpretations" / "failures.jsonl").read_text().splitlines())
    assert failure["error"] == "unstorable" and failure["key"] not in {r.component_key for r in first}

    again = Interpreter(anthropic_backend(server), **FAST)
    assert len(again.run(harvest, RunPaths(tmp_path))) == 10 and again.summary.completed == 1


def test_a_batch_goes_on_past_a_label_it_cannot_store(tmp_path):
    harvest = make_harvest()
    with LLMServer(api_key=KEY, batch_polls=1) as server:
        server.push_faults("lone_surrogate")
        it = Interpreter(anthropic_backend(server), **FAST)
        first = it.run(harvest, RunPaths(tmp_path), batch=True, poll_interval_s=0.01)
        assert it.summary.failed == 1 and len(first) == 9
        (failure,) = map(json.loads, (tmp_path / "interpretations" / "failures.jsonl").read_text().splitlines())
        assert failure["error"] == "unstorable" and "surrogates not allowed" in failure["reason"]
        again = Interpreter(anthropic_backend(server), **FAST)
        assert len(again.run(harvest, RunPaths(tmp_path), batch=True, poll_interval_s=0.01)) == 10
