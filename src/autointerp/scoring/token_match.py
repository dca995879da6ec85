"""The token-match simulator: an offline *baseline* judge, not an LLM.

It answers every scorer prompt by one crude rule: a component fires wherever a
token named in the label occurs (quoted tokens, or else the label's content
words, compared without surrounding whitespace and case). It needs no network
and no key, so the demo and CI can score labels end to end; its numbers say how
far plain token lookup gets, which is the bar a real explanation must clear.
Never report them as an LLM judge's scores.

For the output scorer it picks the candidate list that shares most tokens with
those the label says the component promotes (`output_label_tokens`).

`answer_task` is shared with the scripted judge of the calibration test
(`autointerp.testing.synthetic.rule_judge_responder`), which applies the exact
rule a planted label states instead of token matching.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from autointerp.llm.base import LLMRequest, LLMResponse
from autointerp.schemas import TokenUsage
from autointerp.scoring.prompts import ScorerTask, parse_scorer_prompt
from autointerp.token_text import token_texts

TOKEN_MATCH_MODEL = "token-match-baseline"

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)+)"|“([^”]+)”|`([^`]+)`|\'([^\']+)\'')
_WORD = re.compile(r"[A-Za-z0-9_]+")
_STOP = set(
    "the a an of and or to in on at for with by from as is are be it its this that these those "
    "token tokens word words fires fire firing after before right when on any all which where "
    "component text about like such other following preceding first second third 1st 2nd 3rd th".split()
)

Predict = Callable[[Sequence[str]], list[bool]]


def label_tokens(label: str) -> set[str]:
    """The tokens a label names: its quoted strings, else its content words (lower-cased, stripped)."""
    quoted = ["".join(g for g in m.groups() if g) for m in _QUOTED.finditer(label)]
    quoted = [q.replace('\\"', '"').strip().lower() for q in quoted]
    quoted = [q for q in quoted if q]
    if quoted:
        return set(quoted)
    return {w.lower() for w in _WORD.findall(label) if w.lower() not in _STOP and len(w) > 1}


def token_match_predict(label: str) -> Predict:
    names = label_tokens(label)

    def predict(tokens: Sequence[str]) -> list[bool]:
        return [t.strip().lower() in names for t in tokens]

    return predict


def _intruder_guess(task: ScorerTask) -> int:
    """The example whose marked tokens (and the few before them) share least with the others."""
    feats: list[set[tuple[int, str]]] = []
    for w, m in zip(task.windows, task.marks or [[] for _ in task.windows]):
        f = set()
        for p in m:
            for d in range(4):
                if p - d >= 0:
                    f.add((d, w[p - d].strip().lower()))
        feats.append(f)
    counts = Counter(x for f in feats for x in f)
    # how typical is each example: its most shared feature (excluding its own copy)
    typical = [max((counts[x] - 1 for x in f), default=0) for f in feats]
    return min(range(len(feats)), key=lambda i: (typical[i], i))


#: words after which a label names the tokens a component promotes ("...; predicts ' cat'")
_OUTPUT_WORDS = re.compile(r"\b(?:promotes|predicts|predicting|promoting|outputs)\b", re.IGNORECASE)


def output_label_tokens(label: str) -> set[str]:
    """The tokens a label says the component promotes: those named after "promotes" /
    "predicts" / "outputs" where the label has such a clause, else every token it names."""
    m = _OUTPUT_WORDS.search(label)
    if m:
        named = label_tokens(label[m.end() :])
        if named:
            return named
    return label_tokens(label)


def output_overlaps(label: str, lists: Sequence[Sequence[str]]) -> list[int]:
    """How many tokens of each candidate list the label names as promoted (stripped, lower-cased)."""
    names = output_label_tokens(label)
    return [len({t.strip().lower() for t in w} & names) for w in lists]


def answer_task(task: ScorerTask, predict: Predict) -> dict[str, Any]:
    """The JSON a judge that believes ``predict`` (tokens -> firing per token) would send."""
    if task.scorer == "detection":
        return {"matches": [any(predict(w)) for w in task.windows]}
    if task.scorer == "fuzzing":
        out = []
        for w, m in zip(task.windows, task.marks or [[] for _ in task.windows]):
            fires = predict(w)
            out.append(bool(m) and all(fires[p] for p in m))
        return {"correct": out}
    if task.scorer == "simulation":
        return {"activations": [[10 if f else 0 for f in predict(w)] for w in task.windows]}
    if task.scorer == "intruder":
        return {"intruder": _intruder_guess(task) + 1}
    if task.scorer == "output":
        # the list sharing most tokens with those the label names as promoted (ties: the first)
        hits = output_overlaps(task.label, task.windows)
        return {"list": max(range(len(hits)), key=lambda i: (hits[i], -i)) + 1}
    raise ValueError(f"unknown scorer {task.scorer!r}")


class TokenMatchBackend:
    """A `Backend` that answers scorer prompts with the token-match baseline (no network).

    It reads the task from ``request.metadata["task"]`` (set by every scorer), or
    failing that parses the prompt, splitting plain text on whitespace.
    """

    model = TOKEN_MATCH_MODEL
    is_baseline = True

    def __init__(self, tokenize: Callable[[str], list[str]] | None = None):
        self.tokenize = tokenize or (lambda s: re.findall(r"\s*\S+", s))

    async def complete(self, request: LLMRequest) -> LLMResponse:
        raw = request.metadata.get("task") if request.metadata else None
        task = ScorerTask.from_dict(raw) if raw else parse_scorer_prompt(request.prompt, self.tokenize)
        if task is None:
            raise ValueError("the token-match baseline only answers scorer prompts")
        if task.token_kind is not None:  # match the tokens as they read (WordPiece '##ing' is 'ing')
            task = ScorerTask(task.scorer, task.label, [token_texts(w, task.token_kind) for w in task.windows],
                              task.marks, task.token_kind)
        data = answer_task(task, token_match_predict(task.label))
        import json

        return LLMResponse(data=data, usage=TokenUsage(), raw_text=json.dumps(data), model=self.model)

    def __repr__(self) -> str:
        return "TokenMatchBackend(baseline: predicts a firing wherever a token named in the label occurs)"
