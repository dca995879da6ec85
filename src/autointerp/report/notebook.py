"""Rich notebook views (`_repr_html_`). Filled in by the report module."""

from __future__ import annotations

import html
from typing import Any


def component_html(comp: Any) -> str:
    return f"<pre>{html.escape(repr(comp))}</pre>"


def interpretation_html(result: Any) -> str:
    return f"<pre>{html.escape(repr(result))}</pre>"


def harvest_html(result: Any) -> str:
    return f"<pre>{html.escape(repr(result))}</pre>"
