"""The judge's prompts read as the text too (issue 12 item 3): WordPiece ``##``, SentencePiece ``▁`` and split
UTF-8 bytes rendered by `autointerp.token_text`, marks and per-token alignment kept; real `tokenizers` objects."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")
sys.path.insert(0, str(Path(__file__).parent))
from test_token_text import KINDS, SENTENCES, byte_level, harvest_with, wordpiece  # noqa: E402

from autointerp.data import Tokenizer as OurTokenizer  # noqa: E402
from autointerp.scoring.base import with_token_kind  # noqa: E402
from autointerp.scoring.detection import DetectionConfig, DetectionScorer  # noqa: E402
from autointerp.scoring.options import ScoringConfig  # noqa: E402
from autointerp.scoring.plan import EvidenceCache  # noqa: E402
from autointerp.scoring.prompts import (  # noqa: E402
    NEWLINE_SHOWN,
    ScorerTask,
    _marked_parts,
    render_request,
    render_text,
)
from autointerp.scoring.token_match import TokenMatchBackend  # noqa: E402
from autointerp.token_text import segments  # noqa: E402


def recorded(make, sentence):
    tok = make()
    ours = OurTokenizer(tok)
    ids = tok.encode(sentence).ids
    return [ours.decode(i) for i in ids], tok.decode(ids, skip_special_tokens=False), ours.kind


def example_line(prompt: str, n: int = 1) -> str:
    line = next(l for l in prompt.splitlines() if l.startswith(f"Example {n}: "))
    return line[len(f"Example {n}: "):]


@pytest.mark.parametrize("make,kind", KINDS, ids=[k[0].__name__ for k in KINDS])
def test_fuzzing_text_decodes_like_the_tokenizer_with_the_marks_on_the_tokens(make, kind):
    for sentence in SENTENCES[:3]:
        strings, want, got_kind = recorded(make, sentence)
        assert got_kind == kind
        marks = [i for i in range(len(strings)) if i % 3 == 1]
        prompt = render_request(ScorerTask("fuzzing", "a label", [strings], [marks], kind)).prompt
        parts = _marked_parts(example_line(prompt))
        assert "".join(p for p, _ in parts) == want.replace("\n", NEWLINE_SHOWN), sentence
        # each mark holds the text of marked tokens only, never a separating space
        shown = {i: t for t, i in segments(strings, kind) if i is not None}
        marked_text = [p for p, inside in parts if inside]
        assert all(p.strip() == p or kind != "wordpiece" for p in marked_text)
        expect, carry = [], False  # a token that shows no text hands its mark to the next one
        for i in range(len(strings)):
            on = carry or i in marks
            carry = on and not shown[i]
            if on and shown[i]:
                expect.append(shown[i])
        assert "".join(marked_text) == "".join(expect)


def test_wordpiece_loses_its_hashes_and_keeps_spaces_outside_marks():
    strings, want, kind = recorded(wordpiece, "This license shall be governed by California law.")
    pieces = [i for i, s in enumerate(strings) if s.startswith("##")]
    assert pieces  # the sentence really splits words
    word = pieces[0] - 1
    text = render_text(strings, [word, pieces[0]], kind)
    assert "##" not in text and text.replace("<<", "").replace(">>", "") == want
    assert f" <<{strings[word]}>><<{strings[pieces[0]][2:]}>>" in text
    glued = render_text(strings, [word], None)  # an old harvest (no kind): as recorded
    assert "##" in glued


def test_a_mark_on_the_first_byte_of_a_character_lands_on_the_character():
    strings, want, kind = recorded(byte_level, "— ok")
    assert len(strings) >= 2 and strings[0].startswith("<0x")  # the dash is split over tokens
    text = render_text(strings, [0], kind)
    assert "<<>>" not in text and text.startswith("<<—>>")


@pytest.mark.parametrize("make,kind", KINDS, ids=[k[0].__name__ for k in KINDS])
def test_simulation_keeps_one_entry_per_token_and_reads_as_the_text(make, kind):
    strings, want, _ = recorded(make, SENTENCES[1])
    prompt = render_request(ScorerTask("simulation", "x", [strings], None, kind)).prompt
    line = next(l for l in prompt.splitlines() if l.startswith("Window 1 "))
    shown = json.loads(line.split(": ", 1)[1])
    assert len(shown) == len(strings) and f"({len(strings)} tokens)" in line
    assert "".join(shown) == want
    assert not any(s.startswith("##") for s in shown)


def test_a_task_without_a_kind_keeps_its_trial_key():
    t = ScorerTask("detection", "x", [["a"]])
    assert "token_kind" not in t.to_dict()
    assert ScorerTask.from_dict(ScorerTask("detection", "x", [["a"]], None, "wordpiece").to_dict()).token_kind == "wordpiece"


def test_scoring_a_wordpiece_harvest_shows_the_judge_text():
    harvest, ids, _, tok = harvest_with(wordpiece, "Aalto's e-mail: debian@lists.debian.org, isn't it?", "debian")
    ev = EvidenceCache(harvest, ScoringConfig(), seed=0).full(harvest["h.0.mlp:0"])
    assert ev.token_kind == "wordpiece"
    # detection with the (one) top example as its window: the evidence split is not under test here
    from autointerp.scoring.evidence import _example_window

    comp = harvest["h.0.mlp:0"]
    ev.positives = [_example_window(comp.top_examples[0], "holdout_top", 0, 0.0, None)]
    ev.negatives = [_example_window(comp.top_examples[0], "holdout_top", 0, 0.0, None)]
    sc = DetectionScorer(DetectionConfig(min_positives=1, min_negatives=1))
    trials = with_token_kind(sc.trials(ev, 'the token "debian"'), ev)
    prompt = trials[0].job().request.prompt
    line = example_line(prompt)
    assert "##" not in line and "@ lists. debian. org" in line, line
    # the token-match baseline reads the same tokens as text
    import asyncio

    resp = asyncio.run(TokenMatchBackend().complete(trials[0].job().request))
    assert resp.data["matches"] == [True] * len(trials[0].task.windows)


def test_run_view_component_knows_its_token_kind(tmp_path):
    from autointerp.paths import RunPaths
    from autointerp.report import LabeledComponent, open_run

    harvest, _, _, _ = harvest_with(wordpiece, "Aalto's e-mail: debian@lists.debian.org, isn't it?", "debian")
    paths = RunPaths.at(tmp_path / "run")
    harvest.save(paths.harvest)
    lc = open_run(tmp_path / "run")["h.0.mlp:0"]
    assert lc.token_kind == "wordpiece"
    html = lc._repr_html_()
    assert "##" not in html
    comp = lc.component
    assert any(t.startswith("##") for e in comp.top_examples for t in e.tokens)  # the pieces were recorded
    assert "##" in LabeledComponent(comp, token_kind=None)._repr_html_()  # and shown as such without the kind
