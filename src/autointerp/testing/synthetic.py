"""A synthetic model whose components fire by known rules: planted ground truth for scorers.

A scorer is only trustworthy if it gives high scores to labels that are true and
chance scores to labels that are not. Real models have no known truth, so this
module makes one: random text over a small word vocabulary, and components that
fire exactly where a rule holds — a token (``TokenRule``), a token right after
another token (``BigramRule``), the k-th token after a delimiter
(``AfterDelimiterRule``). Each rule has a canonical text (its true label) that
`parse_rule` reads back, so a scripted judge can answer scorer prompts by
applying the rule a label states (`rule_judge_responder`).

>>> model = SyntheticModel.default(seed=0)
>>> batches = list(model.batches(n_batches=8, batch_size=32, seq_len=64))
>>> loop = HarvestLoop([ReservoirAcc(k=30), RandomWindowAcc()], vocab_size=model.vocab_size,
...                    decode=model.decode, progress=False)
>>> result = loop.run(batches)
>>> model.labels()["synth:0"]
'the token " cat"'
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from attrs import define, field

from autointerp.batch import ComponentSpace, HarvestBatch

#: the default vocabulary: words with a leading space, and three delimiters
DEFAULT_WORDS = (
    "the a of and to in is it on for with as at by from this that was are be "
    "cat dog bird fish big small red blue house car tree road sun moon rise run walk "
    "green old new fast slow"
).split()
DELIMITERS = (".", ";", ",")

_ORDINALS = {1: "1st", 2: "2nd", 3: "3rd"}


def _ordinal(k: int) -> str:
    return _ORDINALS.get(k, f"{k}th")


def _q(token: str) -> str:
    return json.dumps(token, ensure_ascii=False)


class Rule:
    """Where a synthetic component fires, as a function of the tokens seen so far."""

    #: tokens the rule plants into the data to make its firing frequent enough
    def text(self) -> str:
        raise NotImplementedError

    def fires(self, tokens: Sequence[str]) -> list[bool]:
        """Per position of ``tokens`` (strings), whether the rule holds using only this window."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text()!r})"


@define(repr=False)
class TokenRule(Rule):
    token: str

    def text(self) -> str:
        return f"the token {_q(self.token)}"

    def fires(self, tokens: Sequence[str]) -> list[bool]:
        return [t == self.token for t in tokens]


@define(repr=False)
class BigramRule(Rule):
    prev: str
    token: str

    def text(self) -> str:
        return f"the token {_q(self.token)} right after {_q(self.prev)}"

    def fires(self, tokens: Sequence[str]) -> list[bool]:
        return [i > 0 and t == self.token and tokens[i - 1] == self.prev for i, t in enumerate(tokens)]


@define(repr=False)
class AfterDelimiterRule(Rule):
    delimiter: str
    k: int = 1

    def text(self) -> str:
        return f"the {_ordinal(self.k)} token after {_q(self.delimiter)}"

    def fires(self, tokens: Sequence[str]) -> list[bool]:
        k = self.k
        return [i >= k and tokens[i - k] == self.delimiter for i in range(len(tokens))]


@define(repr=False)
class TokenSetRule(Rule):
    """Fires on any of a set of tokens, compared without surrounding whitespace and case.

    This is the token-match baseline's reading of a label that is not a planted rule.
    """

    tokens: frozenset[str]

    def text(self) -> str:
        return "any of " + ", ".join(_q(t) for t in sorted(self.tokens))

    def fires(self, tokens: Sequence[str]) -> list[bool]:
        return [t.strip().lower() in self.tokens for t in tokens]


@define(repr=False)
class AnyTokenRule(Rule):
    """Fires on any of several tokens (exact match): a rule a one-token label states only part of."""

    tokens: tuple[str, ...]

    def text(self) -> str:
        return "any of the tokens " + ", ".join(_q(t) for t in sorted(self.tokens))

    def fires(self, tokens: Sequence[str]) -> list[bool]:
        wanted = set(self.tokens)
        return [t in wanted for t in tokens]


