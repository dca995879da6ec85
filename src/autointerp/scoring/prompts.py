"""Scorer prompts: one structured task per LLM call, rendered from templates and read back.

A `ScorerTask` is what one trial asks the judge: a label (none for intruder),
some windows of tokens (for output: candidate lists of promoted tokens) and, for
fuzzing and intruder, which tokens are marked.
`render_request` turns it into an `LLMRequest` through the templates in
``prompts/scoring/`` (the system prompt is the same for every component of a
scorer, so backends cache it); `check_answer` validates the judge's JSON and
raises `InvalidResponse` (retried by the runner) when it does not fit the task.

Windows hold the tokens as the harvest recorded them; with the harvest's
``token_kind`` (`autointerp.token_text`) they are shown as the text they came
from: WordPiece ``##`` pieces joined to their word and words spaced,
SentencePiece ``▁`` as spaces, split UTF-8 bytes as their character. A mark
wraps only its token's text (a space between WordPiece words stays outside), and
a simulation window keeps one list entry per token. An output candidate list holds
separate vocabulary tokens, each shown as the text it would add after a text
(`autointerp.token_text.vocab_token_text`: a WordPiece ``##ing`` is ``"ing"``, a
word-starting piece ``" the"``). The system prompt says how token boundaries read
for the harvest's kind, in the words of the labeller's prompt (``interpret.j2``).
A task without a kind (an older harvest) keeps its trial key: the kind is not in it.

Dataset text is untrusted: newlines become ``↵`` so that one example is one line,
the ``<<``/``>>`` mark delimiters inside tokens are replaced by look-alikes, and
simulation windows and output lists are JSON string lists. `parse_scorer_prompt`
reads a rendered prompt back into a task (the scripted judges in tests and the
offline baseline answer exactly what crossed the wire).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
from attrs import asdict, define, field

from autointerp.llm.base import InvalidResponse, LLMRequest
from autointerp.token_text import segments, token_texts, vocab_token_texts

SCORER_TASKS = ("detection", "fuzzing", "simulation", "intruder", "output")
MARK_OPEN, MARK_CLOSE = "<<", ">>"
NEWLINE_SHOWN = "↵"

_PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "scoring"


@define
class ScorerTask:
    """One trial's question. ``marks[i]`` lists the marked positions of ``windows[i]``.

    ``token_kind`` is the harvest's tokenizer kind: how the recorded tokens read as text
    (None: each token shown as recorded, glued).
    """

    scorer: str
    label: str
    windows: list[list[str]]
    marks: list[list[int]] | None = None
    token_kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["token_kind"] is None:  # absent, so a task of an older harvest keeps its trial key
            del d["token_kind"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScorerTask:
        return cls(d["scorer"], d["label"], [list(w) for w in d["windows"]], d.get("marks"), d.get("token_kind"))


@define
class SimulationAnswer:
    activations: list[list[int]] = field(factory=list)


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_PROMPTS)),
        autoescape=False,  # prompts are not HTML; untrusted text is made safe by clean_token
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=False,
    )
    env.filters["tojson_list"] = lambda xs: json.dumps(list(xs), ensure_ascii=False)
    return env


def clean_token(token: str) -> str:
    """A token as shown in a prompt line: no line breaks, no mark delimiters."""
    return (
        token.replace("\r\n", NEWLINE_SHOWN)
        .replace("\n", NEWLINE_SHOWN)
        .replace("\r", NEWLINE_SHOWN)
        .replace(MARK_OPEN, "‹‹")
        .replace(MARK_CLOSE, "››")
    )


def text_token(token: str) -> str:
    """A token inside marked running text: `clean_token`, then every ``\\``, ``<`` and
    ``>`` escaped with a backslash, so no run of tokens (``<``, ``<``, ``cat``, ``>``,
    ``>``) can spell a mark: an unescaped ``<<`` is always one."""
    return clean_token(token).replace("\\", "\\\\").replace("<", "\\<").replace(">", "\\>")


def render_text(tokens: Sequence[str], marks: Sequence[int] | None = None, kind: str | None = None) -> str:
    """Tokens joined into one line, marked ones wrapped ``<<like this>>`` (see `text_token`).

    With a tokenizer ``kind`` the tokens are joined by its rules (`autointerp.token_text.segments`):
    a separator is never inside a mark, and a marked token that shows no text (the first
    bytes of a split character) passes its mark to the token that shows the character.
    """
    marked = set(marks or ())
    if kind is None:
        return "".join(f"{MARK_OPEN}{text_token(t)}{MARK_CLOSE}" if i in marked else text_token(t)
                       for i, t in enumerate(tokens))
    parts, carry = [], False
    for text, i in segments(list(tokens), kind):
        t = text_token(text)
        if i is None:
            parts.append(t)
            continue
        on = carry or i in marked
        carry = on and not text
        parts.append(f"{MARK_OPEN}{t}{MARK_CLOSE}" if on and text else t)
    return "".join(parts)


def window_tokens(tokens: Sequence[str], kind: str | None = None) -> list[str]:
    """One shown string per token (a simulation window's JSON list): each token's text by the
    rules of ``kind``, a separator joined to the token after it, line breaks as ``↵``."""
    texts = list(tokens) if kind is None else token_texts(list(tokens), kind)
    return [clean_token(t) for t in texts]


def _marked_parts(text: str) -> list[tuple[str, bool]]:
    """Split marked text into ``(plain text, inside a mark)`` runs, undoing `text_token`'s escapes."""
    parts: list[tuple[str, bool]] = []
    buf: list[str] = []
    inside, i = False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i + 1])
            i += 2
        elif text.startswith(MARK_OPEN, i) or text.startswith(MARK_CLOSE, i):
            parts.append(("".join(buf), inside))
            buf, inside = [], text.startswith(MARK_OPEN, i)
            i += 2
        else:
            buf.append(ch)
            i += 1
    parts.append(("".join(buf), inside))
    return [(p, m) for p, m in parts if p]


