"""Claude through the official SDK: structured outputs, prompt caching, typed errors.

`AnthropicBackend` sends each `LLMRequest` with ``anthropic.AsyncAnthropic``:

* the JSON schema goes in ``output_config={"format": {"type": "json_schema",
  "schema": ...}}`` (structured outputs), so the answer is JSON by construction;
  it is still parsed and checked here, because a cut-off or refused answer is not;
* the static part of the prompt (``request.system``) is one system block marked
  ``cache_control: ephemeral``: every component after the first reads it from
  the cache at a tenth of the input price;
* no ``temperature`` (the model's default);
* the SDK's own retries are off (``max_retries=0``): `autointerp.llm.runner`
  retries everything in one place (see its docstring). SDK errors become the
  seam's errors: 401/403 -> `AuthenticationFailed`; 408/409/429/5xx/529,
  timeouts and dropped connections -> `TransientError` with the server's
  ``retry-after``; other 4xx -> `RequestRejected`.

The key comes from ``ANTHROPIC_API_KEY`` or from a client the caller passes in;
it is never logged or written (`redact` scrubs every message we produce).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from autointerp.llm.base import (
    AuthenticationFailed,
    InvalidResponse,
    LLMRequest,
    LLMResponse,
    SDKClientBackend,
    RequestRejected,
    TransientError,
    parse_json_answer,
    redact,
    register_secret,
)
from autointerp.schemas import TokenUsage

DEFAULT_MODEL = "claude-haiku-4-5-20251001"
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
KEY_ENV = "ANTHROPIC_API_KEY"


def retry_after_of(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (number or HTTP date), or None."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, float(email.utils.mktime_tz(parsed) - time.time()))


def translate_sdk_error(e: Exception, sdk: Any) -> Exception:
    """Map an anthropic/openai SDK exception onto the seam's error types (messages redacted)."""
    msg = redact(str(e))
    if isinstance(e, getattr(sdk, "AuthenticationError", ())) or isinstance(e, getattr(sdk, "PermissionDeniedError", ())):
        return AuthenticationFailed(f"the server refused the credentials ({getattr(e, 'status_code', '?')}): {msg}")
    if isinstance(e, sdk.APITimeoutError):
        return TransientError("request timed out")
    if isinstance(e, sdk.APIConnectionError):
        return TransientError(f"connection error: {msg}")
    if isinstance(e, sdk.APIStatusError):
        status = e.status_code
        retry_after = retry_after_of(getattr(e.response, "headers", None))
        should = getattr(e.response, "headers", {}).get("x-should-retry") if getattr(e, "response", None) is not None else None
        if status in (408, 409, 429) or status >= 500 or should == "true":
            return TransientError(f"HTTP {status}: {msg}", retry_after=retry_after)
        return RequestRejected(f"HTTP {status}: {msg}")
    return e


class AnthropicBackend(SDKClientBackend):
    """Claude via ``anthropic.AsyncAnthropic`` with structured outputs.

    >>> backend = AnthropicBackend("claude-haiku-4-5-20251001")   # key from ANTHROPIC_API_KEY
    >>> backend = AnthropicBackend(client=anthropic.AsyncAnthropic(...))   # or bring a client

    ``base_url`` points the SDK elsewhere (a proxy, or the test server).
    ``timeout_s`` is the SDK's per-request timeout. Raises `AuthenticationFailed`
    at once when there is no key.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        client: Any | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        cache_system_prompt: bool = True,
    ):
        import os

        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.cache_system_prompt = cache_system_prompt
        self._user_client = client
        self._clients: dict[int, Any] = {}
        if api_key is not None:
            register_secret(api_key)
        self._api_key = api_key
        if client is None and not (api_key or os.environ.get(KEY_ENV)):
            raise AuthenticationFailed(
                f"{KEY_ENV} is not set: export {KEY_ENV}=... (or pass AnthropicBackend(client=...)), "
                "or use the offline baseline with --backend offline"
            )

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url is not None else ""
        return redact(f"AnthropicBackend({self.model!r}{where})")

    def make_client(self) -> Any:
        import anthropic

        kwargs: dict[str, Any] = {"max_retries": 0, "timeout": self.timeout_s}
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        return anthropic.AsyncAnthropic(**kwargs)

    def build_params(self, request: LLMRequest) -> dict[str, Any]:
        """The ``messages.create`` arguments for ``request`` (also used by Message Batches)."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
            "output_config": {"format": {"type": "json_schema", "schema": request.schema}},
        }
        if request.system:
            block: dict[str, Any] = {"type": "text", "text": request.system}
            if self.cache_system_prompt:
                block["cache_control"] = {"type": "ephemeral"}
            params["system"] = [block]
        return params

    def parse_message(self, message: Any, request: LLMRequest) -> LLMResponse:
        """A Messages API answer -> `LLMResponse`, or `InvalidResponse`.

        ``message`` is the JSON body as a dict (live calls) or an SDK ``Message``
        (Message Batches results).
        """
        if isinstance(message, dict):
            u = message.get("usage") or {}
            blocks = message.get("content") or []
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            stop = message.get("stop_reason") or ""
            model = message.get("model") or self.model
        else:
            u = {k: getattr(message.usage, k, 0) for k in _USAGE_FIELDS}
            text = "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", "") == "text")
            stop = message.stop_reason or ""
            model = getattr(message, "model", self.model) or self.model
        usage = TokenUsage(**{k: int(u.get(k) or 0) for k in _USAGE_FIELDS})
        if stop == "max_tokens":
            raise InvalidResponse(f"the answer was cut off at max_tokens={request.max_tokens}", text, usage)
        if stop == "refusal":
            raise InvalidResponse("the model refused to answer", text, usage)
        data = parse_json_answer(text, request.schema, usage)
        return LLMResponse(data=data, usage=usage, raw_text=text, model=model, stop_reason=stop)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        import anthropic

        try:
            # the raw response's JSON body: building the SDK's pydantic Message for every
            # answer costs about half a millisecond of CPU we only need four fields of
            raw = await self.client().messages.with_raw_response.create(**self.build_params(request))
            message = await raw.json()
            if not isinstance(message, dict):
                raise ValueError(f"a JSON {type(message).__name__}, not an object")
        except ValueError as e:  # a body that is not a JSON object (a broken proxy, a cut connection)
            raise TransientError(f"the server's response body could not be read as a message: {redact(str(e))}") from None
        except anthropic.AnthropicError as e:
            raise translate_sdk_error(e, anthropic) from None
        except TypeError as e:  # the SDK raises TypeError when no credentials resolve
            raise AuthenticationFailed(f"no Anthropic credentials: set {KEY_ENV} ({redact(str(e))})") from None
        return self.parse_message(message, request)

    async def preflight(self) -> None:
        """Check the credentials with one free request (``GET /v1/models``) before any work.

        Only an authentication failure is fatal; a proxy without that endpoint is fine.
        """
        import anthropic

        try:
            await self.client().models.list(limit=1)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as e:
            raise translate_sdk_error(e, anthropic) from None
        except anthropic.AnthropicError:
            return
        except TypeError as e:
            raise AuthenticationFailed(f"no Anthropic credentials: set {KEY_ENV} ({redact(str(e))})") from None
