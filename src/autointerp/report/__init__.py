"""Views of a run for people: a static HTML report, notebook views and exports.

* `write_report` — the offline HTML report (``autointerp report RUN_ID``).
* `open_run` — a run in a notebook: ``run["h.0.mlp:3"]`` shows one component.
* `export_run` — labels, scores and top examples as JSON for other apps.
* `register_extras_renderer` — how a custom accumulator's output is shown.

Modules, from the bottom up (each imports only those below it):
`tokens`, `score_sources`, `extras`, `numbers` (no report imports); `run_data`
(reads a run through `autointerp.records`); `notebook` (HTML of components and
runs); `layer_index` and `page_data` (the report's pages as plain dicts); `writer` (the static files)
and `export`; `run_view` (`open_run`, `RunView`, `LabeledComponent`).
"""

from autointerp.report.export import EXPORT_FORMATS, export_run
from autointerp.report.extras import EXTRAS_RENDERERS, ExtrasRenderer, register_extras_renderer
from autointerp.report.page_data import ReportOptions
from autointerp.report.run_data import RunData
from autointerp.report.run_view import LabeledComponent, RunView, open_run
from autointerp.report.tokens import display_tokens
from autointerp.report.writer import demo_stage, safe_json, write_report, write_report_from_data

__all__ = [
    "EXPORT_FORMATS",
    "EXTRAS_RENDERERS",
    "ExtrasRenderer",
    "LabeledComponent",
    "ReportOptions",
    "RunData",
    "RunView",
    "demo_stage",
    "display_tokens",
    "export_run",
    "open_run",
    "register_extras_renderer",
    "safe_json",
    "write_report",
    "write_report_from_data",
]
