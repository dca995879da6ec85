"""How long the static report takes to write and to open for a large run.

Synthesizes a run of N components (default 50,000 in 4 layers) with the
evidence a default harvest keeps (20 random and 10 top examples of 21 tokens,
10 tokens x 3 rankings for inputs and outputs, 10 partners x 4 rankings), a
label and three scores per component, then times `write_report` and, in
headless Chromium, the index load, a text filter, a sort and opening one
component.

    python benchmarks/report_50k.py --n 50000 --out /tmp/report-bench
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from autointerp.batch import ComponentSpace
from autointerp.paths import RunPaths
from autointerp.report import write_report

WORDS = ["Ġthe", "Ġcat", "Ġsat", "Ċ", "Ġon", "Ġmat", ".", ",", "Ġof", "Ġand", "âĢ", "Ķ", "Ġcaf", "Ã©", "Ġmodel", "Ġdata"]


def synthesize(paths: RunPaths, n: int, layers: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    width = n // layers
    names = [f"blocks.{i}.mlp" for i in range(layers)]
    (paths.harvest).mkdir(parents=True, exist_ok=True)
    cfg = {
        "layers": [{"name": nm, "width": width} for nm in names],
        "threshold": 0.0,
        "seed": seed,
        "vocab_size": 50257,
        "n_batches": 1000,
        "n_tokens": 100_000_000,
        "accumulators": [],
        "model": {"name": "bench"},
        "dataset": {"name": "synthetic"},
        "created_at": "",
        "autointerp_version": "bench",
    }
    paths.harvest_config.write_text(json.dumps(cfg))

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

    def partners(layer):
        def row():
            return {"key": ComponentSpace.make_key(rng.choice(names), rng.randrange(width)), "count": rng.randrange(1000),
                    "precision": rng.random(), "recall": rng.random(), "pmi": rng.gauss(0, 2)}
        return {k: [row() for _ in range(10)] for k in ("top_precision", "top_recall", "top_pmi", "bottom_pmi")}

    paths.interpretations.mkdir(parents=True, exist_ok=True)
    paths.scores.mkdir(parents=True, exist_ok=True)
    with open(paths.harvest_components, "w") as f, open(paths.interpretation_results, "w") as fi:
        with open(paths.score_file("detection"), "w") as fs:
            for nm in names:
                for i in range(width):
                    key = ComponentSpace.make_key(nm, i)
                    rate = 10 ** rng.uniform(-6, -1) if rng.random() > 0.05 else 0.0
                    comp = {
                        "key": key, "layer": nm, "index": i, "firing_count": int(rate * 1e8), "firing_rate": rate,
                        "mean_activation": rng.random(), "max_activation": 1.5,
                        "examples": [example() for _ in range(20)] if rate else [],
                        "top_examples": [example() for _ in range(10)] if rate else [],
                        "input_tokens": stats(), "output_tokens": stats(), "correlations": partners(nm), "extras": {},
                    }
                    f.write(json.dumps(comp) + "\n")
                    if not rate:
                        continue
                    label = " ".join(rng.choice(["quotes", "numbers", "code", "names", "French", "closing", "brackets"]) for _ in range(4))
                    fi.write(json.dumps({"component_key": key, "label": label, "confidence": rng.choice(["high", "medium", "low"]),
                                         "reasoning": "synthetic " * 20, "model": "bench"}) + "\n")
                    for src, s in (("label", rng.random()), ("shuffled", 0.5), ("token_lookup", 0.55)):
                        fs.write(json.dumps({"component_key": key, "scorer": "detection", "label_source": src, "label": label,
                                             "score": s, "n_trials": 20}) + "\n")


def browse(index: Path, chromium: str) -> dict[str, float]:
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
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--out", default="/tmp/autointerp-report-bench")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="keep an already synthesized run")
    args = ap.parse_args()
    root = Path(args.out)
    paths = RunPaths.of("bench", root)
    if not (args.reuse and paths.harvest_components.exists()):
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        synthesize(paths, args.n, args.layers)
        print(f"synthesized {args.n} components in {time.perf_counter() - t:.1f}s "
              f"({paths.harvest_components.stat().st_size / 2**20:.0f} MiB components.jsonl)")
    t = time.perf_counter()
    index = write_report(paths, workers=args.workers)
    dt = time.perf_counter() - t
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    files = sum(1 for p in index.parent.rglob("*") if p.is_file())
    layer_size = sum(p.stat().st_size for p in (index.parent / "data").glob("layer-*.js"))
    print(f"write_report (workers={args.workers}): {dt:.1f}s, {files} files, {size / 2**20:.0f} MiB "
          f"(index data loaded at start: {layer_size / 2**20:.1f} MiB)")
    if not args.no_browser:
        for k, v in browse(index, args.chromium).items():
            print(f"  {k}: {v:.3f}" if k.endswith("_s") else f"  {k}: {v:.0f}")


if __name__ == "__main__":
    main()
