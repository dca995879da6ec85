"""JobRunner: concurrency, retries, failures, resume, cost, auth, locks — with in-process backends."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from autointerp.llm.base import (
    AuthenticationFailed,
    InvalidResponse,
    LLMRequest,
    LLMResponse,
    RequestRejected,
    TransientError,
    parse_json_answer,
    redact,
    schema_errors,
)
from autointerp.llm.runner import Job, JobRunner, PriceTable, run_coroutine_sync
from autointerp.schemas import TokenUsage
from autointerp.storage import RunLock

FAST = dict(backoff_initial_s=0.001, backoff_max_s=0.01, progress=False)


class ScriptedBackend:
    """Answers after ``delay``; ``script[key]`` is a list of exceptions to raise first."""

    model = "claude-haiku-4-5"

    def __init__(self, script=None, delay=0.0, usage=None):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        usage = usage if usage is not None else TokenUsage(1000, 100)
        self.delay = delay
        self.usage = usage
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        key = request.metadata["key"]
        self.calls.append(key)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            todo = self.script.get(key)
            if todo:
                raise todo.pop(0)
            return LLMResponse({"label": f"L{key}"}, self.usage, json.dumps({"label": f"L{key}"}), self.model)
        finally:
            self.in_flight -= 1


def jobs_for(keys):
    return [
        Job(k, LLMRequest("p", {}, metadata={"key": k}), lambda resp, k=k: {"component_key": k, "label": resp.data["label"]})
        for k in keys
    ]


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_bounded_concurrency_and_all_written(tmp_path):
    b = ScriptedBackend(delay=0.01)
    r = JobRunner(b, tmp_path / "results.jsonl", max_concurrent=7, **FAST)
    s = r.run_sync(jobs_for([f"k{i}" for i in range(60)]))
    assert b.max_in_flight == 7
    assert s.completed == 60 and s.failed == 0 and s.requests == 60
    assert sorted(x["component_key"] for x in lines(tmp_path / "results.jsonl")) == sorted(f"k{i}" for i in range(60))


def test_transient_errors_are_retried_and_retry_after_honoured(tmp_path):
    b = ScriptedBackend({"a": [TransientError("429", retry_after=0.2), TransientError("529")], "b": [TransientError("500")]})
    r = JobRunner(b, tmp_path / "results.jsonl", **FAST)
    import time

    t = time.monotonic()
    s = r.run_sync(jobs_for(["a", "b", "c"]))
    assert time.monotonic() - t >= 0.2  # waited as told
    assert s.completed == 3 and s.retries == 3 and s.requests == 6
    assert b.calls.count("a") == 3


def test_backoff_is_exponential_with_jitter_and_capped():
    r = JobRunner(ScriptedBackend(), "/tmp/unused.jsonl", backoff_initial_s=1.0, backoff_max_s=8.0, rng=random.Random(0))
    for attempt, bound in [(0, 1), (1, 2), (2, 4), (5, 8)]:
        d = [r.backoff_delay(attempt) for _ in range(200)]
        assert 0.1 * bound <= min(d) and max(d) <= bound
        assert max(d) - min(d) > 0.3 * bound  # jitter
    assert 3.0 <= r.backoff_delay(0, retry_after=3.0) <= 3.3
    assert r.backoff_delay(0, retry_after=10_000) <= r.max_retry_after_s * 1.1


def test_invalid_answers_retried_then_recorded_then_retried_next_run(tmp_path):
    bad = [InvalidResponse("not JSON", "oops", TokenUsage(10, 5)) for _ in range(3)]
    b = ScriptedBackend({"x": bad + []})
    r = JobRunner(b, tmp_path / "results.jsonl", max_invalid_retries=2, **FAST)
    s = r.run_sync(jobs_for(["x", "y"]))
    assert s.completed == 1 and s.failed == 1
    fails = lines(tmp_path / "failures.jsonl")
    assert fails[0]["key"] == "x" and "not JSON" in fails[0]["reason"] and fails[0]["attempts"] == 3
    assert s.usage.input_tokens == 1000 + 3 * 10  # failed answers were billed too
    # the next run retries only the failure
    s2 = r.run_sync(jobs_for(["x", "y"]))
    assert s2.completed == 1 and s2.skipped == 1 and s2.failed == 0
    assert [x["component_key"] for x in lines(tmp_path / "results.jsonl")].count("x") == 1


def test_parse_callback_invalid_is_retried(tmp_path):
    b = ScriptedBackend()
    seen = []

    def parse(resp):
        seen.append(1)
        if len(seen) < 2:
            raise InvalidResponse("label is empty", resp.raw_text, resp.usage)
        return {"component_key": "k", "ok": True}

    r = JobRunner(b, tmp_path / "results.jsonl", **FAST)
    s = r.run_sync([Job("k", LLMRequest("p", {}, metadata={"key": "k"}), parse)])
    assert s.completed == 1 and s.requests == 2
    assert s.usage.input_tokens == 2000  # billed once per response, not twice


def test_rejected_and_unexpected_errors_fail_without_retry_and_run_goes_on(tmp_path):
    b = ScriptedBackend({"r": [RequestRejected("HTTP 400: prompt is too long")], "e": [KeyError("boom")]})
    s = JobRunner(b, tmp_path / "results.jsonl", **FAST).run_sync(jobs_for(["r", "e", "ok"]))
    assert s.completed == 1 and s.failed == 2 and s.requests == 3
    reasons = {f["key"]: f["error"] for f in lines(tmp_path / "failures.jsonl")}
    assert reasons == {"r": "rejected", "e": "error"}


def test_transient_gives_up_after_max_retries(tmp_path):
    b = ScriptedBackend({"a": [TransientError("500")] * 10})
    s = JobRunner(b, tmp_path / "results.jsonl", max_retries=3, **FAST).run_sync(jobs_for(["a"]))
    assert s.failed == 1 and b.calls.count("a") == 4


def test_request_timeout(tmp_path):
    b = ScriptedBackend(delay=1.0)
    s = JobRunner(b, tmp_path / "results.jsonl", request_timeout_s=0.05, max_retries=1, **FAST).run_sync(jobs_for(["a"]))
    assert s.failed == 1
    assert "timeout" in lines(tmp_path / "failures.jsonl")[0]["reason"]


def test_auth_error_stops_everything_at_once(tmp_path):
    b = ScriptedBackend({"k3": [AuthenticationFailed("invalid x-api-key")]}, delay=0.02)
    r = JobRunner(b, tmp_path / "results.jsonl", max_concurrent=2, **FAST)
    with pytest.raises(AuthenticationFailed):
        r.run_sync(jobs_for([f"k{i}" for i in range(50)]))
    assert len(b.calls) < 10  # nothing new started after the failure
    assert not (tmp_path / "failures.jsonl").exists() or "k3" not in (tmp_path / "failures.jsonl").read_text()


def test_preflight_auth_failure_before_any_job(tmp_path):
    class NoKey(ScriptedBackend):
        async def preflight(self):
            raise AuthenticationFailed("ANTHROPIC_API_KEY is not set")

    b = NoKey()
    with pytest.raises(AuthenticationFailed, match="not set"):
        JobRunner(b, tmp_path / "results.jsonl", **FAST).run_sync(jobs_for(["a"]))
    assert b.calls == []
    assert not (tmp_path / "results.jsonl").exists()


def test_max_cost_stops_starting_new_requests(tmp_path):
    # claude-haiku-4-5: $1/M input, $5/M output -> 1000 in + 100 out = $0.0015 a request
    b = ScriptedBackend()
    r = JobRunner(b, tmp_path / "results.jsonl", max_concurrent=1, max_cost_usd=0.006, **FAST)
    s = r.run_sync(jobs_for([f"k{i}" for i in range(10)]))
    assert s.completed == 4 and s.not_started == 6
    assert "cost limit" in s.stopped_reason
    assert s.cost_usd == pytest.approx(0.006)


def test_price_table_override_and_prefix():
    t = PriceTable({"my-model": (2.0, 4.0)})
    assert t.cost("my-model-v2", TokenUsage(1_000_000, 1_000_000)) == pytest.approx(6.0)
    hk = t.lookup("claude-haiku-4-5-20251001")
    assert hk is not None and hk.input == 1.0
    assert t.cost("unknown-model", TokenUsage(10, 10)) == 0.0
    cached = t.cost("claude-haiku-4-5", TokenUsage(0, 0, 1_000_000, 1_000_000))
    assert cached == pytest.approx(0.10 + 1.25)
    assert t.cost("claude-haiku-4-5", TokenUsage(1_000_000, 0), discount=0.5) == pytest.approx(0.5)


def test_resume_skips_done_and_tolerates_torn_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"component_key": "a", "label": "x"}) + "\n" + '{"component_key": "b", "lab')
    b = ScriptedBackend()
    s = JobRunner(b, path, **FAST).run_sync(jobs_for(["a", "b", "c"]))
    assert s.skipped == 1 and s.completed == 2 and sorted(b.calls) == ["b", "c"]
    recs = lines(path)  # every line parses: the torn tail was cut, not glued onto
    assert sorted(r["component_key"] for r in recs) == ["a", "b", "c"]


def test_lock_refuses_second_writer(tmp_path):
    with RunLock(tmp_path, "the test run"):
        with pytest.raises(RuntimeError, match="another process"):
            JobRunner(ScriptedBackend(), tmp_path / "results.jsonl", **FAST).run_sync(jobs_for(["a"]))


def test_duplicate_keys_run_once(tmp_path):
    b = ScriptedBackend()
    s = JobRunner(b, tmp_path / "results.jsonl", **FAST).run_sync(jobs_for(["a", "a", "b"]))
    assert s.completed == 2 and b.calls.count("a") == 1


def test_custom_record_key_for_scorers(tmp_path):
    """A scorer writing several records per component keys its jobs itself."""
    path = tmp_path / "detection.jsonl"
    key = lambda rec: f"{rec['component_key']}|{rec['label_source']}"  # noqa: E731
    jobs = [
        Job(f"c|{src}", LLMRequest("p", {}, metadata={"key": f"c|{src}"}),
            lambda resp, src=src: {"component_key": "c", "label_source": src})
        for src in ("label", "shuffled")
    ]
    r = JobRunner(ScriptedBackend(), path, record_key=key, failures_path=tmp_path / "detection.failures.jsonl", **FAST)
    assert r.run_sync(jobs).completed == 2
    assert r.run_sync(jobs).skipped == 2


def test_run_sync_inside_running_event_loop(tmp_path):
    """A Jupyter cell runs inside an event loop: run_sync must still work."""

    async def cell():
        return JobRunner(ScriptedBackend(), tmp_path / "results.jsonl", **FAST).run_sync(jobs_for(["a", "b"]))

    assert asyncio.run(cell()).completed == 2
    assert run_coroutine_sync(lambda: asyncio.sleep(0, result=5)) == 5


def test_async_iterable_jobs(tmp_path):
    async def gen():
        for j in jobs_for(["a", "b"]):
            yield j

    async def main():
        return await JobRunner(ScriptedBackend(), tmp_path / "results.jsonl", **FAST).run(gen())

    assert asyncio.run(main()).completed == 2


def test_schema_checks():
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "confidence": {"type": "string", "enum": ["low", "high"]},
                       "n": {"type": "integer", "minimum": 0}},
        "required": ["label", "confidence"],
        "additionalProperties": False,
    }
    assert schema_errors({"label": "a", "confidence": "low"}, schema) == []
    assert schema_errors({"label": 3, "confidence": "low"}, schema)
    assert schema_errors({"label": "a", "confidence": "meh"}, schema)
    assert schema_errors({"label": "a"}, schema)
    assert schema_errors({"label": "a", "confidence": "low", "extra": 1}, schema)
    assert schema_errors({"label": "a", "confidence": "low", "n": True}, schema)
    with pytest.raises(InvalidResponse, match="not valid JSON"):
        parse_json_answer("label: x", schema)
    with pytest.raises(InvalidResponse, match="not an object"):
        parse_json_answer("[1]", schema)


def test_redact(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-TESTSECRET-abcdef")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-123456789")
    text = "Bearer sk-ant-TESTSECRET-abcdef and tok-123456789 and sk-ant-other-key-0000"
    out = redact(text)
    assert "TESTSECRET" not in out and "tok-123456789" not in out and "other-key" not in out
