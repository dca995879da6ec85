"""The one job runner: every LLM call the project makes (labels, scores) goes through it.

The interpreter and every scorer hand `JobRunner` an iterable of `Job`s — a key, an
`LLMRequest` and a ``parse`` callback that turns the backend's `LLMResponse` into
the record to store — and the runner does the rest, the same way for everyone:

* **bounded concurrency**: at most ``max_concurrent`` requests in flight, pulled
  lazily from the job iterable (40,000 prompts are never rendered up front);
* **retries**: `TransientError` (429, 529, 5xx, timeouts, dropped connections) is
  retried with exponential backoff and full jitter, honouring ``retry_after``; a
  429/529 with ``retry-after`` also pauses the *start* of new requests for that
  long, so 50 workers do not hammer an overloaded server. `InvalidResponse` (not
  JSON, schema-violating, cut off at ``max_tokens``, or ``parse`` raising it) is
  retried ``max_invalid_retries`` times; `RequestRejected` is not retried;
* **a per-request timeout** (``request_timeout_s``) on top of the backend's own;
* **failures are data**: a job that runs out of retries, or whose record cannot
  be stored (an answer holding a lone surrogate), is appended to the failures
  file with its reason and the run goes on; the next run retries it (only the
  results file decides what is done);
* **fatal errors**: `AuthenticationFailed` (from ``backend.preflight()`` before
  any job, or from any request) cancels everything in flight and is raised;
* **crash safety**: each record is appended to the results file as one fsynced
  JSONL line as soon as it arrives (group commit: lines that arrive together
  share one fsync, but no record is reported written before its fsync);
  keys already in the results file are skipped; a `RunLock` on the output folder
  refuses a second writer;
* **cost**: token usage of every response (failed ones too: they were billed) is
  priced with `PriceTable`; once ``max_cost_usd`` is reached no new request starts;
* a `RunSummary` at the end.

Why the runner retries and the SDKs do not: answers that are not JSON or do not
match the schema must be retried too, and the offline and custom backends have
no SDK at all, so a retry loop has to live here. The SDK clients are therefore
built with ``max_retries=0`` (see the backends): one retry policy, one place to
configure it, attempts counted in the summary, and no multiplication of
SDK retries by runner retries (2 x 6 attempts per job).

Example (a scorer)::

    from autointerp.llm.runner import Job, JobRunner

    def parse(resp: LLMResponse) -> ScoreResult:
        if "answer" not in resp.data:
            raise InvalidResponse("no 'answer' field", resp.raw_text, resp.usage)
        return ScoreResult(component_key=key, scorer="detection", ...)

    runner = JobRunner(backend, paths.scores / "detection.jsonl", max_concurrent=50)
    jobs = (Job(key, LLMRequest(prompt, schema), parse) for key, prompt in ...)
    summary = runner.run_sync(jobs, total=n)      # or: await runner.run(jobs, total=n)

``record_key`` (default: the record's ``component_key``) says which job a stored
record belongs to; scorers that write several records per component give each
job a distinct key (``f"{component}|{label_source}"``) and a matching
``record_key``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from attrs import define, field

from autointerp.llm.base import (
    AuthenticationFailed,
    Backend,
    InvalidResponse,
    LLMRequest,
    LLMResponse,
    RequestRejected,
    TransientError,
    redact,
)
from autointerp.schemas import CostEntry, TokenUsage
from autointerp.storage import JsonlAppender, RunLock, completed_keys

log = logging.getLogger("autointerp.llm")

T = TypeVar("T")


# --------------------------------------------------------------------------------------
# prices


@define
class ModelPrice:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_read: float | None = None  # default: 10% of input
    cache_write: float | None = None  # default: 125% of input (5-minute cache)

    def cost(self, usage: TokenUsage, discount: float = 1.0) -> float:
        cr = self.cache_read if self.cache_read is not None else 0.1 * self.input
        cw = self.cache_write if self.cache_write is not None else 1.25 * self.input
        return discount * (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_input_tokens * cr
            + usage.cache_creation_input_tokens * cw
        ) / 1e6


#: list prices (USD per million tokens), matched by longest model-name prefix.
#: Override per run with ``PriceTable({...})`` or ``--price MODEL=IN,OUT``.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-haiku-4-5": ModelPrice(1.0, 5.0, 0.10, 1.25),
    "claude-3-5-haiku": ModelPrice(0.8, 4.0, 0.08, 1.0),
    "claude-3-haiku": ModelPrice(0.25, 1.25, 0.03, 0.30),
    "claude-sonnet-4": ModelPrice(3.0, 15.0, 0.30, 3.75),
    "claude-3-7-sonnet": ModelPrice(3.0, 15.0, 0.30, 3.75),
    "claude-opus-4-5": ModelPrice(5.0, 25.0, 0.50, 6.25),
    "claude-opus-4": ModelPrice(15.0, 75.0, 1.50, 18.75),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, 0.075, 0.15),
    "gpt-4o": ModelPrice(2.5, 10.0, 1.25, 2.5),
    "gpt-4.1-mini": ModelPrice(0.4, 1.6, 0.1, 0.4),
    "gpt-4.1": ModelPrice(2.0, 8.0, 0.5, 2.0),
    "offline": ModelPrice(0.0, 0.0, 0.0, 0.0),
}


class PriceTable:
    """Prices by model name (longest matching prefix wins); user entries override defaults.

    >>> PriceTable({"my-local-llama": (0, 0)}).cost("my-local-llama", TokenUsage(1000, 100))
    0.0
    """

    def __init__(self, overrides: Mapping[str, ModelPrice | tuple[float, ...]] | None = None, *, defaults: bool = True):
        self.prices: dict[str, ModelPrice] = dict(DEFAULT_PRICES) if defaults else {}
        for name, p in (overrides or {}).items():
            self.prices[name] = p if isinstance(p, ModelPrice) else ModelPrice(*p)

    def lookup(self, model: str) -> ModelPrice | None:
        best = None
        for name, price in self.prices.items():
            if model.startswith(name) and (best is None or len(name) > len(best[0])):
                best = (name, price)
        return best[1] if best else None

    def cost(self, model: str, usage: TokenUsage, discount: float = 1.0) -> float:
        price = self.lookup(model)
        return 0.0 if price is None else price.cost(usage, discount)


# --------------------------------------------------------------------------------------
# jobs and the summary


@define
class Job:
    """One request to make. ``parse(response)`` returns the record to append (an attrs
    object or a dict); it may raise `InvalidResponse` to have the request retried."""

    key: str
    request: LLMRequest
    parse: Callable[[LLMResponse], Any]


@define
class RunSummary:
    """What a run did. ``completed`` records were written this run; ``skipped`` jobs
    were already done; ``not_started`` jobs were left for later (cost limit)."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    not_started: int = 0
    requests: int = 0
    retries: int = 0
    usage: TokenUsage = field(factory=TokenUsage)
    cost_usd: float = 0.0
    cost_known: bool = True
    wall_time_s: float = 0.0
    model: str = ""
    stopped_reason: str = ""
    failure_reasons: dict[str, int] = field(factory=dict)

    @property
    def labeled(self) -> int:
        return self.completed

    def __str__(self) -> str:
        u = self.usage
        cost = f"${self.cost_usd:.4f}" if self.cost_known else "unknown (no price for this model; see PriceTable)"
        rate = self.requests / self.wall_time_s if self.wall_time_s > 0 else 0.0
        lines = [
            f"done: {self.completed}, failed: {self.failed}, skipped (already done): {self.skipped}, "
            f"not started: {self.not_started} (of {self.total})",
            f"requests: {self.requests} ({self.retries} retries), {rate:.1f} req/s, wall time {self.wall_time_s:.1f} s",
            f"tokens: input {u.input_tokens}, output {u.output_tokens}, cache read {u.cache_read_input_tokens}, "
            f"cache write {u.cache_creation_input_tokens}; estimated cost {cost}",
        ]
        if self.failure_reasons:
            top = sorted(self.failure_reasons.items(), key=lambda kv: -kv[1])[:3]
            lines.append("failures: " + "; ".join(f"{n}x {r}" for r, n in top))
        if self.stopped_reason:
            lines.append(f"stopped early: {self.stopped_reason}")
        return "\n".join(lines)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_record_key(record: Mapping[str, Any]) -> str:
    return str(record["component_key"])


