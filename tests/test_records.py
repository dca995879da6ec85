"""records.py: the one reader of a run's JSONL records, its corruption policy and its winning rule."""

from __future__ import annotations

import json

import pytest

from autointerp.paths import RunPaths
from autointerp.records import (
    CorruptRunFile,
    count_failures,
    group_scores,
    read_interpretations,
    read_labels,
    read_scores,
)
from autointerp.schemas import InterpretationResult, ScoreResult
from autointerp.storage import append_jsonl


def _interp(key: str, label: str) -> InterpretationResult:
    return InterpretationResult(component_key=key, label=label, confidence="high", reasoning="r")


def _score(key: str, source: str, value: float | None, skipped: bool = False) -> ScoreResult:
    return ScoreResult(component_key=key, scorer="detection", label_source=source, label="x",
                       score=value, skipped=skipped, reason="no windows" if skipped else "")


def test_last_non_empty_label_wins(tmp_path):
    run = RunPaths(tmp_path)
    for rec in (_interp("a:0", "first"), _interp("b:0", "only"), _interp("a:0", "second"), _interp("a:0", "")):
        append_jsonl(run.interpretation_results, rec)
    got = read_interpretations(run)
    assert {k: r.label for k, r in got.items()} == {"a:0": "second", "b:0": "only"}
    # the same answer whichever way the source is named
    assert read_labels(run.interpretations) == read_labels(run.interpretation_results) == {"a:0": "second", "b:0": "only"}


def test_keys_and_order(tmp_path):
    run = RunPaths(tmp_path)
    for k in ("a:0", "b:0", "c:0"):
        append_jsonl(run.interpretation_results, _interp(k, k.upper()))
    assert list(read_interpretations(run, order=["c:0", "a:0"])) == ["c:0", "a:0", "b:0"]
    assert list(read_interpretations(run, keys=["b:0"])) == ["b:0"]


def test_missing_file_is_empty(tmp_path):
    assert read_interpretations(RunPaths(tmp_path)) == {}
    assert read_scores(RunPaths(tmp_path)) == {}


def test_torn_last_line_is_dropped(tmp_path):
    run = RunPaths(tmp_path)
    append_jsonl(run.interpretation_results, _interp("a:0", "A"))
    with open(run.interpretation_results, "ab") as f:
        f.write(b'{"component_key": "b:0", "lab')  # killed mid-line
    assert read_labels(run) == {"a:0": "A"}
    assert run.interpretation_results.read_bytes().endswith(b'"lab')  # a reader never changes the file
    # the next writer repairs it: the torn text (never reported as written) is cut, the new record is whole
    append_jsonl(run.interpretation_results, _interp("c:0", "C"))
    assert read_labels(run) == {"a:0": "A", "c:0": "C"}
    assert b'"b:0"' not in run.interpretation_results.read_bytes()


def test_a_whole_last_record_without_its_newline_is_kept_by_the_next_writer(tmp_path):
    """Readers count a last line that parses, so the writer completes it rather than cutting it."""
    run = RunPaths(tmp_path)
    append_jsonl(run.interpretation_results, _interp("a:0", "A"))
    with open(run.interpretation_results, "ab") as f:
        f.write(json.dumps({"component_key": "b:0", "label": "B", "confidence": "high", "reasoning": ""}).encode())
    assert read_labels(run) == {"a:0": "A", "b:0": "B"}
    append_jsonl(run.interpretation_results, _interp("c:0", "C"))
    assert read_labels(run) == {"a:0": "A", "b:0": "B", "c:0": "C"}


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"component_key": 7}, "expected a string, got the int 7 @ $.component_key"),
        ({"usage": "abc"}, "expected a TokenUsage object, got the str 'abc' @ $.usage"),
        ({"usage": {"input_tokens": "5"}}, "expected an integer, got the str '5' @ $.usage.input_tokens"),
        ({"usage": {"input_tokens": True}}, "expected an integer, got the bool True @ $.usage.input_tokens"),
        ({"elapsed_s": "1.5"}, "expected a number, got the str '1.5' @ $.elapsed_s"),
    ],
)
def test_a_record_of_the_wrong_types_breaks_the_schema(tmp_path, record, problem):
    """The converter used to coerce these (7 became the key "7", "abc" became an empty usage)."""
    run = RunPaths(tmp_path)
    good = {"component_key": "a:0", "label": "A", "confidence": "high", "reasoning": ""}
    append_jsonl(run.interpretation_results, {**good, **record})
    with pytest.raises(CorruptRunFile, match="line 1: breaks the schema") as e:
        read_labels(run)
    assert problem in str(e.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"[1, 2, 3]", "a JSON list, not an object"),
        (b"not json at all", "not JSON"),
        (b'{"component_key": "b:0"}', "breaks the schema"),
        (b'{"component_key": "b:0", "label": "x", "confidence": "h", "reasoning": "", "usage": {"input_tokens": "many"}}', "breaks the schema"),
    ],
)
def test_bad_line_in_the_middle_names_file_and_line(tmp_path, line, problem):
    run = RunPaths(tmp_path)
    append_jsonl(run.interpretation_results, _interp("a:0", "A"))
    with open(run.interpretation_results, "ab") as f:
        f.write(line + b"\n")
    append_jsonl(run.interpretation_results, _interp("c:0", "C"))
    with pytest.raises(CorruptRunFile) as e:
        read_interpretations(run)
    msg = str(e.value)
    assert str(run.interpretation_results) in msg and "line 2" in msg and problem in msg
    assert "InterpretationResult" in msg  # what was expected
    assert e.value.line_no == 2


def test_a_bad_last_line_that_is_json_but_not_an_object_is_an_error(tmp_path):
    """Only a line that does not parse can be a torn write; a whole wrong record is corruption."""
    run = RunPaths(tmp_path)
    run.interpretations.mkdir(parents=True)
    run.interpretation_results.write_text(json.dumps(["a"]))
    with pytest.raises(CorruptRunFile, match="not an object"):
        read_interpretations(run)


def test_scores_later_line_wins_but_skip_never_hides_a_score(tmp_path):
    run = RunPaths(tmp_path)
    for r in (_score("a:0", "label", 0.6), _score("a:0", "label", 0.8), _score("a:0", "label", None, skipped=True),
              _score("b:0", "label", None, skipped=True), _score("a:0", "shuffled", 0.5)):
        append_jsonl(run.score_file("detection"), r)
    got = read_scores(run)
    assert got["detection"]["a:0"]["label"].score == 0.8
    assert got["detection"]["a:0"]["shuffled"].score == 0.5
    assert got["detection"]["b:0"]["label"].skipped
    assert read_scores(run.scores) == got
    assert group_scores([]) == {}


def test_count_failures_excludes_later_successes(tmp_path):
    run = RunPaths(tmp_path)
    append_jsonl(run.interpretation_failures, {"key": "a:0", "reason": "x"})
    append_jsonl(run.interpretation_failures, {"component_key": "b:0", "reason": "y"})
    assert count_failures(run.interpretation_failures) == 2
    assert count_failures(run.interpretation_failures, succeeded=["a:0"]) == 1
