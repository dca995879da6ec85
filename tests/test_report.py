"""The static report writer: token display, safe JSON, the files it writes, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from report_fixture import DEAD, INJECT_IMG, INJECT_SCRIPT, N_COMPONENTS, make_harvest, make_run

from autointerp import InterpretationResult, ScoreResult
from autointerp.cli import main
from autointerp.records import group_scores
from autointerp.report import RunData, register_extras_renderer, safe_json, write_report, write_report_from_data
from autointerp.report.extras import EXTRAS_RENDERERS, ExtrasRegistry, ExtrasRenderer
from autointerp.report.layer_index import histogram, percentiles
from autointerp.report.page_data import ReportOptions, expand_chunk
from autointerp.report.tokens import detect_token_style, display_tokens, single_token_text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def report(run):
    return write_report(run)


def _load(path: Path, fn: str):
    text = path.read_text(encoding="utf-8")
    m = re.fullmatch(rf"{fn}\((.*?),(.*)\);\n", text, flags=re.S)
    assert m, text[:200]
    return json.loads(m.group(1)), json.loads(m.group(2))


def _manifest(index: Path) -> dict:
    text = index.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="autointerp-manifest">(.*?)</script>', text, flags=re.S)
    return json.loads(m.group(1))


def _detail(index: Path, key: str) -> dict:
    for p in sorted((index.parent / "data" / "c").glob("*.js")):
        _, chunk = _load(p, "AUTOINTERP_CHUNK")
        for c in expand_chunk(chunk):  # raw tokens and the chunk's token table, read as the viewer does
            if c["key"] == key:
                return c
    raise KeyError(key)


# -- tokens ----------------------------------------------------------------------------


def test_gpt2_tokens_join_split_characters():
    # "—" is E2 80 94, spelled "âĢ" + "Ķ" by GPT-2's byte-to-unicode table
    assert display_tokens(["Ġthe", "Ċ", "âĢ", "Ķ", "Ġcaf", "Ã©"]) == [" the", "\n", "", "—", " caf", "é"]
    assert "".join(display_tokens(["ĠÐŁ", "ÑĢ", "Ð¸"])) == " При"


def test_sentencepiece_byte_tokens_join():
    assert display_tokens(["▁I", "▁", "<0xE2>", "<0x9C>", "<0x93>", "▁ok"]) == [" I", " ", "", "", "✓", " ok"]


def test_plain_tokens_and_byte_tokens():
    assert display_tokens(["caf", "<0xC3>", "<0xA9>", "!"], "plain") == ["caf", "", "é", "!"]
    # a window cut mid-character: the orphan bytes show as U+FFFD, never as mojibake
    assert display_tokens(["<0xA9>", "x", "<0xE2>"]) == ["\ufffd", "x", "\ufffd"]


def test_detect_token_style():
    assert detect_token_style(["Ġthe", "cat"]) == "gpt2"
    assert detect_token_style(["▁the", "cat"]) == "sentencepiece"
    assert detect_token_style([" the", "cat"]) == "plain"


def test_single_token_text():
    assert single_token_text("Ċ", "gpt2") == "\n"
    assert single_token_text("<0xE2>", "gpt2") == "<0xE2>"
    assert single_token_text("Ã©", "gpt2") == "é"
    # a special token spelled in plain text stays itself
    assert single_token_text("<|endoftext|>", "gpt2") == "<|endoftext|>"


def test_unknown_token_style_is_refused():
    with pytest.raises(ValueError, match="token_style"):
        display_tokens(["a"], "bpe")


# -- JSON embedding --------------------------------------------------------------------


@pytest.mark.parametrize("s", [INJECT_IMG, INJECT_SCRIPT, "a\u2028b\u2029c", "<!-- x", "]]> & &amp;"])
def test_safe_json_round_trips_and_cannot_close_a_script(s):
    text = safe_json({"t": [s]})
    assert json.loads(text) == {"t": [s]}
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text


def test_safe_json_writes_nan_as_null():
    # JSON has no NaN; JavaScript's JSON.parse would refuse the file
    assert safe_json({"a": [1.0, float("nan"), float("-inf")]}) == '{"a":[1.0,null,null]}'


# -- the written report ----------------------------------------------------------------


def test_report_files(report, run):
    assert report == run.report / "index.html"
    root = report.parent
    assert (root / "assets" / "report.js").is_file()
    assert (root / "assets" / "report.css").is_file()
    assert sorted(p.name for p in (root / "data").glob("layer-*.js")) == ["layer-0.js", "layer-1.js"]
    html = report.read_text(encoding="utf-8")
    # nothing from the network
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "http://" not in (root / "assets" / "report.css").read_text() and "@import" not in (root / "assets" / "report.css").read_text()


def test_manifest(report):
    m = _manifest(report)
    assert m["n_components"] == N_COMPONENTS
    assert m["n_labeled"] == N_COMPONENTS - 2
    assert m["n_failures"] == 1
    assert m["scorers"] == ["detection", "intruder"]
    assert m["score_means"]["intruder"] == {"none": {"mean": 0.75, "n": 2}}
    assert [l["name"] for l in m["layers"]] == ["h.0.mlp", "h.1.mlp"]
    assert [l["n"] for l in m["layers"]] == [6, 4]
    assert m["token_style"] == "gpt2"
    means = m["score_means"]["detection"]
    assert means["shuffled"]["mean"] == 0.5 and means["token_lookup"]["mean"] == 0.55
    assert means["label"]["n"] == N_COMPONENTS - 2
    assert m["layers"][0]["hist"]["dead"] == 1


def test_layer_index_rows(report):
    li, idx = _load(report.parent / "data" / "layer-0.js", "AUTOINTERP_LAYER")
    assert li == 0
    assert idx["keys"] == [f"h.0.mlp:{i}" for i in range(6)]
    assert idx["label"][5] is None and idx["rate"][5] == 0
    assert idx["scores"]["detection"][0] == 0.5
    _, idx1 = _load(report.parent / "data" / "layer-1.js", "AUTOINTERP_LAYER")
    assert idx1["scores"]["intruder"] == [0.75, 0.75, None, None]
    assert len(idx["pct"]) == 6 and min(idx["pct"]) > 0 and max(idx["pct"]) <= 100


def test_component_detail(report, run):
    harvest = make_harvest()
    d = _detail(report, "h.0.mlp:1")
    comp = harvest["h.0.mlp:1"]
    assert len(d["examples"]) == len(comp.examples)
    assert len(d["top_examples"]) == len(comp.top_examples)
    assert d["interp"]["label"] == "em dash — and café"
    assert d["scores"]["detection"]["shuffled"]["score"] == 0.5
    text = ["".join(ex["t"]) for ex in d["examples"] + d["top_examples"]]
    assert any("—" in t for t in text) and any(" café" in t for t in text)
    assert not any("â" in t or "Ã" in t for t in text), "GPT-2 byte characters leaked into the text"
    for ex in d["examples"]:
        assert ex["a"][ex["f"]] > 0
    assert set(d["input_tokens"]) == {"top_precision", "top_recall", "top_pmi"}
    assert d["correlations"]["top_pmi"] and d["correlations"]["top_pmi"][0][0].startswith("h.")
    assert d["extras"]["activation_histogram"] and sum(d["extras"]["activation_histogram"]) == comp.firing_count
    dead = _detail(report, DEAD)
    assert dead["firing_count"] == 0 and dead["examples"] == [] and dead["interp"] is None


def test_no_raw_injection_anywhere(report):
    for p in report.parent.rglob("*"):
        if p.is_file() and p.suffix in (".js", ".html"):
            text = p.read_text(encoding="utf-8")
            assert INJECT_IMG not in text and INJECT_SCRIPT not in text, p
    for p in (report.parent / "data").rglob("*.js"):
        assert "<" not in p.read_text(encoding="utf-8"), f"{p} holds a raw '<'"


def test_report_is_replaced_whole(run, tmp_path):
    out = tmp_path / "rep"
    write_report(run, out)
    stale = out / "data" / "stale.js"
    stale.write_text("x")
    write_report(run, out, chunk_size=3)
    assert not stale.exists()
    assert sorted(p.name for p in (out / "data" / "c").glob("*.js")) == ["0.js", "1.js", "2.js", "3.js"]
    assert _manifest(out / "index.html")["n_chunks"] == 4


def test_worker_processes_write_the_same_report(run, tmp_path):
    one = write_report(run, tmp_path / "one", chunk_size=3)
    two = write_report(run, tmp_path / "two", chunk_size=3, workers=2)
    files = sorted(p.relative_to(one.parent) for p in one.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two.parent) for p in two.parent.rglob("*") if p.is_file())
    for f in files:
        assert (one.parent / f).read_bytes() == (two.parent / f).read_bytes(), f


def test_write_report_from_objects(tmp_path):
    harvest = make_harvest()
    interps = [InterpretationResult(k, f"label {k}", "low", "because") for k in harvest.keys()[:3]]
    scores = [ScoreResult(k, "fuzzing", "label", f"label {k}", 0.7) for k in harvest.keys()[:3]]
    index = write_report_from_data(RunData.from_objects(harvest, interps, scores), tmp_path / "r", title="my <title>")
    m = _manifest(index)
    assert m["n_labeled"] == 3 and m["scorers"] == ["fuzzing"] and m["title"] == "my <title>"
    assert "<title>my &lt;title&gt;</title>" in index.read_text()
    # write_report takes a run folder; objects in memory go through write_report_from_data
    with pytest.raises(TypeError, match="write_report_from_data"):
        write_report(harvest)


def test_missing_harvest_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="autointerp harvest"):
        write_report(tmp_path / "nope")


def test_skipped_score_does_not_hide_a_real_one():
    g = group_scores([ScoreResult("a:0", "det", "label", "x", 0.8), ScoreResult("a:0", "det", "label", "x", None, skipped=True, reason="r")])
    assert g["det"]["a:0"]["label"].score == 0.8


def test_percentiles_and_histogram():
    assert percentiles([0.0, 0.1, 0.1, 0.3]) == [12.5, 50.0, 50.0, 87.5]
    h = histogram([0.0, 0.001, 0.01, 0.1])
    assert h["dead"] == 1 and sum(h["counts"]) == 3 and h["lo"] == -3 and h["hi"] == -1
    assert histogram([0.0])["counts"] == []


def test_extras_renderer_registry(run, tmp_path):
    js = 'AUTOINTERP.registerExtras("activation_histogram", function (v, box, h) { box.appendChild(h.el("b", {class: "custom"}, "n=" + v.length)); });'
    register_extras_renderer("toy_extra", js)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_extras_renderer("toy_extra", js)
        index = write_report(run, tmp_path / "r", extras_renderers={"activation_histogram": js})
        html = index.read_text()
        assert '<script src="assets/extras/activation_histogram.js"></script>' in html
        assert '<script src="assets/extras/toy_extra.js"></script>' in html
        assert (index.parent / "assets" / "extras" / "activation_histogram.js").read_text() == js
        assert _manifest(index)["extras_renderers"] == ["activation_histogram", "toy_extra"]
    finally:
        EXTRAS_RENDERERS.unregister("toy_extra")


def test_run_data_reads_tolerantly(run):
    data = RunData.from_run(run)
    assert len(data.components) == N_COMPONENTS
    assert data.n_failures == 1
    # the torn last line of scores/detection.jsonl is dropped
    assert len(data.scores["detection"]) == N_COMPONENTS - 2


def test_cli_report(run, capsys):
    rc = main(["report", run.run_id, "--out", str(run.root.parent)])
    out = capsys.readouterr()
    assert rc == 0
    assert out.out.strip() == str((run.report / "index.html").resolve())
    assert "open" in out.err


def test_cli_report_missing_run(tmp_path, capsys):
    rc = main(["report", "nope", "--out", str(tmp_path)])
    assert rc == 2
    assert "no harvest" in capsys.readouterr().err


def test_demo_stage(run):
    from types import SimpleNamespace

    from autointerp.report import demo_stage

    lines: list[str] = []
    demo = SimpleNamespace(paths=run, results={}, log=lines.append)
    demo_stage(demo)
    assert demo.results["report"] == run.report / "index.html"
    assert str((run.report / "index.html").resolve()) in lines[0]


# -- seams: the extras registry, the options, the one reader of a run ------------------


def test_extras_registry_refuses_duplicates_and_merges_overrides():
    reg = ExtrasRegistry((ExtrasRenderer("a", js="A1"),))
    with pytest.raises(ValueError, match="'a' is already registered"):
        reg.register(ExtrasRenderer("a", js="A2"))
    reg.register(ExtrasRenderer("a", js="A2"), replace=True)
    reg.register(ExtrasRenderer("html_only", html=str))
    assert reg["a"].js == "A2" and sorted(reg) == ["a", "html_only"]
    # a report's own renderers go on top; a renderer without JS gives the page nothing
    assert reg.scripts({"b": "B", "a": ExtrasRenderer("a", js="A3")}) == {"a": "A3", "b": "B"}
    assert reg.unregister("a").js == "A2" and reg.unregister("a") is None and "a" not in reg


def test_report_options_name_the_bad_argument(run, tmp_path):
    with pytest.raises(ValueError, match="token_style must be one of"):
        ReportOptions(token_style="bpe")
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        write_report(run, tmp_path / "r", chunk_size=0)
    with pytest.raises(TypeError, match="colour"):
        write_report(run, tmp_path / "r", colour="red")


def test_the_last_label_of_a_component_wins(tmp_path):
    from autointerp.storage import append_jsonl

    paths = make_run(tmp_path)
    append_jsonl(paths.interpretation_results, InterpretationResult("h.0.mlp:2", "a newer label", "high", "r"))
    append_jsonl(paths.interpretation_results, InterpretationResult("h.0.mlp:2", "", "low", "an empty label is no result"))
    _, idx = _load(write_report(paths).parent / "data" / "layer-0.js", "AUTOINTERP_LAYER")
    assert idx["label"][2] == "a newer label"


def test_a_corrupt_line_is_an_error_naming_the_file(tmp_path):
    from autointerp.records import CorruptRunFile

    paths = make_run(tmp_path)
    text = paths.interpretation_results.read_text(encoding="utf-8").splitlines(keepends=True)
    paths.interpretation_results.write_text(text[0] + "not json\n" + "".join(text[1:]), encoding="utf-8")
    with pytest.raises(CorruptRunFile, match=r"results.jsonl, line 2"):
        write_report(paths)


def test_notebook_views_show_bidi_controls_as_escapes():
    """The notebook views, like the browser report (tests/test_report_browser.py), never obey a bidi control."""
    from autointerp.report.notebook import example_html, interpretation_html
    from autointerp.schemas import ActivationExample

    label = "names \u2067ending\u2069 in \u202eexe.txt"
    html = interpretation_html(InterpretationResult("h.0.mlp:0", label, "high", "reads \u202ebackwards"))
    assert "\u202e" not in html and "\u2067" not in html
    assert "⟨U+202E⟩exe.txt" in html and "⟨U+2067⟩ending⟨U+2069⟩" in html
    ex = ActivationExample(sequence_index=0, position=1, token_ids=[1, 2], activations=[0.0, 1.0],
                           tokens=[" report\u202efdp.exe", "."], firing_offset=1)
    shown = example_html(ex, style="plain")
    assert "\u202e" not in shown and "⟨U+202E⟩" in shown


def test_a_worker_checks_each_line_it_parses(tmp_path):
    """`report --workers` sends raw lines to the workers; each is parsed and, unless the harvest's
    index vouches for the file, structured as a ComponentData there: damage is a CorruptRunFile."""
    from autointerp.report.page_data import ChunkShaper
    from autointerp.storage import CorruptRunFile, to_dict

    comp = make_harvest()[0]
    good = json.dumps(to_dict(comp)).encode() + b"\n"
    bad = json.dumps({**to_dict(comp), "firing_count": "many"}).encode() + b"\n"
    data = RunData({"layers": []}, [])
    checking = ChunkShaper(data, "plain", None, check_schema=True, source=str(tmp_path / "components.jsonl"))
    chunk, rows = checking.shape([good])
    assert chunk["c"][0]["key"] == comp.key and rows[0][0] == comp.key
    with pytest.raises(CorruptRunFile, match=rf"components.jsonl: the record of '{re.escape(comp.key)}' breaks the schema"):
        checking.shape([good, bad])
    with pytest.raises(CorruptRunFile, match="a line that is not JSON"):
        checking.shape([good[:-20] + b"\n"])
    # without the check (the index vouches), the same line is shaped as it is
    assert ChunkShaper(data, "plain", None).shape([bad])[0]["c"][0]["firing_count"] == "many"


def test_a_run_on_disk_is_schema_checked_by_its_index(run):
    data = RunData.from_run(run)
    assert data.schema_checked and data.store() is not None
    assert RunData.from_objects(make_harvest()).schema_checked