class CostLog:
    """The append-only cost log of a label set (``interpretations/costs.jsonl``): one
    `CostEntry` line per billed answer, written as it is billed (group-committed like
    the results), so what a label set cost survives resumes and kills.

    ``stage`` names the pass (``"interpret"``, ``"interpret --neighbours"``, a
    refinement stage). An answer that billed no tokens (the offline labeller) is not
    written. A failed write is raised by `close`.
    """

    def __init__(self, path: str | os.PathLike, stage: str):
        self.stage = stage
        self._out = JsonlAppender(path)
        self._error: BaseException | None = None

    def bill(self, key: str, model: str, usage: TokenUsage, cost_usd: float, priced: bool) -> Any:
        """Queue the line of one billed answer; returns the future that is done once it is on disk (None: no line)."""
        if usage == TokenUsage():
            return None
        entry = CostEntry(stage=self.stage, key=key, model=model, usage=usage, cost_usd=round(cost_usd, 10),
                          priced=priced, created_at=_now())
        fut = self._out.submit(entry)
        fut.add_done_callback(self._written)
        return fut

    def _written(self, fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None and self._error is None:
            self._error = fut.exception()

    def close(self) -> None:
        self._out.close()  # writes what is queued, then stops
        if self._error is not None:
            raise OSError(f"could not append to the cost log {self._out.path}: {self._error}") from self._error


# --------------------------------------------------------------------------------------
# the runner


class JobRunner:
    """Runs `Job`s against one backend into ``results_path`` (see the module docstring).

    ``failures_path`` defaults to ``failures.jsonl`` beside the results (for scorers:
    pass ``scores/<scorer>.failures.jsonl``). ``lock``: True locks the results
    file's folder with a `RunLock` for the duration of ``run`` (pass False when the
    caller holds the lock). ``backoff_initial_s`` / ``backoff_max_s`` shape the
    exponential backoff (tests make them tiny). ``price_discount`` is 0.5 for the
    Message Batches API.
    """

    def __init__(
        self,
        backend: Backend,
        results_path: str | os.PathLike,
        *,
        failures_path: str | os.PathLike | None = None,
        max_concurrent: int = 50,
        max_retries: int = 6,
        max_invalid_retries: int = 2,
        request_timeout_s: float | None = 120.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_retry_after_s: float = 300.0,
        max_cost_usd: float | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        price_discount: float = 1.0,
        record_key: Callable[[Mapping[str, Any]], str] = default_record_key,
        lock: bool = True,
        progress: bool = True,
        desc: str = "llm",
        rng: random.Random | None = None,
        cost_log: str | os.PathLike | None = None,
    ):
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.backend = backend
        self.results_path = Path(results_path)
        self.failures_path = Path(failures_path) if failures_path is not None else self.results_path.parent / "failures.jsonl"
        self.max_concurrent = int(max_concurrent)
        self.max_retries = int(max_retries)
        self.max_invalid_retries = int(max_invalid_retries)
        self.request_timeout_s = request_timeout_s
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.max_cost_usd = max_cost_usd
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.price_discount = price_discount
        self.record_key = record_key
        self.lock = lock
        self.progress = progress
        self.desc = desc
        self.rng = rng or random.Random()
        #: where each billed answer is logged (`CostLog`, stage ``desc``); None: nowhere
        self.cost_log = Path(cost_log) if cost_log is not None else None
        self._pause_until = 0.0

    # -- what is done ----------------------------------------------------------------

    def completed_keys(self) -> set[str]:
        """Keys of the records already in the results file (a torn last line is ignored)."""
        return completed_keys(self.results_path, self.record_key)

    # -- backoff ---------------------------------------------------------------------

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        The server's ``retry_after`` wins when given (capped at ``max_retry_after_s``),
        plus up to 10% jitter so that the workers it stopped do not return in lockstep;
        otherwise "full jitter": uniform in [0, min(max, initial * 2**attempt)],
        never below a tenth of that bound.
        """
        if retry_after is not None and retry_after > 0:
            ra = min(retry_after, self.max_retry_after_s)
            return ra * (1.0 + 0.1 * self.rng.random())
        bound = min(self.backoff_max_s, self.backoff_initial_s * (2.0**attempt))
        return bound * (0.1 + 0.9 * self.rng.random())

    # -- running ---------------------------------------------------------------------

    def run_sync(self, jobs: Iterable[Job], *, total: int | None = None) -> RunSummary:
        """`run` from synchronous code, including inside a running event loop (Jupyter)."""
        return run_coroutine_sync(lambda: self.run(jobs, total=total))

    async def run(self, jobs: Iterable[Job] | AsyncIterable[Job], *, total: int | None = None) -> RunSummary:
        """Run every job whose key is not already in the results file; return the summary.

        Raises `AuthenticationFailed` (after cancelling what is in flight) when the
        backend refuses the credentials; everything else about a job ends up in
        the results or the failures file.
        """
        if total is None:
            try:
                total = len(jobs)  # type: ignore[arg-type]
            except TypeError:
                total = None
        if self.lock:
            with RunLock(self.results_path.parent, what=f"{self.results_path.parent}"):
                return await self._run(jobs, total)
        return await self._run(jobs, total)

    async def _run(self, jobs: Iterable[Job] | AsyncIterable[Job], total: int | None) -> RunSummary:
        return await _Run(self, jobs, total).execute()


def _job_puller(jobs: Iterable[Job] | AsyncIterable[Job]) -> Callable[[], Awaitable[Job | None]]:
    """One ``await next_job()`` for sync and async job iterables (None when they are exhausted)."""
    if isinstance(jobs, AsyncIterable):
        aiter_jobs = jobs.__aiter__()

        async def next_async() -> Job | None:
            try:
                return await aiter_jobs.__anext__()
            except StopAsyncIteration:
                return None

        return next_async
    iter_jobs = iter(jobs)

    async def next_sync() -> Job | None:
        return next(iter_jobs, None)

    return next_sync


@define
class _Tries:
    """Attempts at one job: all of them, and those spent on each kind of retry."""

    attempts: int = 0
    transient: int = 0
    invalid: int = 0
    #: the cost-log line of the last billed answer (a future); the record waits for it
    cost_line: Any = None


class _Run:
    """One call of `JobRunner.run`: the state its workers share and the steps they take.

    Steps, in the order a job meets them: `_take` (skip what is done, stop on the
    cost limit), `_attempt` (one request after another until an answer, a give-up
    or a fatal error), `_on_error` (retry with backoff or record the failure),
    `_store` (hand the record to the writer), and at the end `_close` and
    `_summarise`. `AuthenticationFailed` stops every worker.
    """

    def __init__(self, runner: JobRunner, jobs: Iterable[Job] | AsyncIterable[Job], total: int | None):
        self.r = runner
        self.total = total
        self.t0 = time.monotonic()
        self.model = getattr(runner.backend, "model", "")
        self.summary = RunSummary(total=total or 0, model=self.model)
        self.summary.cost_known = runner.prices.lookup(self.model) is not None
        self.next_job = _job_puller(jobs)
        self.pull_lock = asyncio.Lock()
        self.seen: set[str] = set()
        self.writes: set[asyncio.Future] = set()
        self.stop = ""  # why no new job starts; empty while the run goes on
        self.fatal: AuthenticationFailed | None = None
        self.write_error: BaseException | None = None
        self.done: set[str] = set()
        self.writer: JsonlAppender | None = None
        self.failures: JsonlAppender | None = None
        self.costs: CostLog | None = None
        self.bar: Any = None

    # -- start and end ---------------------------------------------------------------

    async def execute(self) -> RunSummary:
        self._warn_if_unpriced()
        preflight = getattr(self.r.backend, "preflight", None)
        if preflight is not None:
            await preflight()  # AuthenticationFailed propagates before any other work
        self._open()
        tasks = [asyncio.ensure_future(self._worker()) for _ in range(self.r.max_concurrent)]
        try:
            await asyncio.gather(*tasks)
            if self.writes:
                await asyncio.gather(*list(self.writes), return_exceptions=True)
        except AuthenticationFailed:
            pass  # raised below, after the files are closed
        except BaseException:
            await _cancel(tasks)
            raise
        finally:
            if self.fatal is not None:
                await _cancel(tasks)
            await self._close()
        return self._summarise()

    def _warn_if_unpriced(self) -> None:
        if self.summary.cost_known:
            return
        msg = f"no price known for model {self.model!r}: cost is not tracked"
        if self.r.max_cost_usd is not None:
            msg += " and --max_cost_usd cannot be enforced"
        log.warning(msg + "; add one with PriceTable({model: (input, output)}) or --price")

    def _open(self) -> None:
        self.done = self.r.completed_keys()
        self.writer = JsonlAppender(self.r.results_path)
        self.failures = JsonlAppender(self.r.failures_path)
        if self.r.cost_log is not None:
            self.costs = CostLog(self.r.cost_log, self.r.desc)
        if self.r.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.r.desc, unit="req", dynamic_ncols=True)

    async def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        release = getattr(self.r.backend, "release", None)
        if release is not None:
            try:
                await release()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.writer.close()
        self.failures.close()
        if self.costs is not None:
            try:
                self.costs.close()
            except OSError as e:
                self.write_error = self.write_error or e

    def _summarise(self) -> RunSummary:
        if self.write_error is not None:
            raise OSError(f"could not append to {self.r.results_path}: {self.write_error}") from self.write_error
        if self.fatal is not None:
            raise AuthenticationFailed(redact(str(self.fatal))) from None
        s = self.summary
        if self.stop and self.total is not None:
            s.not_started = max(s.not_started, self.total - s.skipped - s.completed - s.failed)
        s.stopped_reason = self.stop
        s.wall_time_s = time.monotonic() - self.t0
        return s

    # -- one worker ------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            job = await self._take()
            if job is None:
                return
            try:
                await self._attempt(job)
            except AuthenticationFailed as e:
                self.stop = "authentication failed"
                self.fatal = e
                raise
            finally:
                self._tick()

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    async def _take(self) -> Job | None:
        """The next job to run, or None when the jobs are exhausted or the run is stopping."""
        async with self.pull_lock:
            while not self.stop:
                job = await self.next_job()
                if job is None:
                    return None
                if job.key in self.done:
                    self.summary.skipped += 1
                    self._tick()
                    continue
                if job.key in self.seen:
                    continue
                if self._over_budget():
                    self.summary.not_started += 1
                    return None
                self.seen.add(job.key)
                return job
            return None

    def _over_budget(self) -> bool:
        limit, spent = self.r.max_cost_usd, self.summary.cost_usd
        if limit is None or not self.summary.cost_known or spent < limit:
            return False
        self.stop = f"cost limit reached (${spent:.4f} >= ${limit:.4f})"
        return True

    async def _attempt(self, job: Job) -> None:
        """Request ``job`` until it has an answer or is given up; store or record the outcome."""
        tries = _Tries()
        while True:
            wait = self.r._pause_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            tries.attempts += 1
            self.summary.requests += 1
            if tries.attempts > 1:
                self.summary.retries += 1
            try:
                record = await self._request(job, tries)
            except AuthenticationFailed:
                raise
            except Exception as e:  # noqa: BLE001 - one bad job never aborts the run
                if await self._on_error(job, e, tries):
                    continue
                return
            await self._store(job, record, tries)
            return

    async def _request(self, job: Job, tries: _Tries) -> Any:
        """One request, billed, and its answer parsed into the record to store."""
        t_req = time.monotonic()
        try:
            resp = await self._complete(job.request)
        except InvalidResponse as e:
            self._bill(job, e.usage, tries)  # an invalid answer is billed all the same
            raise
        self._bill(job, resp.usage, tries)
        resp.elapsed_s = time.monotonic() - t_req
        return job.parse(resp)  # an InvalidResponse here was billed above

    async def _complete(self, request: LLMRequest) -> LLMResponse:
        timeout = self.r.request_timeout_s
        if timeout is None:
            return await self.r.backend.complete(request)
        try:
            return await _with_timeout(self.r.backend.complete(request), timeout)
        except asyncio.TimeoutError:
            raise TransientError(f"no answer within the {timeout:g} s request timeout") from None

    def _bill(self, job: Job, usage: TokenUsage | None, tries: _Tries) -> None:
        if usage is None:
            return
        cost = self.r.prices.cost(self.model, usage, self.r.price_discount)
        self.summary.usage = self.summary.usage + usage
        self.summary.cost_usd += cost
        if self.costs is not None:
            tries.cost_line = self.costs.bill(job.key, self.model, usage, cost, self.summary.cost_known) or tries.cost_line

    # -- retries and failures --------------------------------------------------------

    async def _on_error(self, job: Job, e: Exception, tries: _Tries) -> bool:
        """What ``e`` means for ``job``: True to try again (after the backoff), False once recorded as failed."""
        if isinstance(e, TransientError):
            return await self._after_transient(job, e, tries)
        if isinstance(e, InvalidResponse):
            return await self._after_invalid(job, e, tries)
        if isinstance(e, RequestRejected):
            await self._fail(job, f"request rejected: {e}", tries.attempts, "rejected")
        else:
            await self._fail(job, f"{type(e).__name__}: {e}", tries.attempts, "error")
        return False

    async def _after_transient(self, job: Job, e: TransientError, tries: _Tries) -> bool:
        r = self.r
        if e.retry_after:
            # a server that names a wait also holds back the start of every other request
            r._pause_until = max(r._pause_until, time.monotonic() + min(e.retry_after, r.max_retry_after_s))
        if tries.transient >= r.max_retries:
            await self._fail(job, f"{e} (gave up after {tries.attempts} attempts)", tries.attempts, "transient")
            return False
        delay = r.backoff_delay(tries.transient, e.retry_after)
        tries.transient += 1
        log.debug("retrying %s in %.2f s: %s", job.key, delay, redact(str(e)))
        await asyncio.sleep(delay)
        return True

    async def _after_invalid(self, job: Job, e: InvalidResponse, tries: _Tries) -> bool:
        if tries.invalid >= self.r.max_invalid_retries:
            raw = (e.raw_text or "")[:500]
            await self._fail(job, f"invalid answer: {e}" + (f"; raw: {raw}" if raw else ""), tries.attempts, "invalid")
            return False
        tries.invalid += 1
        await asyncio.sleep(self.r.backoff_delay(0) * 0.1)
        return True

    async def _fail(self, job: Job, reason: str, attempts: int, kind: str) -> None:
        # a reason quoting the answer may hold what UTF-8 cannot encode; escape it, so the failure is stored
        reason = redact(reason)[:2000].encode("utf-8", "backslashreplace").decode("utf-8")
        self.summary.failed += 1
        short = reason.split("\n")[0][:120]
        self.summary.failure_reasons[short] = self.summary.failure_reasons.get(short, 0) + 1
        await self.failures.append(
            {"key": job.key, "reason": reason, "error": kind, "attempts": attempts, "model": self.model, "created_at": _now()}
        )
        log.info("failed %s after %d attempts: %s", job.key, attempts, short)

    # -- writing ---------------------------------------------------------------------

    async def _store(self, job: Job, record: Any, tries: _Tries) -> None:
        if tries.cost_line is not None:
            # a record on disk has its cost on disk: a kill between them never loses a label's cost
            try:
                await asyncio.wrap_future(tries.cost_line)
            except Exception:  # noqa: BLE001 - a failed cost line is raised when the log closes
                pass
        try:
            submitted = self.writer.submit(record)
        except ValueError as e:
            # an answer that cannot be stored (a lone surrogate) fails its job, not
            # the run; the next run asks again, since only stored records are done
            await self._fail(job, f"cannot store the answer: {e}", tries.attempts, "unstorable")
            return
        # the slot is free as soon as the answer is in: the line's fsync (group
        # commit) finishes in the writer thread and counts it as completed then
        fut = asyncio.wrap_future(submitted)
        self.writes.add(fut)
        fut.add_done_callback(self._written)

    def _written(self, fut: asyncio.Future) -> None:
        self.writes.discard(fut)
        if fut.cancelled():
            return
        err = fut.exception()
        if err is None:
            self.summary.completed += 1
            return
        if self.write_error is None:
            self.write_error = err
        self.stop = f"cannot write {self.r.results_path}: {err}"


async def _cancel(tasks: list[asyncio.Future]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _with_timeout(coro: Awaitable[T], seconds: float) -> T:
    # asyncio.timeout (3.11+) runs the call in the current task; wait_for wraps it in a new one
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


def run_coroutine_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code.

    Outside an event loop this is ``asyncio.run``. Inside a running loop (a Jupyter
    cell) ``asyncio.run`` is refused, so the coroutine runs on a fresh loop in a
    helper thread and this call waits for it. ``make`` builds the coroutine in the
    loop that runs it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="autointerp-run", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
