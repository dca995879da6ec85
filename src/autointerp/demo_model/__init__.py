"""The embedded demo model's files (weights, tokenizer, held-out text), shipped as package data.

The demo adapter (``autointerp.adapters.demo``) and the ``demo`` dataset
(``autointerp.data``) both find the files here, so neither imports the other.
``scripts/train_demo_model.py`` writes them (see docs/demo_model.md).
"""

from __future__ import annotations

from pathlib import Path


def demo_dir() -> Path:
    """The folder inside the installed package that holds the demo model's files."""
    return Path(__file__).parent


__all__ = ["demo_dir"]
