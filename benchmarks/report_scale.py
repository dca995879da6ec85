"""The static report and the export at 100,000 components: time, peak memory, the index in a browser.

Synthesizes a run of N components (default 100,000 in 4 layers) with the evidence a
default harvest keeps (20 random and 10 top examples of 21 tokens, 10 tokens x 3
rankings for inputs and outputs, 10 partners x 4 rankings), a label and three
scores per component. To write 3 GB quickly, each component's evidence is one of
256 pre-rendered bodies (the report does the same work whichever it is); keys,
rates and labels are per component. The harvest is saved with its index
(``components.sqlite``), as `HarvestResult.save` writes it.

Then, each in its own process (so its peak RSS is its own; workers' peaks are
reported beside the parent's): `write_report` (``--workers``) and `export_run`
(jsonl, then neuronpedia), and in headless Chromium the index load, a text filter, a sort, paging and
opening one component (`browse`).

    python benchmarks/report_scale.py --n 100000 --out /tmp/report-scale --workers 2
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from autointerp.batch import ComponentSpace
from autointerp.harvest_store import StoreWriter
from autointerp.paths import RunPaths

WORDS = ["Ġthe", "Ġcat", "Ġsat", "Ċ", "Ġon", "Ġmat", ".", ",", "Ġof", "Ġand", "âĢ", "Ķ", "Ġcaf", "Ã©", "Ġmodel", "Ġdata"]


def _bodies(rng: random.Random, names: list[str], width: int, n: int = 256) -> list[str]:
    """JSON fragments holding a component's evidence (everything after its scalars)."""

    def example():
        toks = [rng.choice(WORDS) for _ in range(21)]
        acts = [round(rng.random(), 4) if rng.random() < 0.2 else 0.0 for _ in range(21)]
        acts[10] = round(0.5 + rng.random(), 4)
        return {"token_ids": [WORDS.index(t) for t in toks], "activations": acts, "firing_offset": 10,
                "sequence_index": rng.randrange(10**6), "position": rng.randrange(512), "tokens": toks}

    def stats():
        def row():
            t = rng.choice(WORDS)
            return {"token_id": WORDS.index(t), "count": rng.randrange(1000), "precision": rng.random(),
                    "recall": rng.random(), "pmi": rng.gauss(0, 2), "token": t}
        return {k: [row() for _ in range(10)] for k in ("top_precision", "top_recall", "top_pmi")}

    def partners():
        def row():
            return {"key": ComponentSpace.make_key(rng.choice(names), rng.randrange(width)), "count": rng.randrange(1000),
                    "precision": rng.random(), "recall": rng.random(), "pmi": rng.gauss(0, 2)}
        return {k: [row() for _ in range(10)] for k in ("top_precision", "top_recall", "top_pmi", "bottom_pmi")}

    out = []
    for _ in range(n):
        body = {"examples": [example() for _ in range(20)], "top_examples": [example() for _ in range(10)],
                "input_tokens": stats(), "output_tokens": stats(), "correlations": partners(), "extras": {}}
        out.append(json.dumps(body)[1:-1])
    return out


def synthesize(paths: RunPaths, n: int, layers: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    width = n // layers
    names = [f"blocks.{i}.mlp" for i in range(layers)]
    paths.harvest.mkdir(parents=True, exist_ok=True)
    cfg = {"layers": [{"name": nm, "width": width} for nm in names], "threshold": 0.0, "seed": seed,
           "vocab_size": 50257, "n_batches": 1000, "n_tokens": 100_000_000, "accumulators": [],
           "model": {"name": "bench"}, "dataset": {"name": "synthetic"}, "created_at": "", "autointerp_version": "bench"}
    paths.harvest_config.write_text(json.dumps(cfg))
    bodies = _bodies(rng, names, width)
    empty = json.dumps({"examples": [], "top_examples": [], "input_tokens": None, "output_tokens": None,
                        "correlations": None, "extras": {}})[1:-1]
    paths.interpretations.mkdir(parents=True, exist_ok=True)
    paths.scores.mkdir(parents=True, exist_ok=True)
    writer = StoreWriter(paths.harvest)
    topics = ["quotes", "numbers", "code", "names", "French", "closing", "brackets"]
    with open(paths.interpretation_results, "w") as fi, open(paths.score_file("detection"), "w") as fs:
        for nm in names:
            for i in range(width):
                key = ComponentSpace.make_key(nm, i)
                rate = 10 ** rng.uniform(-6, -1) if rng.random() > 0.05 else 0.0
                head = {"key": key, "layer": nm, "index": i, "firing_count": int(rate * 1e8), "firing_rate": rate,
                        "mean_activation": rng.random(), "max_activation": 1.5}
                line = (json.dumps(head)[:-1] + ", " + (rng.choice(bodies) if rate else empty) + "}\n").encode()
                writer.add_record(head, line)
                if not rate:
                    continue
                label = " ".join(rng.choice(topics) for _ in range(4))
                fi.write(json.dumps({"component_key": key, "label": label, "confidence": rng.choice(["high", "medium", "low"]),
                                     "reasoning": "synthetic " * 20, "model": "bench"}) + "\n")
                for src, s in (("label", rng.random()), ("shuffled", 0.5), ("token_lookup", 0.55)):
                    fs.write(json.dumps({"component_key": key, "scorer": "detection", "label_source": src, "label": label,
                                         "score": s, "n_trials": 20}) + "\n")
    writer.close()


def _peaks() -> dict[str, float]:
    gib = 2**30
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib,
            "largest_worker_peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / gib}


def child(what: str, root: str, workers: int) -> dict:
    from autointerp.report import export_run, write_report

    paths = RunPaths.of("bench", root)
    t = time.perf_counter()
    if what == "report":
        index = write_report(paths, workers=workers)
        files = [p for p in index.parent.rglob("*") if p.is_file()]
        extra = {"files": len(files), "mib": sum(p.stat().st_size for p in files) / 2**20,
                 "loaded_at_start_mib": sum(p.stat().st_size for p in (index.parent / "data").glob("layer-*.js")) / 2**20}
    else:
        out = export_run(paths, "jsonl" if what == "export" else "neuronpedia", workers=workers)
        extra = {"mib": out.stat().st_size / 2**20}
    seconds = time.perf_counter() - t
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"what": what, "seconds": seconds, "cpu_s": own.ru_utime + own.ru_stime,
            "workers_cpu_s": kids.ru_utime + kids.ru_stime, **extra, **_peaks()}


