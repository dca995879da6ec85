"""A bad option is a clear error before any work (issue 10 item 11).

Each bad value goes through the real command line: it must exit non-zero, name
the option in its message, and leave no run-folder output behind (the run
folder, the current directory and the --out root are compared file by file).
The Python API's options objects refuse the same values where they enter.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_fixtures import make_run  # noqa: E402

from autointerp.cli import main as cli_main
from autointerp.testing.llm_server import LLMServer

SMALL = ["--n_batches", "1", "--batch_size", "2", "--no_progress"]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``autointerp ARGV``, argparse's own exits included."""
    try:
        code = cli_main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """tmp_path holds a harvested run 'test-run'; the current directory is an empty folder inside it."""
    make_run(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return tmp_path


HARVEST = [
    (["--threshold", "nan"], "--threshold"),
    (["--threshold", "inf"], "--threshold"),
    (["--threshold", "-inf"], "--threshold"),
    (["--context_length", "0"], "--context_length"),
    (["--checkpoint_every", "-1"], "--checkpoint_every"),
    (["--n_batches", "0"], "--n_batches"),
    (["--batch_size", "0"], "--batch_size"),
    (["--examples_per_component", "-1"], "--examples_per_component"),
    (["--top_examples_per_component", "-1"], "--top_examples_per_component"),
    (["--context_tokens_per_side", "-1"], "--context_tokens_per_side"),
    (["--shuffle_buffer", "-1"], "--shuffle_buffer"),
    (["--world_size", "0"], "--world_size"),
    (["--rank", "-1"], "--rank"),
    (["--run_id", ""], "--run_id"),
    (["--run_id", "a/b"], "--run_id"),
    (["--out", ""], "--out"),
]
INTERPRET = [
    (["--limit", "-1"], "limit"),
    (["--n_explain", "-1"], "n_explain"),
    (["--n_top", "-1"], "n_top"),
    (["--max_cost_usd", "nan"], "max_cost_usd"),
    (["--max_cost_usd", "-1"], "max_cost_usd"),
    (["--max_concurrent", "0"], "max_concurrent"),
    (["--timeout", "nan"], "timeout"),
    (["--backoff", "inf"], "backoff"),
    (["--poll_interval", "0"], "poll_interval"),
    (["--max_tokens", "0"], "max_tokens"),
    (["--out", ""], "--out"),
]
SCORE = [
    (["--limit", "-1"], "limit"),
    (["--n_explain", "-1"], "n_explain"),
    (["--max_cost_usd", "nan"], "max_cost_usd"),
    (["--max_concurrent", "0"], "max_concurrent"),
    (["--out", ""], "--out"),
]
REPORT = [(["--workers", "0"], "--workers"), (["--workers", "-2"], "--workers"), (["--out", ""], "--out")]
EXPORT = [(["--top-examples", "-1"], "--top-examples"), (["--out", ""], "--out")]


def _cases():
    for args, name in HARVEST:
        yield pytest.param(["harvest", "demo", *SMALL, *args], name, id="harvest " + " ".join(args))
    for cmd, table, extra in (("interpret", INTERPRET, ["--backend", "offline", "--no_progress"]),
                              ("score", SCORE, ["--backend", "token-match", "--quiet"]),
                              ("report", REPORT, []), ("export", EXPORT, [])):
        for args, name in table:
            yield pytest.param([cmd, "test-run", *extra, *args], name, id=f"{cmd} " + " ".join(args))
        yield pytest.param([cmd, "", *extra], "run_id", id=f"{cmd} run_id ''")
    yield pytest.param(["merge", "test-run", "--world_size", "0"], "--world_size", id="merge --world_size 0")
    yield pytest.param(["demo", "--n_batches", "0"], "--n_batches", id="demo --n_batches 0")
    yield pytest.param(["demo", "--batch_size", "0"], "--batch_size", id="demo --batch_size 0")


@pytest.mark.parametrize("argv, name", list(_cases()))
def test_a_bad_option_is_refused_before_any_work(workdir, capsys, argv, name):
    if "--out" not in argv and argv[0] not in ("demo",):
        argv = [*argv, "--out", str(workdir)]
    if argv[0] == "demo" and "--out" not in argv:
        argv = [*argv, "--out", str(workdir / "demo-out")]
    before = files_under(workdir)
    code, err = run_cli(argv, capsys)
    assert code != 0, f"{argv} was accepted"
    assert name in err, f"{argv}: the message does not name {name}: {err!r}"
    assert "Traceback" not in err
    assert files_under(workdir) == before, f"{argv} wrote files before refusing"


def test_negative_token_ids_are_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "neg.npy", np.array([3, 4, -1, 5] * 40, dtype=np.int64))
    code, err = run_cli(["harvest", "demo", "--dataset", str(tmp_path / "neg.npy"), "--out", str(tmp_path), *SMALL],
                        capsys)
    assert code == 2 and "IndexError" not in err
    assert "neg.npy" in err and "negative token id -1 at position 2" in err and "expected ids >= 0" in err


# -- the Python API refuses the same values where they enter ------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_harvest_loop_refuses_a_threshold_that_is_not_finite(value):
    from autointerp.harvest import HarvestLoop

    with pytest.raises(ValueError, match="threshold"):
        HarvestLoop([], threshold=value)


@pytest.mark.parametrize("field, value", [("threshold", math.nan), ("context_length", 0), ("checkpoint_every", -1),
                                          ("run_id", ""), ("out", ""), ("examples_per_component", -1)])
def test_harvest_options_refuse_bad_values(field, value):
    from autointerp.run_harvest import HarvestOptions, check_options

    with pytest.raises(ValueError, match=field):
        check_options(HarvestOptions(target="demo", **{field: value}))


@pytest.mark.parametrize("field, value", [("max_cost_usd", math.nan), ("request_timeout_s", math.nan),
                                          ("backoff_initial_s", math.inf), ("poll_interval_s", math.nan)])
def test_interpret_options_refuse_values_that_are_not_finite(field, value):
    from autointerp.interpret_options import InterpretOptions

    with pytest.raises(ValueError, match=field):
        InterpretOptions(**{field: value})


@pytest.mark.parametrize("field, value", [("max_cost_usd", math.nan), ("max_cost_usd", math.inf)])
def test_score_options_refuse_values_that_are_not_finite(field, value):
    from autointerp.scoring.options import ScoreOptions

    with pytest.raises(ValueError, match=field):
        ScoreOptions(**{field: value})


@pytest.mark.parametrize("field", ["n_explain", "n_top"])
def test_scoring_config_refuses_negative_split_sizes(field):
    from autointerp.scoring.options import ScoringConfig

    with pytest.raises(ValueError, match=field):
        ScoringConfig(**{field: -1})


# -- score says when nothing could be scored -----------------------------------------------------------


def test_score_exits_non_zero_when_every_trial_failed(workdir, capsys, monkeypatch):
    # few examples shown and none reserved for validation, so that enough are held out for fuzzing trials
    assert run_cli(["interpret", "test-run", "--out", str(workdir), "--backend", "offline", "--no_progress",
                    "--n_explain", "2", "--n_top", "0", "--n_validate", "0"], capsys)[0] == 0
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-000000")
    with LLMServer(fault_for=lambda req: "400") as server:
        code, err = run_cli(["score", "test-run", "--out", str(workdir), "--backend", "anthropic", "--base_url",
                             server.url, "--scorers", "fuzzing", "--no_baselines", "--limit", "2", "--quiet"], capsys)
    assert code != 0, err
    assert "no trial succeeded" in err
