"""Build a backend from command-line words: ``--backend anthropic|openai|offline``."""

from __future__ import annotations

from autointerp.llm.base import Backend

BACKENDS = ("anthropic", "openai", "offline")


def make_backend(
    kind: str = "anthropic",
    model: str | None = None,
    *,
    base_url: str | None = None,
    timeout_s: float = 120.0,
    api_key_env: str | None = None,
) -> Backend:
    """``kind`` is one of `BACKENDS`. Raises `AuthenticationFailed` when a needed key is missing."""
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
        from autointerp.llm.offline import OfflineBackend

        return OfflineBackend()
    raise ValueError(f"unknown backend {kind!r}; expected one of {BACKENDS}")