def browse(index: Path, chromium: str) -> dict[str, float]:
    """Seconds to the index being ready in headless Chromium, to filter, to sort and to open a component."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                               "--disable-background-networking", "--no-first-run"])
        # bypass_csp: the page's CSP forbids eval, which playwright's wait_for_function uses
        pg = b.new_context(bypass_csp=True).new_page()
        t = time.perf_counter()
        pg.goto(index.as_uri())
        pg.wait_for_selector("body[data-ready='1']", timeout=120_000)
        out["index_ready_s"] = time.perf_counter() - t
        out["layer_files_loaded_ms_in_page"] = pg.evaluate("AUTOINTERP.loadMs")
        t = time.perf_counter()
        pg.fill("#f-text", "french quotes")
        pg.wait_for_function("document.querySelector('#count').textContent.indexOf('matching') > 0 && "
                             "document.querySelector('#count').dataset.matching !== '" + pg.get_attribute("#count", "data-matching") + "'",
                             timeout=60_000)
        out["filter_s"] = time.perf_counter() - t
        t = time.perf_counter()
        pg.click("th[data-col='score:detection']")
        out["sort_s"] = time.perf_counter() - t
        key = pg.locator("#components tbody tr").first.get_attribute("data-key")
        t = time.perf_counter()
        pg.locator("#components tbody tr").first.locator("a").click()
        pg.wait_for_selector(f"#component[data-key='{key}'] .example", timeout=60_000)
        out["open_component_s"] = time.perf_counter() - t
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--out", default="/tmp/autointerp-report-scale")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="keep an already synthesized run")
    ap.add_argument("--child", choices=("report", "export", "neuronpedia"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.out, args.workers)))
        return
    root = Path(args.out)
    paths = RunPaths.of("bench", root)
    if not (args.reuse and paths.harvest_components.exists()):
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        synthesize(paths, args.n, args.layers)
        print(f"synthesized {args.n} components in {time.perf_counter() - t:.1f}s "
              f"({paths.harvest_components.stat().st_size / 2**20:.0f} MiB components.jsonl)", flush=True)
    for what in ("report",) + (() if args.no_export else ("export", "neuronpedia")):
        cmd = [sys.executable, __file__, "--child", what, "--out", str(root), "--workers", str(args.workers)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{what} failed:\n{r.stderr[-3000:]}")
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{what} (workers={args.workers}): {res['seconds']:.1f} s, {res['mib']:.0f} MiB written"
              + (f" in {res['files']} files ({res['loaded_at_start_mib']:.1f} MiB loaded at start)" if what == "report" else "")
              + f"; CPU {res['cpu_s']:.1f} s (+ workers {res['workers_cpu_s']:.1f} s)"
              + f"; peak RSS {res['peak_rss_gib']:.2f} GiB (largest worker {res['largest_worker_peak_rss_gib']:.2f} GiB)",
              flush=True)
    if not args.no_browser:
        sys.path.insert(0, str(Path(__file__).parent))

        for k, v in browse(paths.report / "index.html", args.chromium).items():
            print(f"  {k}: {v:.3f}" if k.endswith("_s") else f"  {k}: {v:.0f}")


if __name__ == "__main__":
    main()
