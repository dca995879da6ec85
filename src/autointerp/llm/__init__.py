"""LLM backends and the one job runner that the interpreter and every scorer share."""

from autointerp.llm.base import (
    AuthenticationFailed,
    Backend,
    InvalidResponse,
    LLMRequest,
    LLMResponse,
    TransientError,
)

__all__ = ["AuthenticationFailed", "Backend", "InvalidResponse", "LLMRequest", "LLMResponse", "TransientError"]
