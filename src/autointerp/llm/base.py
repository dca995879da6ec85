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
* `RequestRejected`: the server refused this one request for good (400: prompt
  too long, bad parameters). Recorded as a failure at once, not retried.

`redact` removes API keys from any text before the project writes it anywhere.
"""

from __future__ import annotations

import os
import re
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
    """What a backend returns. ``elapsed_s`` is filled in by the runner (wall time of
    the successful attempt)."""

    data: dict[str, Any]
    usage: TokenUsage
    raw_text: str
    model: str
    elapsed_s: float = 0.0
    stop_reason: str = ""


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


class RequestRejected(LLMError):
    """The server refused this request for good (HTTP 400, 404, 413, 422): retrying
    the same request cannot help. Recorded as a failure without retries."""


_SECRET_ENV = re.compile(r"(API_KEY|_TOKEN|_SECRET)$")
_SECRET_PATTERNS = re.compile(r"\b(sk-ant-[A-Za-z0-9_\-]{6,}|sk-[A-Za-z0-9_\-]{16,})")
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make `redact` remove ``value`` too (a key a notebook user passed in directly)."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``[redacted]``.

    Known secrets: values of environment variables named ``*API_KEY``, ``*_TOKEN``,
    ``*_SECRET``, keys given to a backend's constructor, and anything shaped like
    an Anthropic or OpenAI key. Every message the project writes (failure reasons,
    log lines, errors it raises) goes through this.
    """
    if not text:
        return text
    secrets = set(_extra_secrets)
    for name, value in os.environ.items():
        if value and len(value) >= 6 and _SECRET_ENV.search(name):
            secrets.add(value)
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return _SECRET_PATTERNS.sub("[redacted]", text)


@runtime_checkable
class Backend(Protocol):
    """Anything with a ``model`` name and an async ``complete``."""

    model: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...
