"""Label sets: several sets of labels in one run, each with its own files, scores, report and export.

Interpretation goes through the real anthropic SDK to the local fault server (a
scripted labeller that answers with the labels a test gives); scores come from
the token-match judge (offline, no network to reach).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_fixtures import WORDS, make_run  # noqa: E402
from scoring_helpers import synthetic_harvest  # noqa: E402

from autointerp.cli import main as cli_main
from autointerp.harvest import load_harvest
from autointerp.interpret import Interpreter, load_interpretations
from autointerp.interpret_options import InterpretOptions
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.paths import DEFAULT_LABEL_SET, RunPaths, check_label_set
from autointerp.records import read_interpretations, read_scores
from autointerp.report import open_run
from autointerp.scoring import ScoreOptions, score_run
from autointerp.scoring.token_match import TokenMatchBackend
from autointerp.storage import RunLock
from autointerp.testing.llm_server import LLMServer
from autointerp.testing.synthetic import scripted_labeller

KEY = "test-key"


def true_labels(n_layers: int = 2, width: int = 6) -> dict[str, str]:
    """Component c of layer l fires on token (c + l) % V (see llm_fixtures.make_harvest)."""
    return {f"h.{l}.mlp:{c}": f"the token {json.dumps(WORDS[(c + l) % len(WORDS)])}" for l in range(n_layers) for c in range(width)}


def interpret(tmp_path, server, *extra: str) -> int:
    return cli_main(["interpret", "test-run", "--out", str(tmp_path), "--base_url", server.url, "--no_progress",
                     "--backoff", "0.01", *extra])


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def test_paths_of_the_default_and_a_named_set(tmp_path):
    run = RunPaths(tmp_path)
    assert run.label_set == DEFAULT_LABEL_SET and run.is_default_set
    assert run.interpretation_results == tmp_path / "interpretations" / "results.jsonl"  # today's file, unchanged
    assert run.scores == tmp_path / "scores" and run.report == tmp_path / "report" and run.export == tmp_path / "export"
    a = run.with_label_set("v2")
    assert a.interpretation_results == tmp_path / "interpretations" / "sets" / "v2" / "results.jsonl"
    assert a.interpretation_failures.parent == a.interpretation_summary.parent == a.interpretations
    assert a.score_file("detection") == tmp_path / "scores" / "sets" / "v2" / "detection.jsonl"
    assert a.score_trial_records.parent.parent == a.scores
    assert a.report == tmp_path / "reports" / "v2" and a.export_jsonl == tmp_path / "export" / "sets" / "v2" / "components.jsonl"
    assert a.harvest == run.harvest  # one harvest, many label sets
    assert a.with_label_set(None) == run and RunPaths.at(a) is a and RunPaths.at(tmp_path, label_set="v2") == a
    assert RunPaths.of("r", tmp_path, label_set="default") == RunPaths(tmp_path / "r")
    # the default set's score files are never mistaken for a set's, nor the other way round
    a.scores.mkdir(parents=True)
    (a.scores / "detection.jsonl").write_text("")
    assert run.score_files() == [] and a.score_files() == [a.score_file("detection")]


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".hidden", "-x", "a b", "x" * 65, "é", 3, "a\n"])
def test_a_bad_set_name_is_refused_naming_the_option(bad, tmp_path):
    with pytest.raises(ValueError, match=r"^label_set must be a name of letters.*got"):
        RunPaths(tmp_path).with_label_set(bad)
    with pytest.raises(ValueError, match=r"^interpret option label_set must be"):
        InterpretOptions(label_set=bad)
    with pytest.raises(ValueError, match="label_set must be"):
        RunPaths(tmp_path, label_set=bad)


def test_cli_refuses_a_bad_label_set_before_any_work(tmp_path, capsys):
    for cmd in (["interpret"], ["score"], ["report"], ["export"]):
        with pytest.raises(SystemExit) as e:
            cli_main([*cmd, "test-run", "--out", str(tmp_path), "--label_set", "../x"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --label_set: expected a name of letters" in err and "'../x'" in err
    assert not (tmp_path / "test-run").exists()


def planted_run(tmp_path) -> tuple[RunPaths, dict[str, str]]:
    """The planted-rule harvest (tests/scoring_helpers.py) saved as run ``test-run``, and its true labels."""
    model, harvest = synthetic_harvest(seed=1)
    paths = RunPaths.of("test-run", tmp_path)
    harvest.save(paths.harvest)
    return paths, model.labels()


def test_sets_are_labelled_scored_reported_and_exported_apart(tmp_path, key_env, capsys):
    paths, good = planted_run(tmp_path)
    keys = list(good)
    bad = {k: good[keys[(i + 3) % len(keys)]] for i, k in enumerate(keys)}  # every label another component's rule
    with LLMServer(scripted_labeller(good), api_key=KEY) as s_good, LLMServer(scripted_labeller(bad), api_key=KEY) as s_bad:
        assert interpret(tmp_path, s_good) == 0
        assert interpret(tmp_path, s_bad, "--label_set", "wrong") == 0
        summary = json.loads(paths.with_label_set("wrong").interpretation_summary.read_text())  # its own cost file
        assert summary["last_run"]["completed"] == 10 and summary["cost_usd"] > 0
        n_good, n_bad = len(s_good.requests), len(s_bad.requests)
        assert n_good == n_bad == 10
        # resume, per set: nothing is asked twice
        assert interpret(tmp_path, s_bad, "--label_set", "wrong") == 0
        assert interpret(tmp_path, s_good) == 0
        assert len(s_good.requests) == n_good and len(s_bad.requests) == n_bad
    wrong = paths.with_label_set("wrong")
    assert paths.label_sets() == ["default", "wrong"]
    assert {k: r.label for k, r in read_interpretations(paths).items()} == good
    assert {k: r.label for k, r in read_interpretations(wrong).items()} == bad
    assert "interpretations/sets/wrong/results.jsonl" in capsys.readouterr().err

    score = ["score", "test-run", "--out", str(tmp_path), "--backend", "token-match", "--scorers", "detection",
             "--no_baselines", "--quiet"]
    assert cli_main(score) == 0
    assert not wrong.scores.exists()  # scoring one set leaves the other alone
    assert cli_main([*score, "--label_set", "wrong"]) == 0
    default_det = read_scores(paths)["detection"]
    wrong_det = read_scores(wrong)["detection"]
    assert set(default_det) == set(wrong_det) == set(keys)
    assert {k: v["label"].label for k, v in wrong_det.items()} == bad
    mean = lambda d: sum(v["label"].score for v in d.values()) / len(d)  # noqa: E731
    assert mean(default_det) >= 0.8 and mean(wrong_det) <= mean(default_det) - 0.2

    view = open_run("test-run", tmp_path, label_set="wrong")
    assert view["synth:0"].label == bad["synth:0"] and view.data.label_set == "wrong"
    assert open_run("test-run", tmp_path)["synth:0"].label == good["synth:0"]

    assert cli_main(["report", "test-run", "--out", str(tmp_path), "--label_set", "wrong"]) == 0
    assert (wrong.report / "index.html").is_file() and not paths.report.exists()
    assert cli_main(["export", "test-run", "--out", str(tmp_path), "--label_set", "wrong"]) == 0
    exported = {r["key"]: r for r in map(json.loads, wrong.export_jsonl.read_text().splitlines())}
    assert exported["synth:2"]["label"] == bad["synth:2"]
    assert not paths.export_jsonl.exists()


def test_interpreter_takes_the_set_as_an_option(tmp_path):
    paths = make_run(tmp_path)
    labels = true_labels()
    with LLMServer(scripted_labeller(labels), api_key=KEY) as server:
        backend = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key=KEY)
        it = Interpreter(backend, progress=False, keys=["h.0.mlp:1", "h.0.mlp:2"])
        harvest = load_harvest(paths.harvest)
        res = it.run(harvest, paths, label_set="B")
        assert [r.label for r in res] == [labels["h.0.mlp:1"], labels["h.0.mlp:2"]]
        assert it.results_path == paths.with_label_set("B").interpretation_results
        assert not paths.interpretation_results.exists()
        # a plain interpretations folder holds its sets in sets/<name>
        folder = tmp_path / "elsewhere"
        it.run(harvest, folder, label_set="C")
        assert len(load_interpretations(folder / "sets" / "C")) == 2
        with pytest.raises(ValueError, match="label_set is 'D' but out names label set 'B'"):
            it.run(harvest, paths.with_label_set("B"), label_set="D")


def test_a_set_being_written_is_locked_and_other_sets_are_not(tmp_path, key_env, capsys):
    paths = make_run(tmp_path)
    with LLMServer(scripted_labeller(true_labels()), api_key=KEY) as server:
        with RunLock(paths.with_label_set("A").interpretations):
            assert interpret(tmp_path, server, "--label_set", "A") == 2
            assert "another process is writing" in capsys.readouterr().err
            assert interpret(tmp_path, server, "--label_set", "B", "--limit", "2") == 0
        assert interpret(tmp_path, server, "--label_set", "A", "--limit", "2") == 0
    assert paths.label_sets() == ["A", "B"]  # no default set was written


def test_a_torn_last_line_of_a_set_is_dropped_and_relabelled(tmp_path, key_env):
    paths = make_run(tmp_path)
    a = paths.with_label_set("A")
    with LLMServer(scripted_labeller(true_labels()), api_key=KEY) as server:
        assert interpret(tmp_path, server, "--label_set", "A", "--limit", "3") == 0
        text = a.interpretation_results.read_text()
        a.interpretation_results.write_text(text[: len(text) - 20])  # killed mid-line
        assert len(read_interpretations(a)) == 2
        assert interpret(tmp_path, server, "--label_set", "A", "--limit", "3") == 0
        assert len(server.requests) == 3 + 3  # the torn one again, and two new ones
    assert len(read_interpretations(a)) == 5


# -- scoring a subset ----------------------------------------------------------------------


def _labelled_run(tmp_path):
    paths = make_run(tmp_path)
    from autointerp.storage import append_jsonl
    from autointerp.schemas import InterpretationResult

    for k, label in true_labels().items():
        append_jsonl(paths.interpretation_results, InterpretationResult(component_key=k, label=label, confidence="high", reasoning=""))
    return paths


def _scored_keys(paths: RunPaths) -> set[str]:
    """The components with a result line (this harvest has no window pool, so the lines are skips)."""
    return {k for by_key in read_scores(paths).values() for k in by_key}


def test_score_a_chosen_subset(tmp_path, capsys):
    paths = _labelled_run(tmp_path)
    base = ["score", "test-run", "--out", str(tmp_path), "--backend", "token-match", "--scorers", "detection",
            "--no_baselines", "--quiet"]
    assert cli_main([*base, "--components", "h.0.mlp:1,h.1.mlp:3"]) == 0
    assert _scored_keys(paths) == {"h.0.mlp:1", "h.1.mlp:3"}
    assert cli_main([*base, "--layer", "h.1.mlp"]) == 0
    assert _scored_keys(paths) == {"h.0.mlp:1"} | {f"h.1.mlp:{i}" for i in range(6)}
    report = score_run(paths, backend=TokenMatchBackend(), scorers=["detection"], baselines=False, layers=["h.0.mlp"], limit=2)
    assert len(report.results) == 2 and all(r.component_key.startswith("h.0.mlp:") for r in report.results)


@pytest.mark.parametrize("flag,value,message", [
    ("--components", "h.0.mlp:99", r"--components must be component keys of the harvest .*got 'h.0.mlp:99'"),
    ("--components", "h.7.mlp:0", r"--components must be component keys .*layers: h.0.mlp \(6 components\), h.1.mlp"),
    ("--components", "nonsense", r"--components must be component keys .*got 'nonsense'"),
    ("--layer", "h.9.mlp", r"--layer must name layers of the harvest \(h.0.mlp \(6 components\), h.1.mlp \(6 components\)\), got \['h.9.mlp'\]"),
])
def test_a_subset_outside_the_harvest_is_refused(tmp_path, capsys, flag, value, message):
    paths = _labelled_run(tmp_path)
    rc = cli_main(["score", "test-run", "--out", str(tmp_path), "--backend", "token-match", flag, value, "--quiet"])
    assert rc == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not paths.scores.exists()  # refused before any work


def test_subset_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="score option keys must be a list of component keys or None, got 'h.0.mlp:1'"):
        ScoreOptions(keys="h.0.mlp:1")
    with pytest.raises(ValueError, match="keys and layers pick the components two ways"):
        ScoreOptions(keys=["h.0.mlp:1"], layers=["h.0.mlp"])
    paths = _labelled_run(tmp_path)
    with pytest.raises(ValueError, match=r"score option layers must name layers of the harvest .*got \['nope'\]"):
        score_run(paths, backend=TokenMatchBackend(), layers=["nope"])
    with pytest.raises(SystemExit):
        cli_main(["score", "test-run", "--components", "h.0.mlp:1", "--layer", "h.0.mlp"])


def test_check_label_set_passes_good_names():
    for name in ("default", "v2", "claude-sonnet_4.5", "A" * 64):
        assert check_label_set(name) == name
