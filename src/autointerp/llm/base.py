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

import json
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
#: the user:password@ (or token@) part of a URL: https://alice:pw@host/v1 -> https://[redacted]@host/v1
_URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#]+@")
#: an HTTP credential scheme and its value, as a server or proxy echoes a request's headers back
_AUTH_SCHEME = re.compile(r"\b(Basic|Bearer|bearer|Digest)(\s+)[A-Za-z0-9._~+/=\-]{8,}")
#: a credential-named header, JSON field or query parameter and its value
_NAMED_CREDENTIAL = re.compile(
    r"(\b(?:x-api-key|api[-_]?key|apikey|access[-_]?token|auth[-_]?token|x-goog-api-key|password|passwd)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+",
    re.IGNORECASE,
)
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make `redact` remove ``value`` too (a key a notebook user passed in directly)."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``[redacted]``.

    Known secrets: values of environment variables named ``*API_KEY``, ``*_TOKEN``,
    ``*_SECRET``, keys given to a backend's constructor, and anything shaped like
    an Anthropic or OpenAI key. Shapes of secrets: the ``user:password@`` of a URL
    (``--base_url https://alice:pw@host/v1``), an HTTP credential
    (``Basic ...``, ``Bearer ...``) and the value of a credential-named header,
    field or query parameter (``x-api-key: ...``, ``"api_key": "..."``,
    ``?access_token=...``), as a server echoes a request back in its error. Every
    message the project writes (failure reasons, log lines, errors it raises,
    a backend's ``repr``) goes through this.

    >>> redact("POST https://alice:pw@llm.example/v1 failed: you sent Basic YWxpY2U6cHc=")
    'POST https://[redacted]@llm.example/v1 failed: you sent Basic [redacted]'
    """
    if not text:
        return text
    secrets = set(_extra_secrets)
    for name, value in os.environ.items():
        if value and len(value) >= 6 and _SECRET_ENV.search(name):
            secrets.add(value)
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    text = _URL_USERINFO.sub(r"\1[redacted]@", text)
    text = _AUTH_SCHEME.sub(r"\1\2[redacted]", text)
    text = _NAMED_CREDENTIAL.sub(r"\1[redacted]", text)
    return _SECRET_PATTERNS.sub("[redacted]", text)


@runtime_checkable
class Backend(Protocol):
    """Anything with a ``model`` name and an async ``complete``."""

    model: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(data: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What in ``data`` violates ``schema`` (the JSON-schema subset structured outputs use:
    type, properties, required, additionalProperties, enum, items, min/maxItems,
    minimum/maximum, min/maxLength). Empty when it conforms."""
    errs: list[str] = []
    if not schema:
        return errs
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        ok = False
        for name in types:
            py = _JSON_TYPES.get(name, (object,))
            if isinstance(data, bool) and name in ("integer", "number"):
                continue
            if isinstance(data, py):
                ok = True
                break
        if not ok:
            return [f"{where}: expected {t}, got {type(data).__name__}"]
    if "enum" in schema and data not in schema["enum"]:
        errs.append(f"{where}: {data!r} is not one of {schema['enum']}")
    if isinstance(data, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in data:
                errs.append(f"{where}: missing required field {req!r}")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(data) - set(props))
            if extra:
                errs.append(f"{where}: unexpected fields {extra}")
        for k, sub in props.items():
            if k in data:
                errs.extend(schema_errors(data[k], sub, f"{where}.{k}"))
    elif isinstance(data, list):
        if "minItems" in schema and len(data) < schema["minItems"]:
            errs.append(f"{where}: {len(data)} items, expected at least {schema['minItems']}")
        if "maxItems" in schema and len(data) > schema["maxItems"]:
            errs.append(f"{where}: {len(data)} items, expected at most {schema['maxItems']}")
        if "items" in schema:
            for i, item in enumerate(data):
                errs.extend(schema_errors(item, schema["items"], f"{where}[{i}]"))
    elif isinstance(data, str):
        if "minLength" in schema and len(data) < schema["minLength"]:
            errs.append(f"{where}: string shorter than {schema['minLength']}")
        if "maxLength" in schema and len(data) > schema["maxLength"]:
            errs.append(f"{where}: string longer than {schema['maxLength']}")
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        if "minimum" in schema and data < schema["minimum"]:
            errs.append(f"{where}: {data} < minimum {schema['minimum']}")
        if "maximum" in schema and data > schema["maximum"]:
            errs.append(f"{where}: {data} > maximum {schema['maximum']}")
    return errs


def parse_json_answer(text: str, schema: dict[str, Any], usage: TokenUsage | None = None) -> dict[str, Any]:
    """Parse a model's text as a JSON object matching ``schema``, or raise `InvalidResponse`.

    No regex fishing in free text: structured outputs make the answer JSON, so
    anything else is a failure to retry, never a "label".
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise InvalidResponse(f"the answer is not valid JSON ({e.msg if hasattr(e, 'msg') else e})", text, usage) from None
    if not isinstance(data, dict):
        raise InvalidResponse(f"the answer is JSON but not an object (got {type(data).__name__})", text, usage)
    errs = schema_errors(data, schema)
    if errs:
        raise InvalidResponse("the answer does not match the schema: " + "; ".join(errs[:5]), text, usage)
    return data


class SDKClientBackend:
    """The per-event-loop SDK client that `AnthropicBackend` and `OpenAICompatBackend` share.

    An SDK's async client belongs to the event loop it was first used in; a notebook
    that calls ``Interpreter.run`` twice runs two loops, so keep one client per loop.
    A client the caller passed in (``self._user_client``) is always used as is.
    Subclasses implement ``make_client()``.
    """

    _user_client: Any = None
    _clients: dict[int, Any]

    def make_client(self) -> Any:
        raise NotImplementedError

    def client(self) -> Any:
        if self._user_client is not None:
            return self._user_client
        import asyncio

        loop = asyncio.get_running_loop()
        c = self._clients.get(id(loop))
        if c is None:
            c = self.make_client()
            self._clients = {id(loop): c}
        return c

    async def release(self) -> None:
        """Close the client this backend made for the running event loop (the runner calls
        this at the end of a run, so no connection outlives its loop)."""
        import asyncio

        c = self._clients.pop(id(asyncio.get_running_loop()), None)
        if c is not None:
            await c.close()
