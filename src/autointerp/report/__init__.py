"""Views of a run for people: a static HTML report, notebook views and exports.

* `write_report` — the offline HTML report (``autointerp report RUN_ID``).
* `open_run` — a run in a notebook: ``run["h.0.mlp:3"]`` shows one component.
* `export_run` — labels, scores and top examples as JSON for other apps.
* `register_extras_renderer` — how a custom accumulator's output is shown.
"""

from autointerp.report.export import EXPORT_FORMATS, export_run
from autointerp.report.run import LabeledComponent, RunData, RunView, open_run
from autointerp.report.tokens import display_tokens
from autointerp.report.writer import ExtrasRenderer, demo_stage, register_extras_renderer, safe_json, write_report

__all__ = [
    "EXPORT_FORMATS",
    "ExtrasRenderer",
    "LabeledComponent",
    "RunData",
    "RunView",
    "demo_stage",
    "display_tokens",
    "export_run",
    "open_run",
    "register_extras_renderer",
    "safe_json",
    "write_report",
]