def label_for_tokens(tokens: Iterable[str]) -> str:
    """The canonical label of a set of tokens: a `TokenRule` for one, an `AnyTokenRule` for more."""
    toks = sorted(set(tokens))
    if not toks:
        raise ValueError("a label needs at least one token")
    return TokenRule(toks[0]).text() if len(toks) == 1 else AnyTokenRule(tuple(toks)).text()


_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_RULE_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Rule]]] = [
    (
        re.compile(rf"^the token {_QUOTED} right after {_QUOTED}$"),
        lambda m: BigramRule(prev=json.loads(f'"{m.group(2)}"'), token=json.loads(f'"{m.group(1)}"')),
    ),
    (
        re.compile(rf"^the (\d+)(?:st|nd|rd|th) token after {_QUOTED}$"),
        lambda m: AfterDelimiterRule(delimiter=json.loads(f'"{m.group(2)}"'), k=int(m.group(1))),
    ),
    (re.compile(rf"^the token {_QUOTED}$"), lambda m: TokenRule(token=json.loads(f'"{m.group(1)}"'))),
    (
        re.compile(rf"^any of the tokens ({_QUOTED}(?:, {_QUOTED})*)$"),
        lambda m: AnyTokenRule(tuple(json.loads(f'"{q}"') for q in re.findall(_QUOTED, m.group(1)))),
    ),
]


#: how a planted label states the output side: ``'the token " cat"; promotes " dog", " bird"'``
OUTPUT_CLAUSE = "; promotes "


def output_text(tokens: Sequence[str]) -> str:
    """The output clause of a planted label (`OUTPUT_CLAUSE` and the quoted tokens)."""
    return OUTPUT_CLAUSE + ", ".join(_q(t) for t in tokens)


def parse_rule(label: str) -> Rule | None:
    """Read a rule back from its canonical text (`Rule.text`), an output clause
    (`OUTPUT_CLAUSE`) after it ignored; None if the label is not one."""
    s = label.strip()
    if OUTPUT_CLAUSE in s:
        s = s[: s.index(OUTPUT_CLAUSE)].strip()
    for pattern, make in _RULE_PATTERNS:
        m = pattern.match(s)
        if m:
            return make(m)
    return None


