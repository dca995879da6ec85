"""The Message Batches API: every prompt in one batch, at half the price of live calls.

`BatchRunner` takes the same `Job`s as `JobRunner` and writes the same records
to the same results file, so resume, failures and the report do not care which
one ran:

1. keys already in the results file are skipped;
2. the remaining requests are submitted as one batch
   (``client.messages.batches.create``) and the batch id, with the map from
   each ``custom_id`` to its job key, is saved at once, atomically, to
   ``batch.json`` beside the results;
3. the batch is polled (``retrieve``) with a progress bar until it has ended;
4. results are streamed (``results``) and each one is written as it is read:
   a good answer through the job's ``parse`` into the results file, an errored,
   expired, cancelled or invalid one into the failures file;
5. ``batch.json`` is renamed to ``batch.<id>.done.json``.

Killed at any point after step 2, a rerun finds ``batch.json`` and resumes the
same batch (polling or reading its results again, skipping what was written)
instead of paying for a new one. Failed items are retried by the next run, in a
new batch. The one unprotected moment is between the server accepting the batch
and ``batch.json`` reaching the disk (milliseconds).

Batches take minutes to hours; ``max_cost_usd`` here limits how many requests
are submitted, by an estimate of their cost (prompt characters / 4 input tokens,
plus ``max_tokens / 4`` output tokens each, at the batch discount).

The SDK client used for the batch calls keeps the SDK's own retries (a poll that
meets a 529 should simply be repeated), unlike live calls, where the runner
retries.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import os
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from autointerp.llm.base import AuthenticationFailed, InvalidResponse, LLMResponse, redact
from autointerp.llm.runner import CostLog, Job, PriceTable, RunSummary, default_record_key
from autointerp.schemas import TokenUsage
from autointerp.storage import JsonlAppender, RunLock, atomic_write_text, completed_keys

log = logging.getLogger("autointerp.llm")

BATCH_DISCOUNT = 0.5
MAX_BATCH_REQUESTS = 100_000


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class BatchRunner:
    """Runs `Job`s through the Message Batches API of an `AnthropicBackend`.

    >>> summary = await BatchRunner(AnthropicBackend(), paths.interpretations / "results.jsonl").run(jobs)
    """

    def __init__(
        self,
        backend: Any,
        results_path: str | os.PathLike,
        *,
        failures_path: str | os.PathLike | None = None,
        state_path: str | os.PathLike | None = None,
        poll_interval_s: float = 30.0,
        max_cost_usd: float | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        record_key: Callable[[Mapping[str, Any]], str] = default_record_key,
        lock: bool = True,
        progress: bool = True,
        sdk_max_retries: int = 5,
        desc: str = "batch",
        cost_log: str | os.PathLike | None = None,
    ):
        if not hasattr(backend, "build_params") or not hasattr(backend, "parse_message"):
            raise ValueError(
                f"--batch needs the Anthropic backend (Message Batches API); {backend!r} has no batch support. "
                "Run without --batch."
            )
        self.backend = backend
        self.results_path = Path(results_path)
        self.failures_path = Path(failures_path) if failures_path else self.results_path.parent / "failures.jsonl"
        self.state_path = Path(state_path) if state_path else self.results_path.parent / "batch.json"
        self.poll_interval_s = poll_interval_s
        self.max_cost_usd = max_cost_usd
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.record_key = record_key
        self.lock = lock
        self.progress = progress
        self.sdk_max_retries = sdk_max_retries
        self.desc = desc
        #: where each billed answer is logged (`CostLog`, stage ``desc``); None: nowhere
        self.cost_log = Path(cost_log) if cost_log is not None else None
        self._costs: CostLog | None = None

    def completed_keys(self) -> set[str]:
        return completed_keys(self.results_path, self.record_key)

    def load_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            return None
        return state if state.get("batch_id") else None

    def estimate_cost(self, job: Job) -> float:
        req = job.request
        usage = TokenUsage(input_tokens=(len(req.system) + len(req.prompt)) // 4, output_tokens=req.max_tokens // 4)
        return self.prices.cost(self.backend.model, usage, BATCH_DISCOUNT)

    async def run(self, jobs: Iterable[Job] | AsyncIterable[Job], *, total: int | None = None) -> RunSummary:
        if self.lock:
            with RunLock(self.results_path.parent, what=str(self.results_path.parent)):
                return await self._run(jobs)
        return await self._run(jobs)

    def _client(self) -> Any:
        return self.backend.client().with_options(max_retries=self.sdk_max_retries)

    async def _run(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> RunSummary:
        import anthropic

        from autointerp.llm.anthropic import translate_sdk_error

        t0 = time.monotonic()
        summary = RunSummary(model=self.backend.model)
        summary.cost_known = self.prices.lookup(self.backend.model) is not None
        done = self.completed_keys()
        all_jobs = await _by_key(jobs)
        summary.total = len(all_jobs)
        summary.skipped = sum(1 for k in all_jobs if k in done)
        preflight = getattr(self.backend, "preflight", None)
        if preflight is not None:
            await preflight()  # a refused key stops here, before anything is submitted
        client = self._client()
        try:
            state = self.load_state()
            if state is None:
                pending = self._within_budget([j for k, j in all_jobs.items() if k not in done], summary)
                if not pending:
                    summary.wall_time_s = time.monotonic() - t0
                    return summary
                state = await self._submit(client, pending)
            else:
                log.info("resuming batch %s (%d requests)", state["batch_id"], state.get("n", 0))
            await self._poll(client, state)
            await self._collect(client, state, all_jobs, done, summary)
        except anthropic.AnthropicError as e:
            err = translate_sdk_error(e, anthropic)
            if isinstance(err, AuthenticationFailed):
                raise err from None
            raise RuntimeError(f"the Message Batches API failed: {redact(str(e))}; run again to resume") from None
        finally:
            release = getattr(self.backend, "release", None)
            if release is not None:
                try:
                    await release()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
        bid = state["batch_id"]
        os.replace(self.state_path, self.state_path.with_name(f"batch.{bid}.done.json"))
        summary.wall_time_s = time.monotonic() - t0
        return summary

    def _within_budget(self, pending: list[Job], summary: RunSummary) -> list[Job]:
        """The first of ``pending`` whose estimated cost fits ``max_cost_usd`` (and the batch size limit)."""
        if self.max_cost_usd is not None and summary.cost_known:
            budget, kept = 0.0, []
            for j in pending:
                c = self.estimate_cost(j)
                if budget + c > self.max_cost_usd:
                    break
                budget += c
                kept.append(j)
            if len(kept) < len(pending):
                summary.not_started = len(pending) - len(kept)
                summary.stopped_reason = (
                    f"cost limit: submitting {len(kept)} of {len(pending)} requests "
                    f"(estimated ${budget:.4f} <= ${self.max_cost_usd:.4f})"
                )
                log.warning(summary.stopped_reason)
            pending = kept
        return pending[:MAX_BATCH_REQUESTS]

    async def _submit(self, client: Any, pending: list[Job]) -> dict[str, Any]:
        """Create the batch and save its state (``batch.json``) at once, so a killed run resumes it."""
        custom_ids = {f"r{i}": j.key for i, j in enumerate(pending)}
        requests = [{"custom_id": f"r{i}", "params": self.backend.build_params(j.request)} for i, j in enumerate(pending)]
        batch = await client.messages.batches.create(requests=requests)
        state = {"batch_id": batch.id, "model": self.backend.model, "created_at": _now(), "n": len(requests),
                 "custom_ids": custom_ids}  # fmt: skip
        atomic_write_text(self.state_path, json.dumps(state, indent=1))
        log.info("submitted batch %s with %d requests", batch.id, len(requests))
        return state

    async def _poll(self, client: Any, state: dict[str, Any]) -> None:
        n = int(state.get("n", 0))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"{self.desc} {state['batch_id']}", unit="req", dynamic_ncols=True)
        try:
            while True:
                b = await client.messages.batches.retrieve(state["batch_id"])
                rc = b.request_counts
                finished = n - int(rc.processing) if b.processing_status != "ended" else n
                if bar is not None:
                    bar.n = max(0, finished)
                    bar.refresh()
                if b.processing_status == "ended":
                    return
                await asyncio.sleep(self.poll_interval_s)
        finally:
            if bar is not None:
                bar.close()

    async def _collect(
        self, client: Any, state: dict[str, Any], all_jobs: dict[str, Job], done: set[str], summary: RunSummary
    ) -> None:
        writer = JsonlAppender(self.results_path)
        failures = JsonlAppender(self.failures_path)
        self._costs = CostLog(self.cost_log, self.desc) if self.cost_log is not None else None
        custom_ids: dict[str, str] = state["custom_ids"]
        try:
            results = await client.messages.batches.results(state["batch_id"])
            async for item in results:
                key = custom_ids.get(item.custom_id)
                if key is None or key in done:
                    continue
                job = all_jobs.get(key)
                summary.requests += 1
                if job is None:
                    continue  # no longer asked for (e.g. --limit changed); the next run resubmits it
                record, reason = self._outcome(item.result, job, summary)
                kind = "batch"
                if not reason:
                    try:
                        await writer.append(record)
                    except ValueError as e:  # an answer that cannot be stored fails this item, not the run
                        reason, kind = f"cannot store the answer: {e}", "unstorable"
                    else:
                        done.add(key)
                        summary.completed += 1
                        continue
                await self._record_failure(failures, key, reason, kind, state, summary)
        finally:
            writer.close()
            failures.close()
            costs, self._costs = self._costs, None
            if costs is not None:
                costs.close()

    def _outcome(self, r: Any, job: Job, summary: RunSummary) -> tuple[Any, str]:
        """One batch item's record to store, or why there is none (a non-empty reason); bills its usage."""
        model = self.backend.model
        if r.type == "errored":
            err = getattr(getattr(r, "error", None), "error", None)
            return None, f"batch item errored: {getattr(err, 'type', '?')}: {getattr(err, 'message', '')}"
        if r.type != "succeeded":
            return None, f"batch item {r.type}"
        usage = TokenUsage()
        try:
            resp: LLMResponse = self.backend.parse_message(r.message, job.request)
            usage = resp.usage
            self._bill(job, usage, summary)
            return job.parse(resp), ""
        except InvalidResponse as e:
            if e.usage is not None and usage == TokenUsage():
                self._bill(job, e.usage, summary)
            raw = (e.raw_text or "")[:500]
            return None, f"invalid answer: {e}" + (f"; raw: {raw}" if raw else "")
        except Exception as e:  # noqa: BLE001 - one bad item never aborts the run
            return None, f"{type(e).__name__}: {e}"

    def _bill(self, job: Job, usage: TokenUsage, summary: RunSummary) -> None:
        cost = self.prices.cost(self.backend.model, usage, BATCH_DISCOUNT)
        summary.usage = summary.usage + usage
        summary.cost_usd += cost
        if self._costs is not None:
            self._costs.bill(job.key, self.backend.model, usage, cost, summary.cost_known)

    async def _record_failure(
        self, failures: JsonlAppender, key: str, reason: str, kind: str, state: dict[str, Any], summary: RunSummary
    ) -> None:
        # a reason quoting the answer may hold what UTF-8 cannot encode; escape it, so the failure is stored
        reason = redact(reason)[:2000].encode("utf-8", "backslashreplace").decode("utf-8")
        summary.failed += 1
        short = reason[:120]
        summary.failure_reasons[short] = summary.failure_reasons.get(short, 0) + 1
        await failures.append(
            {"key": key, "reason": reason, "error": kind, "attempts": 1, "model": self.backend.model,
             "batch_id": state["batch_id"], "created_at": _now()}
        )  # fmt: skip


async def _by_key(jobs: Iterable[Job] | AsyncIterable[Job]) -> dict[str, Job]:
    """Every job by its key (the first of duplicates), read to the end: a batch is submitted whole."""
    all_jobs: dict[str, Job] = {}
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            all_jobs.setdefault(job.key, job)
    else:
        for job in jobs:
            all_jobs.setdefault(job.key, job)
    return all_jobs
