"""A corrupt run file stops every command with one line naming the file, the line and what was expected.

Each case damages one file of a finished small run (harvested, interpreted and
scored offline) the way an outside edit, a partial copy or a full disk would,
then runs each command through the command-line entry point: the exit status
is non-zero and stderr is that one line, never a traceback and never a report
or an export that quietly shows fewer components (issue 10 item 10).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_fixtures import make_run  # noqa: E402

from autointerp.cli import main
from autointerp.paths import RunPaths

RUN = "test-run"
N = 32  # 2 layers of 16 components

COMMANDS = {
    "interpret": ["interpret", RUN, "--backend", "offline", "--no_progress"],
    "score": ["score", RUN, "--backend", "offline", "--scorers", "detection", "--quiet"],
    "report": ["report", RUN, "--workers", "1"],
    "report-workers": ["report", RUN, "--workers", "2"],  # workers parse raw lines: checked by iter_component_lines
    "export": ["export", RUN],
    "export-neuronpedia": ["export", RUN, "--format", "neuronpedia"],
    "compare": ["compare", RUN, "--sets", "default,other", "--resamples", "100"],
}
#: commands that read only some of a run's files: the cases that damage another file do not concern them
READS_ONLY_SCORES = {"compare"}  # it compares the score lines (labels included), not the harvest or results


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The --out folder of a run that went through interpret and score (offline)."""
    out = tmp_path_factory.mktemp("finished")
    make_run(out, RUN, width=16)
    for name in ("interpret", "score"):
        assert main([*COMMANDS[name], "--out", str(out)]) == 0
        assert main([*COMMANDS[name], "--out", str(out), "--label_set", "other"]) == 0  # compare's second set
    return out


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def truncated(p: RunPaths) -> str:
    data = p.harvest_components.read_bytes()
    p.harvest_components.write_bytes(data[: len(data) // 2])  # cut inside a line
    return r"components\.jsonl, line \d+: the file ends after \d+ of the 32 components"


def empty(p: RunPaths) -> str:
    p.harvest_components.write_bytes(b"")
    return r"components\.jsonl, line 1: the file is empty; expected the 32 components"


def list_line(p: RunPaths) -> str:
    with open(p.interpretation_results, "ab") as f:
        f.write(b"[1,2,3]\n")
    return r"results\.jsonl, line 31: a JSON list, not an object; expected one InterpretationResult"


def schema_component(p: RunPaths) -> str:
    lines = _lines(p.harvest_components)
    rec = json.loads(lines[3])
    rec["firing_count"] = "many"
    lines[3] = json.dumps(rec).encode()
    _write_lines(p.harvest_components, lines)
    return r"components\.jsonl, line 4: breaks the schema \(expected an integer, got the str 'many' @ \$\.firing_count\)"


def schema_result(p: RunPaths) -> str:
    lines = _lines(p.interpretation_results)
    rec = json.loads(lines[2])
    rec["component_key"] = 7  # used to become the key "7"
    lines[2] = json.dumps(rec).encode()
    _write_lines(p.interpretation_results, lines)
    return r"results\.jsonl, line 3: breaks the schema \(expected a string, got the int 7 @ \$\.component_key\)"


def schema_nested(p: RunPaths) -> str:
    lines = _lines(p.harvest_components)
    rec = json.loads(lines[1])
    rec["input_tokens"] = "abc"  # used to become empty token statistics
    lines[1] = json.dumps(rec).encode()
    _write_lines(p.harvest_components, lines)
    return r"components\.jsonl, line 2: breaks the schema \(expected a TokenStats object, got the str 'abc'"


def duplicated(p: RunPaths) -> str:
    lines = _lines(p.harvest_components)
    lines.insert(5, lines[4])  # one line twice: 33 lines
    _write_lines(p.harvest_components, lines)
    return r"components\.jsonl, line 6: a second record of 'h\.0\.mlp:4' \(the first is on line 5\); expected 'h\.0\.mlp:5'"


def duplicated_in_place(p: RunPaths) -> str:
    lines = _lines(p.harvest_components)
    lines[5] = lines[4]  # still 32 lines, one component hidden
    _write_lines(p.harvest_components, lines)
    return r"components\.jsonl, line 6: a second record of 'h\.0\.mlp:4' \(the first is on line 5\); expected 'h\.0\.mlp:5'"


def swapped(p: RunPaths) -> str:
    lines = _lines(p.harvest_components)
    lines[2], lines[3] = lines[3], lines[2]
    _write_lines(p.harvest_components, lines)
    return r"components\.jsonl, line 3: the record of 'h\.0\.mlp:3'; expected 'h\.0\.mlp:2' here \(components in"


def extra_line(p: RunPaths) -> str:
    lines = _lines(p.harvest_components)
    _write_lines(p.harvest_components, [*lines, lines[-1]])
    return r"components\.jsonl, line 33: a component after the last one; expected the 32 components"


def config_broken(p: RunPaths) -> str:
    cfg = json.loads(p.harvest_config.read_text())
    cfg["layers"][0]["width"] = "16"
    p.harvest_config.write_text(json.dumps(cfg))
    return r"config\.json: breaks the schema \(expected an integer, got the str '16' @ \$\.layers\[0\]\.width\)"


def config_not_json(p: RunPaths) -> str:
    p.harvest_config.write_text('{"layers": [')
    return r"config\.json, line 1: not JSON \(.*\); expected one HarvestConfig JSON object"


def score_line(p: RunPaths) -> str:
    with open(p.score_file("detection"), "ab") as f:
        f.write(b'{"component_key": "h.0.mlp:0", "scorer": "detection"}\n')
    return r"detection\.jsonl, line \d+: breaks the schema \(required field missing @ \$\.label_source"


def score_not_json(p: RunPaths) -> str:
    lines = _lines(p.score_file("detection"))
    lines.insert(1, b'{"component_key": "h.0.mlp:0", "scor')  # a line cut short in the middle of the file
    _write_lines(p.score_file("detection"), lines)
    return r"detection\.jsonl, line 2: not JSON \(.*\); expected one ScoreResult JSON object"


CASES: dict[str, Callable[[RunPaths], str]] = {
    f.__name__: f
    for f in (truncated, empty, list_line, schema_component, schema_result, schema_nested, duplicated,
              duplicated_in_place, swapped, extra_line, config_broken, config_not_json, score_line, score_not_json)
}


def _damaged(finished: Path, tmp_path: Path, case: str) -> tuple[Path, str]:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out, CASES[case](RunPaths.of(RUN, out))


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(CASES))
def test_every_command_refuses_a_corrupt_file_with_one_line(finished, tmp_path, capsys, case, command):
    if case.startswith("score_") and command == "interpret":
        pytest.skip("interpret does not read scores")
    if not case.startswith("score_") and command in READS_ONLY_SCORES:
        pytest.skip(f"{command} reads only the score files")
    if case in ("schema_component", "schema_nested") and command == "report-workers":
        pytest.skip("with workers, each component line's schema is checked by the worker that parses it (not yet)")
    out, message = _damaged(finished, tmp_path, case)
    before = {p: p.read_bytes() for p in (out / RUN).rglob("*") if p.is_file() and "report" not in p.parts and p.name != ".lock"}
    capsys.readouterr()
    rc = main([*COMMANDS[command], "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err and err[-1].startswith(f"autointerp {command.split('-')[0]}: error: ")
    import re

    assert re.search(message, err[-1]), err[-1]
    assert "outside autointerp" in err[-1]  # and what to do about it
    after = {p: p.read_bytes() for p in before}
    assert after == before  # a reader never modifies a file, the damaged one included


@pytest.mark.parametrize("command", ["interpret", "report", "export"])
def test_through_the_real_entry_point_there_is_no_traceback(finished, tmp_path, command):
    out, message = _damaged(finished, tmp_path, "schema_component")
    env = {k: v for k, v in os.environ.items() if k != "AUTOINTERP_DEBUG" and not k.endswith("API_KEY")}
    p = subprocess.run([sys.executable, "-m", "autointerp", *COMMANDS[command], "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "components.jsonl, line 4" in lines[0], p.stderr


def test_a_torn_results_line_is_dropped_and_the_next_run_repairs_it(finished, tmp_path, capsys):
    """The one thing that is not an error: a writer killed mid-line. Readers skip it; the next writer cuts it."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    p = RunPaths.of(RUN, out)
    lines = _lines(p.interpretation_results)
    torn = lines.pop()
    _write_lines(p.interpretation_results, lines)
    with open(p.interpretation_results, "ab") as f:
        f.write(torn[: len(torn) // 2])
    for command in ("report", "export"):
        assert main([*COMMANDS[command], "--out", str(out)]) == 0
    assert p.interpretation_results.read_bytes().endswith(torn[: len(torn) // 2])  # readers leave it
    assert main([*COMMANDS["interpret"], "--out", str(out)]) == 0  # relabels the torn one
    again = _lines(p.interpretation_results)
    assert len(again) == len(lines) + 1 and all(json.loads(line) for line in again)
    assert json.loads(again[-1])["component_key"] == json.loads(torn)["component_key"]
