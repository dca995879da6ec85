"""The report's chunk layout: raw tokens plus a table of each distinct token's forms.

A chunk holds the evidence as recorded and, per distinct token, its text in a window,
as a window's first token and alone (`TokenForms`), or its bytes where its text depends
on its neighbours; `expand_chunk` (what report.js's ``expandChunk`` does) must read every
window exactly as `display_tokens` renders it, and every table as the old per-row shaping did.
The browser test (`test_report_browser.py`) checks the viewer against the same renderings.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autointerp.report import numbers
from autointerp.report.page_data import ChunkShaper, expand_chunk
from autointerp.report.run_data import RunData
from autointerp.report.tokens import TokenForms, display_tokens, single_token_text
from autointerp.report.writer import safe_json

#: per style, tokens that read alone and tokens whose text depends on their neighbours
ALPHABETS = {
    "gpt2": ["Ġthe", "Ċ", "âĢ", "Ķ", "Ġcaf", "Ã©", "Ġ", "ĠÐŁ", "ÑĢ", "Ð¸", "ð", "Ł", "ĺ", "Ģ", "<|endoftext|>", "a", "<0xE2>"],
    "sentencepiece": ["▁the", "▁", "<0xE2>", "<0x80>", "<0x94>", "<0xC3>", "<0xA9>", "<0xFF>", "caf", "▁caf", "<s>", "<0x20>"],
    "plain": [" the", "\n", "<0xC3>", "<0xA9>", "x", "é", "", "<0x41>"],
    "byte_level": [" the", "\n", "<0xE2><0x80>", "<0x94>", "<0xC3>", "<0xA9>", "<0xEF><0xBB><0xBF>", " caf", "é", "<0x20>", ""],
    "metaspace": [" the", "the", " ", "<0x20>", "<0xE2>", "<0x80><0x94>", "<0xC3>", "<0xA9>", " caf", "<s>", "."],
    "wordpiece": ["the", "##ing", ".", ",", "'", "n't", "'s", "[CLS]", "##", "a.b", "x .", "", "!"],
}


def _component(key: str, windows: list[list[str]], table_tokens: list[str | None]) -> dict:
    ex = [{"token_ids": list(range(len(w))), "activations": [0.5] * len(w), "firing_offset": 0,
           "sequence_index": 1, "position": 2, "tokens": w} for w in windows]
    row = lambda t, i: {"token_id": i, "count": 12345, "precision": 0.123456, "recall": 1.0, "pmi": -2.5, "token": t}
    stats = {k: [row(t, i) for i, t in enumerate(table_tokens)] for k in ("top_precision", "top_recall", "top_pmi")}
    return {"key": key, "layer": "h.0", "index": 0, "firing_count": 3, "firing_rate": 0.1, "mean_activation": 0.2,
            "max_activation": 0.9, "examples": ex[1:], "top_examples": ex[:1], "input_tokens": stats, "output_tokens": None,
            "output_logits": {"source": "w", "promoted": [{"token_id": 1, "token": t, "logit": 1.23456} for t in table_tokens
                                                          if t is not None], "suppressed": []},
            "correlations": {k: [{"key": "h.0:1", "count": 4, "precision": 0.5, "recall": 0.25, "pmi": 1.5}]
                             for k in ("top_precision", "top_recall", "top_pmi", "bottom_pmi")},
            "extras": {}}


def _shape(style: str, comps: list[dict]) -> list[dict]:
    shaper = ChunkShaper(RunData({"layers": []}, []), style, None)
    chunk, _ = shaper.shape(comps)
    return expand_chunk(json.loads(safe_json(chunk)))  # through the JSON the file holds


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(ALPHABETS)), st.data())
def test_every_window_reads_as_display_tokens(style, data):
    alphabet = ALPHABETS[style]
    windows = data.draw(st.lists(st.lists(st.sampled_from(alphabet), min_size=1, max_size=12), min_size=1, max_size=6))
    # two chunks in one process: the forms learnt in the first must serve the second
    shaper = ChunkShaper(RunData({"layers": []}, []), style, None)
    for part in (windows[: len(windows) // 2], windows[len(windows) // 2 :]):
        if not part:
            continue
        chunk, _ = shaper.shape([_component("h.0:0", [part[0]] + part, alphabet)])
        (d,) = expand_chunk(json.loads(safe_json(chunk)))
        assert [ex["t"] for ex in d["top_examples"] + d["examples"]] == [display_tokens(w, style) for w in [part[0]] + part]


@pytest.mark.parametrize("style", sorted(ALPHABETS))
def test_tables_read_as_before(style):
    alphabet = ALPHABETS[style]
    (d,) = _shape(style, [_component("h.0:0", [alphabet], alphabet + [None])])
    want = [single_token_text(t, style) if t is not None else "⟨%d⟩" % i for i, t in enumerate(alphabet + [None])]
    for table in ("top_precision", "top_recall", "top_pmi"):
        assert [r[0] for r in d["input_tokens"][table]] == want
        assert d["input_tokens"][table][0][1:] == [0, 12340.0, 0.1235, 1.0, -2.5]
    assert [r[0] for r in d["output_logits"]["promoted"]] == want[:-1]
    assert d["output_logits"]["promoted"][0][2] == 1.235
    assert d["correlations"]["bottom_pmi"] == [["h.0:1", 4, 0.5, 0.25, 1.5]]
    assert d["output_tokens"] is None


def test_a_chunk_holds_each_token_once_and_no_rendered_window():
    comps = [_component(f"h.0:{i}", [["Ġthe", "Ġcat", "âĢ", "Ķ"]] * 5, ["Ġthe"]) for i in range(8)]
    chunk, rows = ChunkShaper(RunData({"layers": []}, []), "gpt2", None).shape(comps)
    tt = {r[0]: r for r in chunk["tt"]}
    assert [r[0] for r in chunk["tt"]] == sorted(["Ġcat", "Ġthe", "âĢ", "Ķ"])
    assert tt["Ġthe"] == ["Ġthe", " the", None, " the"]
    assert tt["âĢ"] == ["âĢ", None, None, "<0xE2><0x80>", "e280"]  # its bytes: the viewer joins the run
    ex = chunk["c"][0]["examples"]  # by column, as recorded
    assert ex["t"][0] == ["Ġthe", "Ġcat", "âĢ", "Ķ"] and ex["a"][0] == [0.5] * 4 and ex["f"] == [0] * 4
    assert "i" not in ex and len(rows) == 8


def test_tokens_without_strings_show_ids_and_activations_round_in_the_view():
    comp = _component("h.0:0", [["x"]], [])
    comp["examples"] = [{"token_ids": [7, 8], "activations": [0.0, 0.123456], "firing_offset": 1,
                         "sequence_index": 3, "position": 9, "tokens": None},
                        {"token_ids": [1], "activations": [0.5], "firing_offset": 0, "sequence_index": 4,
                         "position": 0, "tokens": ["x"]},
                        {"token_ids": [5], "activations": [1.0], "firing_offset": 0, "position": 2}]  # fields missing
    (d,) = _shape("plain", [comp])
    assert d["examples"] == [{"t": ["⟨7⟩", "⟨8⟩"], "a": [0, 0.123], "f": 1, "s": 3, "p": 9},
                             {"t": ["x"], "a": [0.5], "f": 0, "s": 4, "p": 0},
                             {"t": ["⟨5⟩"], "a": [1.0], "f": 0, "s": None, "p": 2}]


def test_token_forms_refuse_an_unresolved_style():
    with pytest.raises(ValueError, match="resolved token style"):
        TokenForms("auto")


@pytest.mark.parametrize("fast", [True, False])
def test_the_codec_gives_the_same_values_with_and_without_orjson(monkeypatch, fast):
    if not fast:
        import autointerp.storage as storage

        monkeypatch.setattr(numbers, "_orjson", None)  # the chunk encoder
        monkeypatch.setattr(storage, "_orjson", None)  # the line reader loads() shares with every reader
    elif numbers._orjson is None:
        pytest.skip("orjson is not installed")
    assert numbers.loads(b'{"a": 1, "a": 2}') == {"a": 2}
    with pytest.raises(ValueError):  # invalid UTF-8: refused (UnicodeDecodeError is a ValueError)
        numbers.loads(b'{"t": "\xff"}')
    value = {"a": [1, 2.5, None, "é\u2028<"], "b": {"c": float("nan"), "d": (1, 2)}}
    assert json.loads(numbers.dumps(value)) == {"a": [1, 2.5, None, "é\u2028<"], "b": {"c": None, "d": [1, 2]}}
    assert numbers.loads(b'{"x": [1, 2.5, "\\u00e9"]}') == {"x": [1, 2.5, "é"]}
    assert numbers.loads('{"x": NaN}')["x"] != numbers.loads('{"x": NaN}')["x"]  # read as always, not refused
    with pytest.raises(ValueError):
        numbers.loads(b'{"x": ')
    text = safe_json({"t": "</script>\u2028&"})
    assert "<" not in text and "&" not in text and "\u2028" not in text and json.loads(text) == {"t": "</script>\u2028&"}


def test_a_line_that_is_not_the_one_the_index_names_is_refused():
    """Workers read their lines where the harvest's index says; a file changed in place (same size
    and time, so the index still looks current) must stop the report, naming the index."""
    from autointerp.storage import CorruptRunFile

    lines = [json.dumps(_component(f"h.0:{i}", [["a"]], [])).encode() for i in range(2)]
    shaper = ChunkShaper(RunData({"layers": []}, []), "plain", None, source="components.jsonl")
    _, rows = shaper.shape(lines, ["h.0:0", "h.0:1"])
    assert [r[0] for r in rows] == ["h.0:0", "h.0:1"]
    with pytest.raises(CorruptRunFile, match=r"another line where the harvest's index puts 'h.0:0'.*components.sqlite"):
        shaper.shape(lines[::-1], ["h.0:0", "h.0:1"])


@pytest.mark.parametrize("style", ["gpt2", "metaspace", "wordpiece"])
def test_a_shaper_that_learnt_earlier_chunks_writes_the_table_a_fresh_one_writes(style):
    """The token rows a process made for earlier chunks are kept (made once per process), yet each
    chunk's table holds exactly its own tokens: equal to a fresh shaper's table for that chunk."""
    alphabet = ALPHABETS[style]
    half = len(alphabet) // 2
    chunks = [[_component("h.0:0", [alphabet[:half]], alphabet[:2])], [_component("h.0:1", [alphabet[half:]], [alphabet[-1]])],
              [_component("h.0:2", [alphabet[1:3]], [])]]
    shared = ChunkShaper(RunData({"layers": []}, []), style, None)
    for comps in chunks:
        fresh = ChunkShaper(RunData({"layers": []}, []), style, None)
        got, want = shared.shape(comps)[0]["tt"], fresh.shape(comps)[0]["tt"]
        assert got == want
        own = set(comps[0]["examples"][0]["tokens"] if comps[0]["examples"] else []) | set(comps[0]["top_examples"][0]["tokens"])
        assert {r[0] for r in got} <= own | {r["token"] for r in comps[0]["input_tokens"]["top_pmi"]}
