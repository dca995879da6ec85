"""Prompt templates: one Jinja2 environment for every prompt the project sends.

Templates are ``.j2`` files in this package (``interpret.j2``, ``sections/*.j2``,
the scorers' ``scoring/*.j2``), found through a ``PackageLoader``, behind any
folders the user puts first on the search path (so a user's
``sections/examples.j2`` overrides ours). Undefined variables are errors
(``StrictUndefined``): a typo in a template fails on the first render instead
of sending "" to 40,000 prompts.

**Sections.** Every accumulator output has a section template: the one its
accumulator declares as ``prompt_section`` (a file under ``sections/``, recorded
in the harvest's config), else ``sections/<name>.j2`` after the accumulator's
``name``. The main template loops over the rendered sections, so a custom
accumulator (output in ``ComponentData.extras[name]``) reaches the prompt by
adding one file — ``sections/activation_histogram.j2`` in a templates folder, or
``Interpreter(section_templates={"activation_histogram": "hist.j2"})`` — and
without one it still appears, rendered by ``sections/_generic.j2``. Section
templates see ``name``, ``value`` (the output), ``component`` and ``labels``
(labels already known for other components).

**Untrusted text.** Dataset tokens are shown with `show_token`: quoted with
``repr``-like escapes, so a token with a newline, ``<<`` or a quote cannot
break the layout or impersonate the markers. Inside example text
(`inline_token`) every ``<``, ``>`` and ``\\`` of a token is backslash-escaped,
so no sequence of tokens can spell an unescaped ``<<``: each one is a marker.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

PACKAGE_DIR = Path(__file__).parent

_ENVS: dict[tuple[str, ...], jinja2.Environment] = {}


def environment(search_path: Iterable[str | os.PathLike] = ()) -> jinja2.Environment:
    """The Jinja2 environment for a search path (user folders first, then the package).

    One environment per distinct search path, configured only here.
    """
    paths = tuple(str(Path(p)) for p in search_path)
    env = _ENVS.get(paths)
    if env is None:
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(list(paths))] if paths else []
        loaders.append(jinja2.PackageLoader("autointerp", "prompts"))
        env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # prompts are plain text; tokens go through show_token instead
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            # templates do not change during a run; checking would stat() every
            # included file on every render (measurable at hundreds of prompts a second)
            auto_reload=False,
        )
        env.filters["tok"] = show_token
        env.filters["num"] = fmt_num
        env.filters["one_in"] = one_in
        env.filters["pct"] = lambda x: f"{100 * float(x):.1f}%"
        env.filters["readable"] = readable
        env.filters["marked"] = _with_token_kind(marked_text)
        env.filters["firing_summary"] = firing_summary
        env.filters["example_lines"] = _with_token_kind(example_lines)
        env.filters["token_rows"] = token_rows
        env.filters["quote"] = lambda text: json.dumps(str(text), ensure_ascii=False)
        env.filters["partner_rows"] = partner_rows
        env.filters["quoted"] = lambda s: json.dumps(str(s), ensure_ascii=False)  # a label on one line, quotes escaped
        env.globals["one_in"] = one_in
        _ENVS[paths] = env
    return env


def _with_token_kind(render: Any) -> Any:
    """A token-rendering filter that reads the harvest's ``token_kind`` from the template's
    variables, so every section and custom template renders text by the tokenizer's rules
    without passing it; a template rendered without one gets the old rendering."""

    @jinja2.pass_context
    def filt(context: Any, ex: Any, *args: Any, **kwargs: Any) -> str:
        kwargs.setdefault("kind", context.get("token_kind"))
        return render(ex, *args, **kwargs)

    return filt


def load_template(env: jinja2.Environment, name_or_path: str | os.PathLike) -> jinja2.Template:
    """A template by name on the search path, or by file path (``--prompt_template PATH``)."""
    p = Path(name_or_path)
    if p.suffix == ".j2" and p.is_file() and not str(name_or_path).startswith(("sections/", "scoring/")):
        # a file outside the search path: compile it in the same environment, so it
        # can still {% include "sections/..." %} and use the filters
        return env.from_string(p.read_text(encoding="utf-8"))
    try:
        return env.get_template(str(name_or_path))
    except jinja2.TemplateNotFound:
        raise FileNotFoundError(
            f"no prompt template {str(name_or_path)!r}: give a path to a .j2 file or a name under "
            f"{PACKAGE_DIR} (e.g. 'interpret.j2')"
        ) from None


def template_source(env: jinja2.Environment, name_or_path: str | os.PathLike) -> str:
    p = Path(name_or_path)
    if p.is_file():
        return p.read_text(encoding="utf-8")
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, str(name_or_path))
    return source


def sources_hash(sources: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in sources:
        h.update(s.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def render_blocks(template: jinja2.Template, variables: Mapping[str, Any], blocks: Sequence[str] = ("system", "prompt")) -> dict[str, str]:
    """Render named ``{% block %}``s of a template separately (the static system part,
    the per-item prompt). A template without those blocks renders whole as ``prompt``."""
    if not all(b in template.blocks for b in blocks):
        return {**{b: "" for b in blocks}, "prompt": template.render(**variables).strip() + "\n"}
    ctx = template.new_context(dict(variables))
    return {b: "".join(template.blocks[b](ctx)).strip() + "\n" for b in blocks}


# -- helpers the templates use ---------------------------------------------------------


def show_token(token: Any) -> str:
    """A token as a quoted string with escapes: ``' cat'``, ``'\\n'``, ``'<<'``-safe."""
    if token is None:
        return "?"
    if isinstance(token, int):
        return f"#{token}"
    return _show_str(str(token))


@functools.lru_cache(maxsize=65536)
def _show_str(token: str) -> str:
    s = json.dumps(token, ensure_ascii=False)
    return "'" + s[1:-1].replace("'", "\\'") + "'"


@functools.lru_cache(maxsize=65536)
def inline_token(token: str | None, token_id: int) -> str:
    """A token inside running example text: backslash, line breaks and the marker characters escaped, no quotes.

    Every ``<`` and ``>`` of a token is shown as ``\\<`` / ``\\>`` (and ``\\`` as
    ``\\\\``), so an unescaped ``<<``/``>>`` in a prompt is always a firing marker:
    replacing only ``<<`` let the tokens ``<``, ``<``, ``cat``, ``>``, ``>`` spell one.
    """
    if token is None:
        return f"[#{token_id}]"
    return (
        token.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        .replace("<", "\\<").replace(">", "\\>")
    )


def _tok_at(ex: Any, i: int) -> str | None:
    return ex.tokens[i] if ex.tokens is not None and i < len(ex.tokens) else None


def _kind_marked(ex: Any, threshold: float, kind: str) -> str:
    """The example's text joined by the tokenizer's rules (`autointerp.token_text`), firing tokens marked.

    A separator (the space between WordPiece words) stays outside the marks; a firing
    token whose character is completed by a later token (a split UTF-8 byte) passes
    its mark to the token that shows the character, so no mark is ever empty.
    """
    from autointerp.token_text import segments

    acts, off, parts, carry = ex.activations, ex.firing_offset, [], False
    for text, i in segments(list(ex.tokens), kind):
        t = inline_token(text, 0)
        if i is None:
            parts.append(t)
            continue
        fires = carry or (i < len(acts) and acts[i] > threshold) or i == off
        carry = fires and not text
        parts.append("<<" + t + ">>" if fires and text else t)
    return "".join(parts)


def marked_text(ex: Any, threshold: float = 0.0, kind: str | None = None) -> str:
    """An `ActivationExample` as text, tokens where it fires wrapped in ``<<...>>``.

    The sampled firing (``firing_offset``) is always marked, even when the
    threshold passed here is higher than the harvest's. ``kind`` is the harvest's
    ``tokenizer_kind`` (templates get it as ``token_kind``); None shows each token
    as recorded, glued (older harvests).
    """
    if kind is not None and ex.tokens is not None:
        return _kind_marked(ex, threshold, kind)
    parts = []
    for i, (tid, act) in enumerate(zip(ex.token_ids, ex.activations)):
        t = inline_token(_tok_at(ex, i), tid)
        parts.append(f"<<{t}>>" if (act > threshold or i == ex.firing_offset) else t)
    return "".join(parts)


def firing_summary(ex: Any, threshold: float = 0.0, n: int = 4) -> str:
    """The strongest firing tokens of an example with their activations: ``' cat' 0.83, ' a' 0.2``."""
    firing = [(a, i) for i, a in enumerate(ex.activations) if a > threshold or i == ex.firing_offset]
    firing.sort(key=lambda x: -x[0])
    shown = ", ".join(f"{show_token(_tok_at(ex, i) if ex.tokens is not None else ex.token_ids[i])} {fmt_num(a)}" for a, i in firing[:n])
    if len(firing) > n:
        shown += f" (+{len(firing) - n} more)"
    return shown


def example_lines(ex: Any, threshold: float = 0.0, n: int = 4, kind: str | None = None) -> str:
    """`marked_text` and `firing_summary` of an example in one pass (the hot path of rendering)."""
    if kind is not None and ex.tokens is not None:
        return _kind_marked(ex, threshold, kind) + "\n   activations: " + firing_summary(ex, threshold, n)
    toks = ex.tokens
    parts = []
    firing = []
    off = ex.firing_offset
    for i, (tid, act) in enumerate(zip(ex.token_ids, ex.activations)):
        t = inline_token(toks[i] if toks is not None and i < len(toks) else None, tid)
        if act > threshold or i == off:
            parts.append("<<" + t + ">>")
            firing.append((act, i))
        else:
            parts.append(t)
    firing.sort(key=lambda x: -x[0])
    shown = ", ".join(
        f"{show_token(toks[i] if toks is not None and i < len(toks) else ex.token_ids[i])} {fmt_num(a)}" for a, i in firing[:n]
    )
    if len(firing) > n:
        shown += f" (+{len(firing) - n} more)"
    return "".join(parts) + "\n   activations: " + shown


def token_rows(stats: Any, n: int = 8) -> list[str]:
    """A `TokenStats` as one deduplicated list: the top ``n`` by precision, then by recall
    and PMI where they add tokens, each with its precision, recall and PMI."""
    if stats is None:
        return []
    seen: set[int] = set()
    rows = []
    for ranking in (stats.top_precision, stats.top_recall, stats.top_pmi):
        for st in ranking[:n]:
            if st.token_id in seen:
                continue
            seen.add(st.token_id)
            tok = show_token(st.token if st.token is not None else st.token_id)
            rows.append(f"{tok}: precision {st.precision:.2g}, recall {st.recall:.2g}, PMI {st.pmi:.2g}")
    return rows


def partner_rows(corr: Any, labels: Mapping[str, str] | None = None, n: int = 8) -> list[str]:
    """Co-firing partners (top by recall, then by PMI, deduplicated), with known labels."""
    if corr is None:
        return []
    labels = labels or {}
    seen: set[str] = set()
    rows = []
    for ranking in (corr.top_recall, corr.top_pmi):
        for p in ranking[:n]:
            if p.key in seen:
                continue
            seen.add(p.key)
            row = (
                f"{p.key}: P(it fires | partner fires) {p.precision:.2g}, "
                f"P(partner fires | it fires) {p.recall:.2g}, PMI {p.pmi:.2g}"
            )
            label = labels.get(p.key)
            if label:
                row += f" -- labeled {json.dumps(label, ensure_ascii=False)}"
            rows.append(row)
    return rows


def fmt_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def one_in(rate: float) -> str:
    """A firing rate in words: 0.0123 -> 'about 1 in 81 tokens'."""
    if rate <= 0:
        return "never"
    n = 1.0 / rate
    if n < 1.5:
        return "on almost every token"
    if n < 100:
        r = round(n)
    else:  # two significant digits: 1 in 2,300 rather than 1 in 2,317
        mag = 10 ** (int(math.log10(n)) - 1)
        r = int(round(n / mag) * mag)
    return f"about 1 in {r:,} tokens"


def readable(value: Any, max_chars: int = 1500) -> str:
    """A generic rendering of a custom accumulator's output (for sections with no template)."""
    if isinstance(value, Mapping):
        lines = [f"- {k}: {readable(v, 200)}" for k, v in list(value.items())[:40]]
        text = "\n".join(lines)
    elif isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) for v in value):
            text = "[" + ", ".join(fmt_num(v) for v in value[:200]) + ("]" if len(value) <= 200 else ", ...]")
        else:
            text = "\n".join(f"- {readable(v, 200)}" for v in value[:40])
    elif isinstance(value, float):
        text = fmt_num(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(value)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