@define
class SyntheticModel:
    """Random text plus components that fire by known rules.

    ``vocab`` lists the token strings (id = index). Each row of a batch is drawn
    uniformly from the vocabulary, then every `BigramRule` is planted: after its
    ``prev`` token, its ``token`` follows with probability ``plant_prob`` (rare
    bigrams would otherwise leave too few examples to score). A component's
    activation is ``0.5 + 0.5 * u`` (u uniform) where its rule holds, else
    ``subthreshold * u`` (0 by default; harvest with a threshold at or above it
    to get silent positions that still carry a value).

    ``cluster_prob`` makes firings cluster: a `TokenRule` token recurs two
    positions after itself with that probability, so one context window holds
    several firings of the component (runs of "cat _ cat _ cat").

    ``outputs`` plants the output side: ``outputs[c]`` are the tokens component
    ``c`` promotes. They reach a harvest two ways: as weights (`output_directions`
    and `unembedding`, so the logit lens of ``c`` ranks them first; attach it with
    `autointerp.run_harvest.attach_output_logits`), and as the model's next-token
    probabilities (``batches(..., output_probs=True)``: where components fire,
    half the mass goes to their promoted tokens). ``labels(outputs=True)`` states
    them in the label (`OUTPUT_CLAUSE`).
    """

    vocab: list[str]
    rules: list[Rule]
    layer: str = "synth"
    plant_prob: float = 0.5
    seed: int = 0
    cluster_prob: float = 0.0
    subthreshold: float = 0.0
    outputs: list[list[str]] | None = None
    _index: dict[str, int] = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._index = {t: i for i, t in enumerate(self.vocab)}
        if len(self._index) != len(self.vocab):
            raise ValueError("vocab has duplicate tokens")
        for r in self.rules:
            for t in _rule_tokens(r):
                if t not in self._index:
                    raise ValueError(f"rule {r.text()!r} names {t!r}, which is not in the vocabulary")
        if self.outputs is not None:
            if len(self.outputs) != len(self.rules):
                raise ValueError(f"outputs has {len(self.outputs)} token lists, expected one per rule ({len(self.rules)})")
            for c, toks in enumerate(self.outputs):
                bad = [t for t in toks if t not in self._index]
                if bad or not toks:
                    raise ValueError(f"outputs[{c}] must be tokens of the vocabulary, got {list(toks)!r}")

    @classmethod
    def default(cls, seed: int = 0, plant_prob: float = 0.5, cluster_prob: float = 0.0, subthreshold: float = 0.0) -> SyntheticModel:
        """Ten components with disjoint tokens, so no two true labels overlap."""
        vocab = [" " + w for w in DEFAULT_WORDS] + list(DELIMITERS)
        rules: list[Rule] = [
            TokenRule(" cat"),
            TokenRule(" blue"),
            TokenRule(" run"),
            TokenRule(" tree"),
            BigramRule(" big", " house"),
            BigramRule(" red", " car"),
            BigramRule(" sun", " rise"),
            AfterDelimiterRule(".", 1),
            AfterDelimiterRule(";", 2),
            AfterDelimiterRule(",", 3),
        ]
        # what each promotes: three tokens, disjoint between components and from the component's own rule
        outputs = [
            [" dog", " bird", " fish"], [" green", " old", " new"], [" walk", " fast", " slow"],
            [" road", " moon", " small"], [" the", " a", " of"], [" and", " to", " in"], [" is", " it", " on"],
            [" for", " with", " as"], [" at", " by", " from"], [" this", " that", " was"],
        ]  # fmt: skip
        return cls(vocab=vocab, rules=rules, seed=seed, plant_prob=plant_prob, cluster_prob=cluster_prob,
                   subthreshold=subthreshold, outputs=outputs)  # fmt: skip

    @classmethod
    def partial(cls, seed: int = 0) -> SyntheticModel:
        """Components that fire on any of two tokens (six of them) beside two that fire on one:
        a labeller that names only the most frequent firing token is right about the last two
        and states half of the rule of the others (the refinement calibration)."""
        vocab = [" " + w for w in DEFAULT_WORDS] + list(DELIMITERS)
        rules: list[Rule] = [
            AnyTokenRule((" cat", " dog")),
            AnyTokenRule((" red", " blue")),
            AnyTokenRule((" house", " car")),
            AnyTokenRule((" sun", " moon")),
            AnyTokenRule((" fast", " slow")),
            AnyTokenRule((" old", " new")),
            TokenRule(" tree"),
            TokenRule(" run"),
        ]
        return cls(vocab=vocab, rules=rules, seed=seed)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def n_components(self) -> int:
        return len(self.rules)

    def decode(self, token_id: int) -> str:
        return self.vocab[token_id]

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self._index[t] for t in tokens]

    def keys(self) -> list[str]:
        return [ComponentSpace.make_key(self.layer, i) for i in range(len(self.rules))]

    def labels(self, outputs: bool = False) -> dict[str, str]:
        """The true label (the rule's canonical text) of every component, by key; with
        ``outputs``, followed by the tokens it promotes (`output_text`)."""
        if outputs and self.outputs is None:
            raise ValueError("labels(outputs=True) needs a model with planted outputs (SyntheticModel.outputs)")
        if not outputs:
            return {k: r.text() for k, r in zip(self.keys(), self.rules)}
        assert self.outputs is not None
        return {k: r.text() + output_text(o) for k, r, o in zip(self.keys(), self.rules, self.outputs)}

    def _planted_outputs(self) -> list[list[str]]:
        if self.outputs is None:
            raise ValueError("this SyntheticModel has no planted outputs (SyntheticModel.outputs)")
        return self.outputs

    def output_directions(self) -> dict[str, Any]:
        """What each component writes (the logit lens's input): component ``c`` writes the
        unit vector ``e_c`` of a ``C + 8``-dimensional residual stream."""
        from autointerp.logit_lens import OutputDirections

        self._planted_outputs()
        C = len(self.rules)
        return {self.layer: OutputDirections(torch.eye(C, C + 8), name="synthetic output directions")}

    def unembedding(self) -> Any:
        """Token directions ``[V, C + 8]``: small seeded noise, plus 1.0, 0.9, 0.8, ... in dimension
        ``c`` for the tokens component ``c`` promotes, so its logit lens ranks them first, in order."""
        from autointerp.logit_lens import Unembedding

        outputs = self._planted_outputs()
        C = len(self.rules)
        g = torch.Generator().manual_seed(self.seed + 7919)
        w = 0.05 * torch.randn(self.vocab_size, C + 8, generator=g)
        for c, toks in enumerate(outputs):
            for j, t in enumerate(toks):
                w[self._index[t], c] += 1.0 - 0.1 * j
        return Unembedding(w, name="synthetic unembedding")

    def output_probs(self, fires: torch.Tensor) -> torch.Tensor:
        """``[B, S, V]`` next-token probabilities: uniform where no component fires; where some
        fire, half the mass uniform and half spread over their promoted tokens."""
        outputs = self._planted_outputs()
        V = self.vocab_size
        promoted = torch.zeros(len(self.rules), V)
        for c, toks in enumerate(outputs):
            promoted[c, [self._index[t] for t in toks]] = 1.0 / len(toks)
        f = fires.float()
        n = f.sum(-1, keepdim=True)
        mix = (f @ promoted) / n.clamp(min=1)
        return torch.where(n > 0, 0.5 / V + 0.5 * mix, torch.full_like(mix, 1.0 / V))

    def tokens(self, n_rows: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        V = self.vocab_size
        tok = torch.randint(0, V, (n_rows, seq_len), generator=generator)
        plants = [(self._index[r.prev], self._index[r.token]) for r in self.rules if isinstance(r, BigramRule)]
        if plants:
            u = torch.rand(n_rows, seq_len, generator=generator)
            for s in range(1, seq_len):
                for prev, nxt in plants:
                    hit = (tok[:, s - 1] == prev) & (u[:, s] < self.plant_prob)
                    tok[:, s] = torch.where(hit, torch.full_like(tok[:, s], nxt), tok[:, s])
        if self.cluster_prob > 0:  # drawn only when asked, so other streams stay as they were
            repeat = [self._index[r.token] for r in self.rules if isinstance(r, TokenRule)]
            u = torch.rand(n_rows, seq_len, generator=generator)
            for s in range(2, seq_len):
                for t in repeat:
                    hit = (tok[:, s - 2] == t) & (u[:, s] < self.cluster_prob)
                    tok[:, s] = torch.where(hit, torch.full_like(tok[:, s], t), tok[:, s])
        return tok

    def activations(self, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[B, S, C]``: where each rule holds on the full rows, ``0.5 + 0.5 u``; else ``subthreshold * u``."""
        fires = self.fires(tokens)
        u = torch.rand(*fires.shape, generator=generator)
        return torch.where(fires, 0.5 + 0.5 * u, self.subthreshold * u)

    def fires(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, S, C]`` bool: where each rule holds on the full rows."""
        B, S = tokens.shape
        fires = torch.zeros(B, S, len(self.rules), dtype=torch.bool)
        for c, r in enumerate(self.rules):
            if isinstance(r, TokenRule):
                fires[:, :, c] = tokens == self._index[r.token]
            elif isinstance(r, BigramRule):
                fires[:, 1:, c] = (tokens[:, 1:] == self._index[r.token]) & (tokens[:, :-1] == self._index[r.prev])
            elif isinstance(r, AfterDelimiterRule):
                fires[:, r.k :, c] = tokens[:, : S - r.k] == self._index[r.delimiter]
            elif isinstance(r, AnyTokenRule):
                fires[:, :, c] = torch.isin(tokens, torch.tensor([self._index[t] for t in r.tokens]))
            else:
                for b in range(B):
                    fires[b, :, c] = torch.tensor(r.fires([self.vocab[t] for t in tokens[b].tolist()]))
        return fires

    def batches(
        self, n_batches: int, batch_size: int = 32, seq_len: int = 64, seed: int | None = None, output_probs: bool = False
    ) -> Iterator[HarvestBatch]:
        """``n_batches`` HarvestBatches with ``sequence_ids``, reproducible from ``seed``; with
        ``output_probs``, also the planted next-token probabilities (`output_probs`)."""
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        for i in range(n_batches):
            tok = self.tokens(batch_size, seq_len, g)
            acts = self.activations(tok, g)
            yield HarvestBatch(
                tokens=tok,
                activations={self.layer: acts},
                output_probs=self.output_probs(self.fires(tok)) if output_probs else None,
                sequence_ids=torch.arange(i * batch_size, (i + 1) * batch_size),
            )

    def describe(self) -> dict[str, Any]:
        return {"name": "synthetic", "rules": [r.text() for r in self.rules], "vocab_size": self.vocab_size}


def _rule_tokens(rule: Rule) -> list[str]:
    if isinstance(rule, TokenRule):
        return [rule.token]
    if isinstance(rule, BigramRule):
        return [rule.prev, rule.token]
    if isinstance(rule, AfterDelimiterRule):
        return [rule.delimiter]
    if isinstance(rule, AnyTokenRule):
        return list(rule.tokens)
    return []


# -- a scripted judge for the scorer prompts ---------------------------------------------------


def rule_for_label(label: str) -> Rule:
    """The rule a label states: a planted rule's canonical text, else the tokens it names."""
    rule = parse_rule(label)
    if rule is not None:
        return rule
    from autointerp.scoring.token_match import label_tokens

    return TokenSetRule(frozenset(label_tokens(label)))


def rule_judge_responder(
    tokenize: Callable[[str], list[str]] | None = None, *, rules: Sequence[Rule] | None = None
) -> Callable[[Any], dict]:
    """A responder for `autointerp.testing.llm_server` that answers scorer prompts by applying
    the rule a label states (`rule_for_label`): a perfect judge of planted labels.

    Intruder prompts carry no label: given the planted ``rules`` (``model.rules``)
    the judge answers them from the truth too (`intruder_by_rules`); without them,
    with the token-match baseline's guess. Output prompts are answered from the
    tokens the label says the component promotes (`output_by_label`: a planted
    label made with ``labels(outputs=True)`` names exactly the planted ones).

    It reads the prompt text exactly as it crossed the wire (so the whole transport
    is tested) and returns the JSON the scorer asked for. ``tokenize`` splits the
    plain-text examples back into tokens; the default suits `SyntheticModel` vocabularies.
    """
    from autointerp.scoring.prompts import parse_scorer_prompt
    from autointerp.scoring.token_match import answer_task

    tok = tokenize or split_synthetic_text

    def respond(request: Any) -> dict:
        text = _prompt_text(request)
        task = parse_scorer_prompt(text, tok)
        if task is None:
            raise ValueError("the scripted judge got a prompt that is not a scorer prompt")
        # ties are broken by the prompt itself, so a retried request gets the same answer
        rng = random.Random(hashlib.sha256(text.encode()).digest())
        if task.scorer == "intruder" and rules:
            return {"intruder": intruder_by_rules(task.windows, task.marks or [], rules, rng) + 1}
        if task.scorer == "output":
            return {"list": output_by_label(task.label, task.windows, rng) + 1}
        return answer_task(task, rule_for_label(task.label).fires)

    return respond


_COMPONENT_LINE = re.compile(r"^# Component (\S+)\s*$", re.MULTILINE)


def scripted_labeller(labels: Mapping[str, str], *, confidence: str = "high") -> Callable[[Any], dict]:
    """A responder for `autointerp.testing.llm_server` that answers interpretation prompts with
    ``labels[key]`` for the component the prompt names (its ``# Component <key>`` line).

    With ``model.labels()`` it is a labeller that states every planted rule; with
    the labels deranged between components, a wrong-rule control; a label set per
    responder makes planted-truth label sets to compare. A prompt that names no
    component, or one ``labels`` lacks, is an error (the server answers 500).
    """

    def respond(request: Any) -> dict:
        m = _COMPONENT_LINE.search(_prompt_text(request))
        if m is None or m.group(1) not in labels:
            raise ValueError(f"the scripted labeller has no label for this prompt (component {m and m.group(1)!r})")
        return {"reasoning": "scripted", "label": labels[m.group(1)], "confidence": confidence}

    return respond


def output_by_label(label: str, lists: Sequence[Sequence[str]], rng: random.Random) -> int:
    """The candidate list sharing most tokens with those the label says the component promotes
    (`autointerp.scoring.token_match.output_label_tokens`); a tie is a guess among the tied lists,
    so a label that names none of them lands at chance."""
    from autointerp.scoring.token_match import output_overlaps

    hits = output_overlaps(label, lists)
    best = max(hits)
    return rng.choice([i for i, h in enumerate(hits) if h == best])


def intruder_by_rules(windows: Sequence[Sequence[str]], marks: Sequence[Sequence[int]], rules: Sequence[Rule], rng: random.Random) -> int:
    """The excerpt whose marked tokens do not follow the planted rule most excerpts follow.

    An excerpt follows a rule when the rule holds at one of its marked tokens
    (one, not all: a mark near the excerpt's start may lack the context the rule
    reads). When no single excerpt stands out -- every excerpt follows the
    majority's rule, or several do not -- the judge guesses among the candidates,
    so a trial with no real outsider lands at chance.
    """
    follows = [[any(r.fires(list(w))[p] for p in m if p < len(w)) for r in rules] for w, m in zip(windows, marks)]
    best = max(range(len(rules)), key=lambda j: (sum(f[j] for f in follows), -j))
    odd = [i for i, f in enumerate(follows) if not f[best]]
    return rng.choice(odd if odd else list(range(len(windows))))


_SYNTH_TOKEN = re.compile(r"\s?[^\s.;,]+|[.;,]|\s")


def split_synthetic_text(text: str) -> list[str]:
    """Split text made of `SyntheticModel` tokens (" word", ".", ";", ",") back into tokens."""
    return _SYNTH_TOKEN.findall(text)


def _prompt_text(request: Any) -> str:
    """The user prompt of a `ServerRequest`, an Anthropic/OpenAI request body, or a plain string."""
    if isinstance(request, str):
        return request
    if hasattr(request, "prompt") and not isinstance(request, Mapping):
        return str(request.prompt)
    msgs = request.get("messages") or []
    parts: list[str] = []
    for m in msgs:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(c.get("text", "") for c in content if isinstance(c, dict))
    if not parts and "prompt" in request:
        parts.append(str(request["prompt"]))
    return "\n".join(parts)


# -- a scripted labeller that refines ---------------------------------------------------------

_MARKED = re.compile(r"<<((?:[^<>\\]|\\.)*)>>")
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t"}


def marked_tokens(text: str) -> list[str]:
    """The tokens marked ``<<like this>>`` in an interpretation prompt, with its escapes read back."""
    return [re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), t) for t in _MARKED.findall(text)]


