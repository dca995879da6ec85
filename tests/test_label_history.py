"""What the report and the notebook show of issue 13's evidence, checked below the browser.

A component's refinement rounds and its neighbour-pass label, read back by `autointerp.records`
from a run refined for real (the Anthropic SDK against the local LLM server, `report_fixture.
make_refined_run`); the output scorer's candidate lists as text (by the harvest's tokenizer kind,
with a real WordPiece tokenizer) in the judge's prompt and the report; and the scorers' system
prompts saying how token boundaries read, in the words of the labeller's prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
from report_fixture import HOSTILE_NEIGHBOUR, HOSTILE_REVISION, INJECT_IMG, INJECT_SCRIPT, make_refined_run

from autointerp.paths import RefineFolder
from autointerp.records import read_first_pass, read_interpretations, read_refinement
from autointerp.report import open_run
from autointerp.report.page_data import output_trials_view, refinement_view, vocab_token_view
from autointerp.report.run_data import RunData
from autointerp.schemas import RefinementRound, ScoreResult
from autointerp.scoring.output import OutputCandidates, OutputScorer
from autointerp.scoring.prompts import SCORER_TASKS, ScorerTask, render_request
from autointerp.storage import read_jsonl, read_jsonl_as
from autointerp.token_text import vocab_token_text


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    return make_refined_run(tmp_path_factory.mktemp("runs"))


# -- refinement rounds and the neighbour pass, read back --------------------------------------


def test_every_round_is_read_back_with_what_its_prompt_showed(refined):
    paths, keys, hostile, _, prompts = refined
    hist = read_refinement(paths)
    assert set(hist) == set(keys)
    raw = read_jsonl_as(RefineFolder.of(paths.interpretations).rounds, RefinementRound)
    for key in keys:
        h = hist[key]
        assert [r.round for r in h.rounds] == sorted(r.round for r in raw if r.component_key == key)
        res = read_first_pass(paths).get(key) or read_interpretations(paths)[key]  # the refined label
        assert h.best().round == res.refinement.chosen_round
        assert list(h.shown) == [1]  # the revision round (candidates show no mistakes)
        shown, revised = h.shown[1], h.rounds[0]
        assert shown["revised_from"] == 0
        assert shown["n_misses"] == sum(e["miss"] for e in revised.wrong)
        assert shown["n_false_positives"] == sum(e["false_positive"] for e in revised.wrong)
        # what is recorded is what crossed the wire: one numbered line per window, its marks on the recorded offsets
        misses = prompts[key].split("### Misses", 1)[1].split("Revise the label", 1)[0]
        lines = [l for l in misses.splitlines() if re.match(r"^\d+\. ", l)]
        assert len(lines) == len(shown["misses"]) + len(shown["false_positives"]) > 0
        for line, w in zip(lines, shown["misses"]):
            marked = re.findall(r"<<(.*?)>>", line)
            assert marked and all(w["tokens"][i] in marked for i in w["marked"]), (line, w)
            assert all(a > w["threshold"] for a in (w["activations"][i] for i in w["marked"]))


def test_the_first_pass_is_read_only_where_the_neighbour_pass_won(refined):
    paths, keys, _, neighbour, _ = refined
    first = read_first_pass(paths)
    assert list(first) == [neighbour]
    assert read_interpretations(paths)[neighbour].label == HOSTILE_NEIGHBOUR
    assert first[neighbour].refinement is not None and first[neighbour].label != HOSTILE_NEIGHBOUR


def test_the_page_data_marks_the_kept_round_and_what_each_was_shown(refined):
    paths, keys, hostile, neighbour, _ = refined
    data = RunData.from_run(paths)
    for key in keys:
        view = refinement_view(data.refinement[key], data.interpretations[key], data.first_pass.get(key), "plain")
        res = data.first_pass.get(key) or data.interpretations[key]
        assert view["finished"] and view["kept"] == res.refinement.chosen_round
        assert [r["kept"] for r in view["rounds"]] == [r["round"] == view["kept"] for r in view["rounds"]]
        assert view["rounds"][1]["shown"]["misses"] and view["rounds"][1]["label"] == data.refinement[key].rounds[1].label
    assert refinement_view(data.refinement[hostile], data.interpretations[hostile], None, "plain")["kept"] == 0
    assert refinement_view(None, None, None, "plain") is None


def test_rounds_recorded_before_the_windows_were_still_show_their_counts(refined, tmp_path):
    """A labels.jsonl from before the labels carried what they were shown: counts from the revised round."""
    import shutil

    paths, keys, *_ = refined
    copy = tmp_path / "old"
    shutil.copytree(paths.root, copy)
    labels = RefineFolder.of(copy / "interpretations").labels
    recs = [{k: v for k, v in r.items() if k != "shown"} for r in read_jsonl(labels)]
    labels.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    data = RunData.from_run(copy)
    view = refinement_view(data.refinement[keys[1]], data.interpretations[keys[1]], data.first_pass.get(keys[1]), "plain")
    shown = view["rounds"][1]["shown"]
    assert shown["misses"] is None and shown["n_misses"] == sum(e["miss"] for e in data.refinement[keys[1]].rounds[0].wrong)


def test_the_notebook_view_shows_the_history_escaped(refined):
    paths, keys, hostile, neighbour, _ = refined
    run = open_run(paths)
    html = run[hostile]._repr_html_()
    assert html.count('class="ai-round"') == 2 and "candidate · kept" in html
    assert INJECT_SCRIPT not in html and INJECT_IMG not in html and "\u202e" not in html
    assert "revised &lt;/script&gt;&lt;img" in html and "⟨U+202E⟩" in html
    assert '<details class="ai-shown" data-round="1">' in html and "ai-marked" in html
    other = run[neighbour]._repr_html_()
    first = read_first_pass(paths)[neighbour]
    assert f'The first pass said: <q class="ai-first">{first.label.replace(chr(34), "&quot;")}</q>' in other
    assert "second pass &lt;script&gt;" in other and "⟨U+2067⟩" in other
    assert run[neighbour].first_pass == first and run[hostile].first_pass is None


# -- the output scorer's candidate lists as text ------------------------------------------------


def test_a_vocabulary_token_reads_as_the_text_it_adds():
    assert [vocab_token_text(t, "wordpiece") for t in ["the", "##ing", ".", "[CLS]"]] == [" the", "ing", ".", " [CLS]"]
    assert vocab_token_text(" the", "byte_level") == " the" and vocab_token_text(" the", "metaspace") == " the"
    assert vocab_token_text("<0xE2>", "byte_level") == "<0xE2>"  # a lone byte is not a character
    assert vocab_token_text("Ġthe", None) == "Ġthe"  # no kind: as recorded
    assert vocab_token_view("Ġthe", 3, "gpt2") == " the" and vocab_token_view(None, 3, "gpt2") == "⟨3⟩"
    assert vocab_token_view("##ing", 3, "wordpiece") == "ing"


def _output_prompt_lists(prompt: str) -> list[list[str]]:
    return [json.loads(l.split(": ", 1)[1]) for l in prompt.splitlines() if l.startswith("List ")]


def test_the_judge_reads_wordpiece_candidates_as_text_and_a_kindless_task_keeps_key_and_prompt():
    pytest.importorskip("tokenizers")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_token_text import wordpiece

    from autointerp.data import Tokenizer as OurTokenizer

    tok = wordpiece()
    ours = OurTokenizer(tok)
    ids = tok.encode("the licensing isn't it").ids
    recorded = [ours.decode(i) for i in ids]
    assert any(t.startswith("##") for t in recorded)
    task = ScorerTask("output", "x", [recorded, recorded[::-1]], None, "wordpiece")
    lists = _output_prompt_lists(render_request(task).prompt)
    assert lists[0] == [vocab_token_text(t, "wordpiece") for t in recorded]
    assert not any(t.startswith("##") for l in lists for t in l)
    # without a kind (an older harvest): the recorded strings, and the key of before (no token_kind in it)
    plain = ScorerTask("output", "x", [recorded], None, None)
    assert _output_prompt_lists(render_request(plain).prompt) == [recorded]
    assert "token_kind" not in plain.to_dict()


def test_output_trials_record_their_tokens_without_changing_the_trial_key(tmp_path):
    from scoring_helpers import synthetic_output_harvest

    from autointerp.scoring.base import Trial

    model, harvest = synthetic_output_harvest(seed=1, source="weights")
    comps = list(harvest)
    cands = OutputCandidates(comps)
    sc = OutputScorer()
    from autointerp.scoring.evidence import ComponentEvidence

    c = comps[0]
    ev = ComponentEvidence(c.key, c.index, c.firing_rate, 0.0, firing_count=c.firing_count)
    [t0, *_] = sc.trials(ev, "a label", context=cands)
    assert all(ref["tokens"] == list(cands.get(ref["component_key"]).tokens) for ref in t0.refs)
    # the key hashes the task and the truth only, as before the lists carried their tokens
    blob = json.dumps([t0.task.to_dict(), t0.truth], sort_keys=True, ensure_ascii=False)
    assert t0.key.endswith(hashlib.sha256(blob.encode()).hexdigest()[:12])
    assert Trial(t0.scorer, t0.component_key, t0.label_source, t0.index, t0.task, t0.truth, []).key == t0.key
    # the result says which list was the component's and which the judge picked; the report reads them as text
    recs = [{"trial": 0, "answer": 2, "truth": t0.truth, "refs": t0.refs, "usage": {}}]
    res = sc.result(c.key, "label", "a label", recs)
    assert res.details["trials"] == [{"truth": t0.truth["list"], "answer": 2}]
    [view] = output_trials_view(res, "plain")
    assert view["truth"] == t0.truth["list"] and view["answer"] == 2
    assert [l["t"] for l in view["lists"]] == [list(cands.get(r["component_key"]).tokens) for r in t0.refs]
    old = ScoreResult(c.key, "output", "label", "a label", 0.5, details={"windows": [t0.refs]})
    assert output_trials_view(old, "plain") is None  # scored before trials were recorded: nothing to show


# -- the scorers' system prompts say how token boundaries read ----------------------------------


def _system(task: str, kind: str | None) -> str:
    marks = [[0]] if task in ("fuzzing", "intruder") else None
    return render_request(ScorerTask(task, "x", [["a"]], marks, kind)).system


def test_scorer_system_prompts_say_how_token_boundaries_read_like_the_labellers():
    from autointerp.prompts import environment, load_template

    labeller = load_template(environment(), "interpret.j2")
    for task in SCORER_TASKS:
        texts = {kind: _system(task, kind) for kind in (None, "byte_level", "wordpiece", "metaspace")}
        assert len(set(texts.values())) >= 2, task  # the kind changes what the judge is told
        for kind, text in texts.items():
            assert ("leading space is part of the token" in text) == (kind is None), (task, kind)
    # running-text excerpts: the labeller's own words
    src = Path(labeller.filename).read_text(encoding="utf-8")
    for phrase in ("pieces of one word are joined and words are separated", "a marked token may be part of a word",
                   "a token that starts a word includes the space before it"):
        assert phrase in " ".join(src.split())
    assert "pieces of one word are joined and words are separated by spaces; a marked token may be part of a word" in _system("fuzzing", "wordpiece")
    assert "a token that starts a word includes the space before it, so a marked token" in _system("intruder", "metaspace")
    assert "a marked token" not in _system("detection", "wordpiece")  # detection marks nothing
    assert "the text it adds after a text" in _system("output", "wordpiece")
    assert "one token's text" in _system("simulation", "byte_level")


def test_the_run_data_reads_a_components_refinement_when_asked_for(refined):
    """`RunData.from_run` keeps where each refined component's rounds lie, not the rounds: a history is
    read (and structured) when the page asks for it, one component's lines, equal to the whole read."""
    import pickle

    from autointerp.records import RefinementIndex

    paths, keys, *_ = refined
    data = RunData.from_run(paths)
    index = data.refinement
    assert isinstance(index, RefinementIndex) and index.reads == 0
    assert sorted(index) == sorted(keys) and len(index) == len(keys) and keys[0] in index and "nope:1" not in index
    whole = read_refinement(paths)
    assert index[keys[1]] == whole[keys[1]] and index.reads == 1  # one component read, the others not
    assert index.get("nope:1") is None and index.reads == 1
    # a report's worker process gets the index (paths and offsets) and reads the same
    copy = pickle.loads(pickle.dumps(data.without_components().refinement))
    assert {k: copy[k] for k in copy} == whole
    assert read_refinement(paths, keys=[keys[0]]) == {keys[0]: whole[keys[0]]}


