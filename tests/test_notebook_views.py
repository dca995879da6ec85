"""Notebook views: rich, escaped, offline `_repr_html_` and one-line `__repr__`s."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from report_fixture import DEAD, INJECT_IMG, INJECT_SCRIPT, N_COMPONENTS, make_run

from autointerp import InterpretationResult, load_harvest
from autointerp.report import LabeledComponent, open_run, register_extras_renderer
from autointerp.report.notebook import example_html
from autointerp.report.extras import EXTRAS_RENDERERS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def harvest(run):
    return load_harvest(run.harvest)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(name for name, _ in attrs)

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def _assert_safe(html: str):
    tags = _parse(html)
    assert "script" not in tags.tags and "img" not in tags.tags, tags.tags
    assert not re.search(r"https?://", html), "a notebook view must not load anything"
    assert not any(a.startswith("on") for a in tags.attrs), "no inline event handlers"


def test_component_html(harvest):
    comp = harvest["h.0.mlp:0"]
    html = comp._repr_html_()
    _assert_safe(html)
    text = "".join(_parse(html).text)
    # the hostile tokens are there, as text (whitespace shown as ·)
    assert INJECT_SCRIPT in text
    assert INJECT_IMG.replace(" ", "·") in text
    assert 'title="activation 0.9 (firing token)"' in html
    assert html.count("ai-fire") >= len(comp.examples[:8])


def test_component_html_joins_utf8(harvest):
    text = "".join(_parse(harvest["h.0.mlp:1"]._repr_html_()).text)
    assert "—" in text and "é" in text
    assert "â" not in text and "Ã" not in text


def test_dead_component_html(harvest):
    html = harvest[DEAD]._repr_html_()
    _assert_safe(html)
    assert "never fired" in html


def test_example_html_without_token_strings():
    ex = {"token_ids": [5, 6], "activations": [0.0, 1.0], "firing_offset": 1, "sequence_index": 0, "position": 1}
    html = example_html(ex)
    assert "⟨5⟩" in html and "ai-fire" in html


def test_interpretation_html():
    r = InterpretationResult("h.0.mlp:0", INJECT_SCRIPT, "high", INJECT_IMG)
    html = r._repr_html_()
    _assert_safe(html)
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert repr(r).count("\n") == 0


def test_harvest_html(harvest):
    html = harvest._repr_html_()
    _assert_safe(html)
    assert "h.0.mlp" in html and "h.1.mlp" in html
    assert f"{N_COMPONENTS:,} components" in html
    assert "\n" not in repr(harvest)


def test_labeled_component_and_run_view(run):
    view = open_run(run.run_id, run.root.parent)
    assert len(view) == N_COMPONENTS
    lc = view["h.0.mlp:1"]
    assert isinstance(lc, LabeledComponent)
    assert lc.label == "em dash — and café"
    assert lc.score("detection") == 0.55 and lc.score("detection", "shuffled") == 0.5
    assert repr(lc) == "LabeledComponent('h.0.mlp:1', 'em dash — and café', medium, detection=0.55)"
    html = lc._repr_html_()
    _assert_safe(html)
    assert "em dash — and café" in html and "random label" in html
    assert repr(view["h.1.mlp:3"]).startswith("LabeledComponent('h.1.mlp:3', unlabeled")
    assert view["h.1.mlp:0"].score("intruder") == 0.75  # a component-level score stands in for the label's
    run_html = view._repr_html_()
    _assert_safe(run_html)
    assert "HTML-looking tokens &lt;script&gt;" in run_html and "detection" in run_html
    assert "\n" not in repr(view)
    # a run folder works as well as a run id
    assert len(open_run(run.root)) == N_COMPONENTS
    with pytest.raises(KeyError, match="no component"):
        view["nope:0"]


def test_extras_html_renderer(harvest):
    register_extras_renderer("activation_histogram", html=lambda v: f"<b class='hist'>{len(v)} bins</b>")
    try:
        assert "<b class='hist'>5 bins</b>" in harvest["h.0.mlp:0"]._repr_html_()
    finally:
        EXTRAS_RENDERERS.unregister("activation_histogram")
    # generic fallback: escaped JSON
    assert "[0, " in harvest["h.0.mlp:0"]._repr_html_()