def one_line(label: str) -> str:
    return " ".join(label.split())


def response_schema(task: ScorerTask) -> dict[str, Any]:
    """The JSON schema of the answer (lengths are checked by `check_answer`: not every
    provider's structured output accepts minItems/maxItems)."""
    if task.scorer == "detection":
        props: dict[str, Any] = {"matches": {"type": "array", "items": {"type": "boolean"}}}
    elif task.scorer == "fuzzing":
        props = {"correct": {"type": "array", "items": {"type": "boolean"}}}
    elif task.scorer == "simulation":
        props = {"activations": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}
    elif task.scorer == "intruder":
        props = {"intruder": {"type": "integer"}}
    elif task.scorer == "output":
        props = {"list": {"type": "integer"}}
    else:
        raise ValueError(f"unknown scorer {task.scorer!r}; known: {SCORER_TASKS}")
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def render_request(task: ScorerTask, max_tokens: int | None = None, metadata: dict[str, Any] | None = None) -> LLMRequest:
    """The `LLMRequest` of a task. ``metadata["task"]`` carries the task itself, so an
    offline backend can answer without reading text."""
    env = _env()
    system = env.get_template("system.j2").render(task=task.scorer, token_kind=task.token_kind).strip()
    label = one_line(task.label)
    if task.scorer in ("simulation", "output"):  # token lists as JSON: windows, or candidate output lists
        if task.scorer == "simulation":
            windows = [window_tokens(w, task.token_kind) for w in task.windows]
        else:  # a candidate output list holds separate vocabulary tokens, each shown as the text it adds
            windows = [[clean_token(t) for t in vocab_token_texts(w, task.token_kind)] for w in task.windows]
        prompt = env.get_template(f"{task.scorer}.j2").render(label=label, windows=windows)
        budget = 64 + (sum(3 * len(w) + 4 for w in task.windows) if task.scorer == "simulation" else 8 * len(task.windows))
    else:
        marks = task.marks or [[] for _ in task.windows]
        texts = [render_text(w, m, task.token_kind) for w, m in zip(task.windows, marks)]
        prompt = env.get_template(f"{task.scorer}.j2").render(label=label, texts=texts)
        budget = 64 + 8 * len(task.windows)
    return LLMRequest(
        prompt=prompt.strip() + "\n",
        schema=response_schema(task),
        system=system,
        max_tokens=max_tokens or max(256, budget),
        schema_name=f"{task.scorer}_answer",
        metadata={**(metadata or {}), "scorer": task.scorer, "task": task.to_dict()},
    )


