"""Interpret throughput against the fake LLM server: how close to the concurrency limit do we get?

2,000 components, a server that takes 200 ms per answer, ``max_concurrent=50``:
the ideal is 50 / 0.2 s = 250 requests per second. Prints the achieved rate as a
fraction of that (target >= 0.90) and the mean prompt size in tokens.

The server runs in its own process (``python -m autointerp.testing.llm_server``)
so it does not share the client's interpreter lock; the client is the real
``Interpreter`` + ``AnthropicBackend`` (real SDK, real HTTP on 127.0.0.1).

    python benchmarks/interpret_throughput.py [--components 2000] [--latency 0.2] [--max_concurrent 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_harvest(n_components: int, seed: int = 0):
    from autointerp.accumulators import CorrelationAcc, InputTokenAcc, OutputProbAcc, ReservoirAcc, TopActivationAcc
    from autointerp.batch import HarvestBatch
    from autointerp.harvest import HarvestLoop

    V = 512
    n_layers = 2
    width = n_components // n_layers
    g = torch.Generator().manual_seed(seed)
    words = [f" w{i}" for i in range(V)]
    loop = HarvestLoop(
        [ReservoirAcc(k=20, context_tokens=8), TopActivationAcc(k=10, context_tokens=8), InputTokenAcc(top_k=10),
         OutputProbAcc(top_k=10), CorrelationAcc(top_k=10)],
        vocab_size=V, decode=lambda i: words[i], progress=False, seed=seed,
        model={"class": "BenchModel", "n_layers": n_layers}, dataset={"name": "random tokens", "description": ""},
    )
    for _ in range(8):
        tokens = torch.randint(0, V, (16, 64), generator=g)
        acts = {}
        for layer in range(n_layers):
            a = torch.rand(16, 64, width, generator=g)
            acts[f"h.{layer}.mlp"] = torch.where(a > 0.97, a, torch.zeros(()))
        probs = torch.softmax(torch.randn(16, 64, V, generator=g), -1)
        loop.update(HarvestBatch(tokens=tokens, activations=acts, output_probs=probs))
    return loop.finalize()


def raw_http_ceiling(url: str, n: int, max_concurrent: int, prompt_chars: int) -> float:
    """Requests per second of a bare httpx client (no SDK, no runner, no rendering) against
    the same server: the ceiling this machine and server allow, measured in this process."""
    import asyncio

    import httpx

    body = {
        "model": "claude-haiku-4-5-20251001", "max_tokens": 1024,
        "system": [{"type": "text", "text": "s" * 1600}],
        "messages": [{"role": "user", "content": "x" * prompt_chars}],
        "output_config": {"format": {"type": "json_schema", "schema": {
            "type": "object", "properties": {k: {"type": "string"} for k in ("label", "confidence", "reasoning")},
            "required": ["label", "confidence", "reasoning"], "additionalProperties": False}}},
    }
    headers = {"x-api-key": "not-a-key", "anthropic-version": "2023-06-01"}

    async def go() -> float:
        sem = asyncio.Semaphore(max_concurrent)
        limits = httpx.Limits(max_connections=max_concurrent, max_keepalive_connections=max_concurrent)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            async def one() -> None:
                async with sem:
                    r = await client.post("/v1/messages", json=body, headers=headers)
                    r.json()

            await asyncio.gather(*[one() for _ in range(max_concurrent)])  # warm the connections
            t = time.perf_counter()
            await asyncio.gather(*[one() for _ in range(n)])
            return n / (time.perf_counter() - t)

    return asyncio.run(go())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--components", type=int, default=2000)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--max_concurrent", type=int, default=50)
    args = p.parse_args()

    from autointerp.interpret import Interpreter
    from autointerp.llm.anthropic import AnthropicBackend

    t = time.perf_counter()
    harvest = build_harvest(args.components)
    print(f"harvest: {harvest} ({time.perf_counter() - t:.1f} s)")

    server = subprocess.Popen(
        [sys.executable, "-m", "autointerp.testing.llm_server", "--latency", str(args.latency)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = server.stdout.readline().strip()
        url = line.rsplit(" ", 1)[-1]
        os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-benchmark-not-a-key")
        backend = AnthropicBackend("claude-haiku-4-5-20251001", base_url=url)
        interp = Interpreter(backend, max_concurrent=args.max_concurrent, progress=False)
        # warm-up, reported separately: importing the SDK and building its pydantic models
        # takes a second or two once per process, which a real run of 40,000 components
        # amortises but 8 seconds of ideal benchmark would not
        t = time.perf_counter()
        interp.run(harvest, Path(tempfile.mkdtemp(prefix="autointerp-bench-warm-")), limit=args.max_concurrent)
        print(f"warm-up: {args.max_concurrent} requests in {time.perf_counter() - t:.2f} s (SDK import, first connections)")
        out = Path(tempfile.mkdtemp(prefix="autointerp-bench-"))
        import resource

        load_before = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        results = interp.run(harvest, out)
        wall = time.perf_counter() - t
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        # the same requests again, prompts rendered beforehand: the runner + SDK + server alone
        from autointerp.llm.runner import JobRunner

        _, jobs = Interpreter(backend, progress=False).jobs(harvest)
        jobs = list(jobs)
        runner = JobRunner(backend, Path(tempfile.mkdtemp()) / "results.jsonl", max_concurrent=args.max_concurrent,
                           progress=False)
        t = time.perf_counter()
        pre = runner.run_sync(jobs)
        wall_pre = time.perf_counter() - t
        raw_rate = raw_http_ceiling(url, len(jobs), args.max_concurrent, 4 * 1150)
        server_cpu = subprocess.run(["ps", "-o", "cputime=", "-p", str(server.pid)], capture_output=True, text=True).stdout.strip()
    finally:
        server.terminate()
        server.wait()
    s = interp.summary
    n = s.completed
    ideal = args.max_concurrent / args.latency
    rate = n / wall
    u = s.usage
    prompt_tokens = (u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens) / max(1, s.requests)
    print(f"labeled {n} of {len(results)} live components in {wall:.2f} s (requests: {s.requests}, failed: {s.failed})")
    print(f"throughput: {rate:.1f} req/s = {rate / ideal:.1%} of the ideal {ideal:.0f} req/s (target >= 90%)")
    print(f"baseline, a bare httpx client against the same server: {raw_rate:.1f} req/s = {raw_rate / ideal:.1%} of ideal "
          f"(the ceiling of this machine and server); autointerp reaches {rate / raw_rate:.1%} of it")
    print(f"prompts rendered beforehand: {pre.completed / wall_pre:.1f} req/s = {pre.completed / wall_pre / ideal:.1%} of ideal")
    print(f"mean prompt size: {prompt_tokens:.0f} tokens (system {u.cache_read_input_tokens / max(1, s.requests):.0f} "
          "cached + component part; the server counts ~4 characters per token)")
    print(f"estimated cost at claude-haiku-4-5 prices: ${s.cost_usd:.2f}")
    client_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(f"client CPU {client_cpu:.1f} s ({1000 * client_cpu / max(1, s.requests):.2f} ms a request: render + SDK + runner), "
          f"server CPU {server_cpu}, {os.cpu_count()} CPUs, load average before the run {load_before:.2f}")


if __name__ == "__main__":
    main()