def test_a_damaged_round_is_refused_naming_its_line(refined, tmp_path):
    import shutil

    from autointerp.records import RefinementIndex
    from autointerp.storage import CorruptRunFile

    paths, keys, *_ = refined
    copy = tmp_path / "bad"
    shutil.copytree(paths.root, copy)
    rounds = RefineFolder.of(copy / "interpretations").rounds
    lines = rounds.read_text(encoding="utf-8").splitlines(keepends=True)
    rec = json.loads(lines[0])
    rec["round"] = "first"
    rounds.write_text(json.dumps(rec) + "\n" + "".join(lines[1:]), encoding="utf-8")
    index = RefinementIndex(RefineFolder.of(copy / "interpretations"))
    with pytest.raises(CorruptRunFile, match=r"rounds.jsonl, line 1: breaks the schema"):
        index[rec["component_key"]]
    rounds.write_text("{\n" + "".join(lines[1:]), encoding="utf-8")
    with pytest.raises(CorruptRunFile, match=r"rounds.jsonl, line 1: not JSON"):
        RefinementIndex(RefineFolder.of(copy / "interpretations"))


def test_one_read_gives_the_labels_and_the_first_pass_of_two(tmp_path):
    """read_labels_and_first_pass (what the report reads) equals read_interpretations and read_first_pass,
    values and order, over a results file with re-labels, empty labels and neighbour passes."""
    import random

    from autointerp.records import NEIGHBOURS_TAG, read_labels_and_first_pass
    from autointerp.schemas import InterpretationResult
    from autointerp.storage import append_jsonl

    rng = random.Random(3)
    path = tmp_path / "results.jsonl"
    for i in range(300):
        key = f"h.0:{rng.randrange(12)}"
        append_jsonl(path, InterpretationResult(key, rng.choice(["", " ", f"label {i}"]), "high", "",
                                                template_name="t" + (NEIGHBOURS_TAG if rng.random() < 0.4 else "")))
    labels, first = read_labels_and_first_pass(path)
    assert list(labels.items()) == list(read_interpretations(path).items())
    assert list(first.items()) == list(read_first_pass(path).items()) and first
