"""A `module:function` harvest target for the subprocess tests: the demo model, made slow on purpose.

``AUTOINTERP_TEST_DELAY`` seconds of sleep per batch give a test time to kill
the process between two checkpoints.
"""

from __future__ import annotations

import os
import time


class SlowHarvestFn:
    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    def __call__(self, tokens):
        time.sleep(self.delay)
        return self.inner(tokens)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def make(layers=None):
    from autointerp.adapters.demo import load_demo

    demo = load_demo()
    return SlowHarvestFn(demo.harvest_fn(layers), float(os.environ.get("AUTOINTERP_TEST_DELAY", "0")))
