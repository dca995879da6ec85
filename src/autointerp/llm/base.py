"""The one small seam between autointerp and an LLM: a request in, parsed JSON out.

The interpreter and every scorer talk to models only through `Backend.complete`.
A backend turns an `LLMRequest` (a cacheable system prompt, a user prompt and a
JSON schema) into an `LLMResponse` (the parsed JSON, token usage and the raw
text), and signals trouble with three exception types:

* `AuthenticationFailed`: no key, or a key the server refuses. Fatal: the run
  stops at once, before any other work.
* `TransientError`: rate limits, overload, 5xx, timeouts, dropped connections.
  Retried with backoff by the runner (``retry_after`` honoured when given).
* `InvalidResponse`: the answer was not JSON, did not match the schema, or was
  cut off at ``max_tokens``. Retried, then recorded as a failure.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from attrs import define, field

from autointerp.schemas import TokenUsage


@define
class LLMRequest:
    """One call. ``system`` is the static part (same for every component: marked for
    prompt caching where the backend supports it); ``prompt`` is the per-item part."""

    prompt: str
    schema: dict[str, Any]
    system: str = ""
    max_tokens: int = 1024
    schema_name: str = "response"
    metadata: dict[str, Any] = field(factory=dict)


@define
class LLMResponse:
    data: dict[str, Any]
    usage: TokenUsage
    raw_text: str
    model: str


class LLMError(Exception):
    """Base of the errors a backend raises."""


class AuthenticationFailed(LLMError):
    """Missing or rejected credentials. Never contains the key itself."""


class TransientError(LLMError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class InvalidResponse(LLMError):
    def __init__(self, message: str, raw_text: str = "", usage: TokenUsage | None = None):
        super().__init__(message)
        self.raw_text = raw_text
        self.usage = usage or TokenUsage()


@runtime_checkable
class Backend(Protocol):
    """Anything with a ``model`` name and an async ``complete``."""

    model: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...
