"""Credentials never reach the terminal or a file (issue 10 item 12).

A password inside ``--base_url`` (``https://user:pass@host/v1``) and the
credentials a hostile or broken server echoes back in an error body (an
``Authorization: Basic ...`` or ``Bearer ...`` header, an ``x-api-key``) are
removed by one function, `autointerp.llm.redact`, from everything printed,
logged or stored.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_fixtures import make_run  # noqa: E402

from autointerp.llm import redact
from autointerp.paths import RunPaths
from autointerp.testing.llm_server import LLMServer

PASSWORD = "hunter2-PASSWORD-77"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


@pytest.mark.parametrize("text, secret", [
    (f"https://alice:{PASSWORD}@llm.example.org/v1", PASSWORD),
    (f"connection to http://alice:{PASSWORD}@10.0.0.2:8000/v1/chat failed", PASSWORD),
    ("https://tok_abcdefghijkl@proxy.example/v1", "tok_abcdefghijkl"),
    (f"you sent authorization: Basic {BASIC}", BASIC),
    ("you sent Authorization: Bearer abc.DEF-ghi_jkl~123", "abc.DEF-ghi_jkl~123"),
    ('{"headers": {"x-api-key": "opaque-key-value-42"}}', "opaque-key-value-42"),
    ("x-api-key: opaque-key-value-42", "opaque-key-value-42"),
    ("GET /v1/models?api_key=opaque-key-value-42&x=1", "opaque-key-value-42"),
])
def test_redact_removes_credentials_from_urls_and_headers(text, secret):
    out = redact(text)
    assert secret not in out and "[redacted]" in out


def test_redact_keeps_what_is_not_a_secret():
    text = "h.0.mlp:3 failed: 400 prompt is too long; see https://docs.example.org/errors?code=42 (basic check)"
    assert redact(text) == text
    assert redact("https://llm.example.org:8443/v1") == "https://llm.example.org:8443/v1"


def test_backend_repr_hides_the_password_of_its_url():
    from autointerp.llm.openai_compat import OpenAICompatBackend

    b = OpenAICompatBackend("m", base_url=f"https://alice:{PASSWORD}@llm.example.org/v1")
    assert PASSWORD not in repr(b) and "llm.example.org" in repr(b)


def _cli(args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, "-m", "autointerp", *args], env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def _everything_written(root: Path, *texts: str) -> list[str]:
    out = list(texts)
    for f in root.rglob("*"):
        if f.is_file():
            out.append(f.read_bytes().decode("utf-8", "replace"))
    return out


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_url_credentials_and_an_echoed_authorization_header_are_redacted(tmp_path, caplog, backend):
    paths = make_run(tmp_path)
    with LLMServer(retry_after_s=0.01) as server:
        server.push_faults("echo_auth", "echo_auth", "500")
        host = server.url.split("://", 1)[1]
        url = f"http://alice:{PASSWORD}@{host}" + ("/v1" if backend == "openai" else "")
        env = {"ANTHROPIC_API_KEY": "sk-ant-TESTKEY-000000000000"} if backend == "anthropic" else {}
        rc, out, err = _cli(["interpret", "test-run", "--out", str(tmp_path), "--backend", backend, "--model", "m",
                             "--base_url", url, "--max_concurrent", "1", "--no_progress", "--backoff", "0.01",
                             "--max_retries", "0", "--limit", "4"], env)
        sent = [r.headers.get("authorization", "") for r in server.requests]
    assert rc == 0, err
    assert any(BASIC in s for s in sent), sent  # the SDK really sent the URL's password as Basic auth ...
    failures = paths.interpretation_failures.read_text()
    assert "you sent" in failures  # ... the server echoed it into an error our files recorded ...
    assert "alice" in err or "127.0.0.1" in err  # ... and the URL was printed
    for text in _everything_written(tmp_path, out, err):
        assert PASSWORD not in text and BASIC not in text  # ... but never the credentials


# -- terminals -----------------------------------------------------------------------------------------

HOSTILE_LABEL = "\x1b[2J\x1b]0;owned\x07clears\rthe screen\x9b31m\x00\u202eevil " + "x" * 500


def test_terminal_text_strips_control_characters_and_cuts():
    from autointerp.terminal import terminal_text

    out = terminal_text(HOSTILE_LABEL, max_chars=80)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in out), repr(out)
    assert "\u202e" not in out and "owned" not in out
    assert out.startswith("clears the screen")
    assert len(out) <= 80 and out.endswith("…")
    assert terminal_text("fires on ' the' after a comma") == "fires on ' the' after a comma"


def test_labels_printed_by_interpret_are_terminal_safe(tmp_path, capsys, monkeypatch):
    from autointerp.cli import main as cli_main

    make_run(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-TESTKEY-000000000000")
    answer = {"label": HOSTILE_LABEL, "confidence": "high", "reasoning": "r"}
    with LLMServer(responder=lambda req: answer) as server:
        code = cli_main(["interpret", "test-run", "--out", str(tmp_path), "--base_url", server.url, "--no_progress",
                         "--limit", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "\x1b" not in out and "\r" not in out and "\x9b" not in out and "\x00" not in out and "\u202e" not in out
    assert max(len(line) for line in out.splitlines()) < 300
    # the stored label is the model's answer, untouched: only the terminal gets the cleaned copy
    from autointerp.records import read_interpretations

    assert all(r.label == HOSTILE_LABEL for r in read_interpretations(RunPaths.of("test-run", tmp_path)).values())


# -- prompt markers --------------------------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_LEXEME = re.compile(r"\\.|<<|>>|[<>]|[^\\<>]+", re.DOTALL)


def _marks_in(rendered: str) -> tuple[int, int, list[str]]:
    """(opening marks, closing marks, stray '<'/'>'/'\\'), reading backslash escapes as one character."""
    lexemes = _LEXEME.findall(rendered)
    assert "".join(lexemes) == rendered
    stray = [x for x in lexemes if x in ("<", ">", "\\")]
    return lexemes.count("<<"), lexemes.count(">>"), stray


def _example(tokens: list[str], firing: list[bool]) -> SimpleNamespace:
    return SimpleNamespace(token_ids=list(range(len(tokens))), tokens=tokens,
                           activations=[2.0 if f else 0.0 for f in firing], firing_offset=firing.index(True))


def test_the_forged_marker_of_the_issue_is_not_a_marker():
    from autointerp.prompts import marked_text

    text = marked_text(_example(["<", "<", "cat", ">", ">", " sat"], [False] * 5 + [True]), threshold=1.0)
    assert _marks_in(text)[:2] == (1, 1), text  # only ' sat' is marked
    assert "<<cat>>" not in text


@given(st.lists(st.tuples(st.text(alphabet="<>\\a \n", max_size=4), st.booleans()), min_size=1, max_size=12),
       st.sampled_from([None, "byte_level"]))
def test_no_sequence_of_tokens_forges_a_marker(pairs, kind):
    from autointerp.prompts import example_lines, marked_text

    tokens = [t for t, _ in pairs]
    firing = [f for _, f in pairs]
    if not any(firing):
        firing[0] = True
    ex = _example(tokens, firing)
    for text in (marked_text(ex, threshold=1.0, kind=kind), example_lines(ex, threshold=1.0, kind=kind).split("\n   activations:")[0]):
        opened, closed, stray = _marks_in(text)
        assert opened == closed <= sum(firing), (tokens, firing, text)
        assert not stray, (tokens, text)
        if kind is None:
            assert opened == sum(firing)


def test_the_prompt_says_how_marker_characters_in_tokens_are_shown():
    from autointerp.prompts import PACKAGE_DIR

    text = (PACKAGE_DIR / "interpret.j2").read_text(encoding="utf-8")
    assert "\\<" in text and "\\>" in text
