"""Any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, OpenRouter, LM Studio) by base URL and model.

`OpenAICompatBackend` uses the ``openai`` SDK's ``AsyncOpenAI`` with
``response_format={"type": "json_schema", ...}`` (strict), the static prompt as
the system message (servers that cache prompt prefixes reuse it), and the same
error mapping and ``max_retries=0`` policy as the Anthropic backend: the runner
does the retrying.

Keys: ``OPENAI_API_KEY`` (or ``api_key_env=...``, e.g. ``OPENROUTER_API_KEY``) is
required only for the official endpoint; a local server (``base_url`` given)
gets a placeholder key when none is set.
"""

from __future__ import annotations

import os
from typing import Any

from autointerp.llm.anthropic import translate_sdk_error
from autointerp.llm.base import (
    AuthenticationFailed,
    InvalidResponse,
    LLMRequest,
    LLMResponse,
    SDKClientBackend,
    TransientError,
    parse_json_answer,
    redact,
    register_secret,
)
from autointerp.schemas import TokenUsage


class OpenAICompatBackend(SDKClientBackend):
    """Chat completions with a JSON-schema response format.

    >>> OpenAICompatBackend("Qwen/Qwen2.5-7B-Instruct", base_url="http://localhost:8000/v1")   # vLLM
    >>> OpenAICompatBackend("llama3.1", base_url="http://localhost:11434/v1")                 # Ollama
    >>> OpenAICompatBackend("gpt-4o-mini")                                                    # OpenAI

    ``strict``: ask the server to enforce the schema (OpenAI, vLLM); the answer is
    checked here either way. ``max_tokens_param``: the name of the output-length
    argument (``max_completion_tokens`` for OpenAI, ``max_tokens`` for most
    compatible servers; chosen from ``base_url`` when not given).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        client: Any | None = None,
        timeout_s: float = 120.0,
        strict: bool = True,
        max_tokens_param: str | None = None,
    ):
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.strict = strict
        self.max_tokens_param = max_tokens_param or ("max_completion_tokens" if base_url is None else "max_tokens")
        self._user_client = client
        self._clients: dict[int, Any] = {}
        key = api_key or os.environ.get(api_key_env)
        if api_key is not None:
            register_secret(api_key)
        if client is None and not key:
            if base_url is None:
                raise AuthenticationFailed(
                    f"{api_key_env} is not set: export it, pass api_key=..., or give base_url= for a local server"
                )
            key = "not-needed"
        self._api_key = key

    def __repr__(self) -> str:
        return redact(f"OpenAICompatBackend({self.model!r}, base_url={self.base_url!r})")

    def make_client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s)

    def build_params(self, request: LLMRequest) -> dict[str, Any]:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        return {
            "model": self.model,
            "messages": messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": self.strict},
            },
            self.max_tokens_param: request.max_tokens,
        }

    async def complete(self, request: LLMRequest) -> LLMResponse:
        import openai

        try:
            resp = await self.client().chat.completions.create(**self.build_params(request))
        except openai.OpenAIError as e:
            raise translate_sdk_error(e, openai) from None
        except ValueError as e:  # the SDK lets a body that is not JSON (a broken proxy) escape as JSONDecodeError
            raise TransientError(f"the server's response body could not be read: {redact(str(e))}") from None
        u = resp.usage
        cached = 0
        if u is not None and getattr(u, "prompt_tokens_details", None) is not None:
            cached = int(getattr(u.prompt_tokens_details, "cached_tokens", 0) or 0)
        usage = TokenUsage(
            input_tokens=int(getattr(u, "prompt_tokens", 0) or 0) - cached if u else 0,
            output_tokens=int(getattr(u, "completion_tokens", 0) or 0) if u else 0,
            cache_read_input_tokens=cached,
        )
        if not resp.choices:
            raise InvalidResponse("the server returned no choices", "", usage)
        choice = resp.choices[0]
        text = choice.message.content or ""
        if choice.finish_reason == "length":
            raise InvalidResponse(f"the answer was cut off at {self.max_tokens_param}={request.max_tokens}", text, usage)
        refusal = getattr(choice.message, "refusal", None)
        if refusal:
            raise InvalidResponse(f"the model refused: {refusal}", text, usage)
        data = parse_json_answer(text, request.schema, usage)
        return LLMResponse(data=data, usage=usage, raw_text=text, model=resp.model or self.model, stop_reason=choice.finish_reason or "")

    async def preflight(self) -> None:
        import openai

        try:
            await self.client().models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise translate_sdk_error(e, openai) from None
        except openai.OpenAIError:
            return
