"""Where the first interpret run of a process spends its time (task I item 5).

The first `Interpreter.run` in a fresh process took 10-17 s for 10 requests to the local
test server on the shared machine, later ones ~0.4 s. This measures, in a fresh
interpreter: importing the anthropic SDK alone, the first run (SDK already imported),
and a second run, each on 10 components against the in-process test server.

    python benchmarks/first_interpret.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
t = time.perf_counter(); import anthropic; t_import = time.perf_counter() - t
from llm_fixtures import make_run
from autointerp.harvest import load_harvest
from autointerp.interpret import Interpreter
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.testing.llm_server import LLMServer
paths = make_run(Path(tempfile.mkdtemp()))
runs = []
with LLMServer(api_key="k") as s:
    for i in range(2):
        b = AnthropicBackend(api_key="k", base_url=s.url)
        h = load_harvest(paths.harvest)
        t = time.perf_counter()
        Interpreter(b, progress=False).run(h, paths.with_label_set(f"s{i}"))
        runs.append(time.perf_counter() - t)
print(json.dumps({"import_anthropic_s": t_import, "first_run_s": runs[0], "second_run_s": runs[1]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", _CHILD, tests], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"import anthropic {r['import_anthropic_s']:.2f} s, first run {r['first_run_s']:.2f} s, "
              f"second run {r['second_run_s']:.2f} s")


if __name__ == "__main__":
    main()