def _between(text: str, start: str, ends: Sequence[str]) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    rest = text[i + len(start):]
    cut = min([j for j in (rest.find(e) for e in ends) if j >= 0], default=len(rest))
    return rest[:cut]


def _label_tokens_of(label: str) -> set[str]:
    rule = rule_for_label(label)
    if isinstance(rule, TokenRule):
        return {rule.token}
    if isinstance(rule, AnyTokenRule):
        return set(rule.tokens)
    return set(getattr(rule, "tokens", ()))


def _most_frequent(tokens: Sequence[str], exclude: set[str] = frozenset()) -> str | None:
    counts: dict[str, int] = {}
    for t in tokens:
        if t not in exclude:
            counts[t] = counts.get(t, 0) + 1
    return max(sorted(counts), key=lambda t: counts[t]) if counts else None


def refining_labeller_responder(
    tokenize: Callable[[str], list[str]] | None = None, *, rules: Sequence[Rule] | None = None
) -> Callable[[Any], dict]:
    """A responder for `autointerp.testing.llm_server` that plays labeller and judge.

    As the **labeller** its first label is deliberately incomplete: it names only
    the most frequent marked (firing) token of the examples it is shown, so for
    an `AnyTokenRule` it states one token of several. Asked for another candidate
    (``prompts/refine.j2``, "Earlier candidate labels") it names the most frequent
    marked token no earlier candidate named. Shown its mistakes (a revision
    prompt) it revises as a careful labeller would: the tokens marked in the
    misses join the label, tokens it was wrongly predicted at leave it. It reads
    only the prompt text that crossed the wire, never the planted rules.

    As the **judge** (scorer prompts) it is `rule_judge_responder`: it applies the
    rule a label states.
    """
    judge = rule_judge_responder(tokenize, rules=rules)

    def respond(request: Any) -> dict:
        schema = getattr(request, "schema", None) or {}
        if "confidence" not in (schema.get("properties") or {}):
            return judge(request)
        text = _prompt_text(request)
        if "## Your label, tested on examples you have not seen" in text:
            m = re.search(r'The label ("(?:[^"\\]|\\.)*") was given', text)
            current = _label_tokens_of(json.loads(m.group(1))) if m else set()
            misses = _between(text, "### Misses", ("### False positives", "Labels tried so far", "Revise the label"))
            wrong = _between(text, "### False positives", ("Labels tried so far", "Revise the label"))
            added = set(marked_tokens(misses))
            removed = {t for line in wrong.splitlines() if "wrongly predicted at:" in line
                       for t in _shown_tokens(line.split("wrongly predicted at:", 1)[1])}
            tokens = (current | added) - removed or current
            return {"reasoning": f"revised: added {sorted(added)}, removed {sorted(removed)}",
                    "label": label_for_tokens(tokens), "confidence": "high"}
        evidence = text.split("## Earlier candidate labels")[0]
        earlier: set[str] = set()
        if "## Earlier candidate labels" in text:
            section = _between(text, "## Earlier candidate labels", ("Propose a different",))
            for line in section.splitlines():
                if line.startswith("- "):
                    earlier |= _label_tokens_of(json.loads(line[2:]))
        top = _most_frequent(marked_tokens(evidence), earlier) or _most_frequent(marked_tokens(evidence))
        if top is None:
            return {"reasoning": "no firing shown", "label": "no firing tokens shown", "confidence": "low"}
        return {"reasoning": f"the most frequent firing token is {top!r}", "label": label_for_tokens([top]), "confidence": "medium"}

    return respond


def _shown_tokens(text: str) -> list[str]:
    """Tokens as `autointerp.prompts.show_token` lists them (``' cat', ' dog'``)."""
    out = []
    for m in re.finditer(r"'((?:[^'\\]|\\.)*)'", text):
        out.append(json.loads('"' + m.group(1).replace("\\'", "'") + '"'))
    return out