def check_answer(task: ScorerTask, data: Any, raw_text: str = "") -> Any:
    """The judge's answer in a checked form; `InvalidResponse` when it does not fit the task.

    detection / fuzzing: ``list[bool]`` (one per window); simulation:
    ``list[list[int]]`` (one value per token, clipped to 0..10); intruder: the
    0-based index of the chosen window; output: the 0-based index of the chosen token list.
    """
    n = len(task.windows)

    def bad(msg: str) -> InvalidResponse:
        return InvalidResponse(f"{task.scorer} answer {msg}", raw_text)

    if not isinstance(data, dict):
        raise bad(f"is {type(data).__name__}, expected a JSON object")
    if task.scorer in ("detection", "fuzzing"):
        name = "matches" if task.scorer == "detection" else "correct"
        vals = data.get(name)
        if not isinstance(vals, list) or not all(isinstance(v, bool) for v in vals):
            raise bad(f"has no list of booleans {name!r}")
        if len(vals) != n:
            raise bad(f"has {len(vals)} values in {name!r}, expected {n} (one per example)")
        return vals
    if task.scorer == "simulation":
        acts = data.get("activations")
        if not isinstance(acts, list) or len(acts) != n:
            raise bad(f"has {len(acts) if isinstance(acts, list) else 'no'} lists in 'activations', expected {n}")
        out = []
        for i, (row, w) in enumerate(zip(acts, task.windows)):
            if not isinstance(row, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
                raise bad(f"window {i + 1} is not a list of numbers")
            if len(row) != len(w):
                raise bad(f"window {i + 1} has {len(row)} values, expected {len(w)} (one per token)")
            out.append([int(min(10, max(0, round(v)))) for v in row])
        return out
    if task.scorer == "intruder":
        v = data.get("intruder")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or not 1 <= int(v) <= n:
            raise bad(f"'intruder' is {v!r}, expected an integer from 1 to {n}")
        return int(v) - 1
    if task.scorer == "output":
        v = data.get("list")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or not 1 <= int(v) <= n:
            raise bad(f"'list' is {v!r}, expected an integer from 1 to {n}")
        return int(v) - 1
    raise ValueError(f"unknown scorer {task.scorer!r}")


# -- reading a rendered prompt back -------------------------------------------------------------

_EXAMPLE = re.compile(r"^Example (\d+): (.*)$")
_WINDOW = re.compile(r"^Window (\d+) \((\d+) tokens\): (\[.*\])$")
_LIST = re.compile(r"^List (\d+) \((\d+) tokens\): (\[.*\])$")


def split_marked(text: str, tokenize: Callable[[str], list[str]]) -> tuple[list[str], list[int]]:
    """Undo `render_text`: tokens (via ``tokenize``) and the positions that were marked."""
    tokens: list[str] = []
    marks: list[int] = []
    for part, inside in _marked_parts(text):
        toks = tokenize(part)
        if inside:
            marks.extend(range(len(tokens), len(tokens) + len(toks)))
        tokens.extend(toks)
    return tokens, marks


def parse_scorer_prompt(text: str, tokenize: Callable[[str], list[str]]) -> ScorerTask | None:
    """Read a prompt made by `render_request` back into a `ScorerTask` (None if it is not one).

    Plain-text examples are split into tokens with ``tokenize``; simulation windows
    and output candidate lists are JSON lists and need no tokenizer.
    """
    lines = text.split("\n")
    if not lines or not lines[0].startswith("Task: "):
        return None
    scorer = lines[0][len("Task: ") :].strip()
    if scorer not in SCORER_TASKS:
        return None
    label = ""
    windows: list[list[str]] = []
    marks: list[list[int]] = []
    for line in lines[1:]:
        if line.startswith("Label: ") and not label:
            label = line[len("Label: ") :]
            continue
        if scorer in ("simulation", "output"):
            m = (_WINDOW if scorer == "simulation" else _LIST).match(line)
            if m:
                windows.append(list(json.loads(m.group(3))))
            continue
        m = _EXAMPLE.match(line)
        if m:
            toks, mk = split_marked(m.group(2), tokenize)
            windows.append(toks)
            marks.append(mk)
    return ScorerTask(scorer, label, windows, marks if scorer in ("fuzzing", "intruder") else None)
