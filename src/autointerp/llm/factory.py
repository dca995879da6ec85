"""The one backend picker: command-line words (``--backend``) and the no-key default.

Labelling and scoring pick a backend the same way; they differ only in what
stands in for an LLM when there is none (``role``):

* ``role="label"``: the offline token-lookup labeller (`OfflineBackend`);
* ``role="judge"``: the token-match simulator (`TokenMatchBackend`), a baseline.

``kind="auto"`` is Claude when ``ANTHROPIC_API_KEY`` is set, otherwise the
role's offline stand-in, and ``announce`` says so (the stand-in is never
chosen silently). ``kind="offline"`` is the stand-in without the announcement.

>>> make_backend("offline", role="judge").is_baseline
True
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from attrs import frozen

from autointerp.llm.base import Backend

BACKENDS = ("anthropic", "openai", "offline")
ROLES = ("label", "judge")


def _print_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _offline_labeller() -> Backend:
    from autointerp.llm.offline import OfflineBackend

    return OfflineBackend()


def _token_match_judge() -> Backend:
    # imported when asked for: llm/ sits below scoring/ and must not import it at import time
    from autointerp.scoring.token_match import TokenMatchBackend

    return TokenMatchBackend()


@frozen
class _StandIn:
    """What a role uses when no LLM is available, and how it says so by default."""

    build: Callable[[], Backend]
    note: str
    announce: Callable[[str], None]


_STAND_INS: dict[str, _StandIn] = {
    "label": _StandIn(
        _offline_labeller,
        "ANTHROPIC_API_KEY is not set: labelling with the offline token-lookup baseline "
        "(each label is the component's top input and output tokens; no LLM is called). "
        "Export ANTHROPIC_API_KEY for Claude labels.",
        _print_to_stderr,
    ),
    "judge": _StandIn(
        _token_match_judge,
        "ANTHROPIC_API_KEY is not set: scoring with the token-match simulator, a BASELINE that predicts a "
        "firing wherever a token named in the label occurs. It is not an LLM judge.",
        # the scorer's logger, so that logging set up for scoring still shows it
        logging.getLogger("autointerp.scoring").warning,
    ),
}


def make_backend(
    kind: str = "anthropic",
    model: str | None = None,
    *,
    role: str = "label",
    base_url: str | None = None,
    timeout_s: float = 120.0,
    api_key_env: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> Backend:
    """A backend for ``role`` (one of `ROLES`); ``kind`` is one of `BACKENDS` or ``"auto"``.

    ``announce`` receives the note said when ``"auto"`` falls back to the role's
    stand-in (default: stderr for labels, a warning on the ``autointerp.scoring``
    logger for judges). Raises `AuthenticationFailed` when a needed key is missing.
    """
    if role not in _STAND_INS:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    stand_in = _STAND_INS[role]
    if kind == "auto":
        if not os.environ.get("ANTHROPIC_API_KEY"):
            (announce or stand_in.announce)(stand_in.note)
            return stand_in.build()
        kind = "anthropic"
    if kind == "anthropic":
        from autointerp.llm.anthropic import DEFAULT_MODEL, AnthropicBackend

        return AnthropicBackend(model or DEFAULT_MODEL, base_url=base_url, timeout_s=timeout_s)
    if kind == "openai":
        from autointerp.llm.openai_compat import OpenAICompatBackend

        if not model:
            raise ValueError("--backend openai needs --model (the name the server knows, e.g. gpt-4o-mini or llama3.1)")
        kw = {"api_key_env": api_key_env} if api_key_env else {}
        return OpenAICompatBackend(model, base_url=base_url, timeout_s=timeout_s, **kw)
    if kind == "offline":
        return stand_in.build()
    raise ValueError(f"unknown backend {kind!r}; expected 'auto' or one of {BACKENDS}")
