"""How long the static report takes to write and to open for a large run.

Synthesizes a run of N components (default 50,000 in 4 layers) with the
evidence a default harvest keeps (20 random and 10 top examples of 21 tokens,
10 tokens x 3 rankings for inputs and outputs, 10 partners x 4 rankings), a
label and three scores per component, then times `write_report` and, in
headless Chromium, the index load, a text filter, a sort and opening one
component.

    python benchmarks/report_50k.py --n 50000 --out /tmp/report-bench

The run is synthesized by `report_scale.synthesize` (with its index, as every save writes it).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from autointerp.paths import RunPaths
from autointerp.report import write_report



def main() -> None:
    from report_scale import browse, synthesize  # the one synthetic run and browser check of the report benchmarks

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
