"""LLM backends and the one job runner that the interpreter and every scorer share.

* `autointerp.llm.base`: the seam (`LLMRequest`, `LLMResponse`, `Backend`, errors, `redact`).
* `autointerp.llm.runner`: `JobRunner` (concurrency, retries, resume, cost) and `PriceTable`.
* backends: `AnthropicBackend`, `OpenAICompatBackend`, `OfflineBackend` (imported lazily,
  so ``import autointerp.llm`` does not import the SDKs).
"""

from autointerp.llm.base import (
    AuthenticationFailed,
    Backend,
    InvalidResponse,
    LLMRequest,
    LLMResponse,
    RequestRejected,
    TransientError,
    redact,
)
from autointerp.llm.runner import Job, JobRunner, ModelPrice, PriceTable, RunSummary, run_coroutine_sync

_LAZY = {
    "AnthropicBackend": "autointerp.llm.anthropic",
    "OpenAICompatBackend": "autointerp.llm.openai_compat",
    "OfflineBackend": "autointerp.llm.offline",
    "TokenLookupBackend": "autointerp.llm.offline",
    "token_lookup_label": "autointerp.llm.offline",
    "make_backend": "autointerp.llm.factory",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autointerp.llm' has no attribute {name!r}")


__all__ = [
    "AnthropicBackend",
    "AuthenticationFailed",
    "Backend",
    "InvalidResponse",
    "Job",
    "JobRunner",
    "LLMRequest",
    "LLMResponse",
    "ModelPrice",
    "OfflineBackend",
    "OpenAICompatBackend",
    "PriceTable",
    "RequestRejected",
    "RunSummary",
    "TokenLookupBackend",
    "TransientError",
    "make_backend",
    "redact",
    "run_coroutine_sync",
    "token_lookup_label",
]
