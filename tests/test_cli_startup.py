"""`autointerp --help` starts light: building the parser imports no torch, numpy, SDK or template engine.

Each subcommand module imports its work when the command runs (`autointerp.cli`'s rule), and the
package's public names load on first use; a subcommand that reads a default from a heavy module at
import time (as `cli/compare.py` once read `autointerp.compare`'s with numpy at its top) fails here.
Run in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "anthropic", "openai", "httpx", "jinja2", "transformers", "tokenizers", "datasets", "wandb")

_PROBE = """
import json, sys
from autointerp.cli import build_parser
build_parser().format_help()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:])))
"""


def test_building_the_parser_imports_nothing_heavy():
    p = subprocess.run([sys.executable, "-c", _PROBE, *HEAVY], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    loaded = json.loads(p.stdout)
    assert loaded == [], f"`autointerp --help` imports {sorted({m.split('.')[0] for m in loaded})}"


def test_help_runs_and_the_public_names_still_load():
    p = subprocess.run([sys.executable, "-m", "autointerp", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "compare" in p.stdout, p.stderr
    import autointerp

    assert autointerp.HarvestLoop.__name__ == "HarvestLoop" and "HarvestLoop" in dir(autointerp)
    from autointerp import RunPaths, compare_label_sets  # noqa: F401  (a from-import goes through __getattr__ too)
