"""A real HTTP server on 127.0.0.1 that speaks enough of the LLM APIs to test against.

Tests point the real SDKs at it through ``base_url``: the transport is real, only
the far end is ours. It speaks

* the Anthropic Messages API (``POST /v1/messages``, structured output through
  ``output_config.format``), ``GET /v1/models``,
* the Message Batches endpoints (``POST /v1/messages/batches``,
  ``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results``),
* OpenAI chat completions (``POST /v1/chat/completions``, ``json_schema``
  ``response_format``) and ``GET /v1/models``.

What the model "answers" comes from a pluggable ``responder``: a callable taking a
`ServerRequest` (api, model, system, prompt, schema, ...) and returning the JSON
object to answer with (or a string, sent verbatim as the text). The default
fills the requested schema with plausible values. A scorer's tests plug in a
scripted judge that applies rules to the prompt.

Faults are injected on a schedule, thread-safely, one per request:

* ``server.push_faults("429", "529", ...)``: the next requests get these faults,
  in order (None = answer normally);
* ``fault_rates={"429": 0.05, "drop": 0.01}`` with ``seed``: random faults;
* ``fault_for=lambda req: ...``: decide per request (e.g. by component key).

Fault names: ``"429"`` (with ``retry-after: <retry_after_s>``), ``"529"``
(overloaded), ``"500"``, ``"401"`` (authentication), ``"400"`` (bad request),
``"slow"`` (answers after ``slow_s`` seconds, longer than a test's timeout),
``"malformed_json"`` (text that is not JSON), ``"schema_violation"`` (JSON that
misses the schema's required fields), ``"max_tokens"`` (cut off mid-answer with
``stop_reason: max_tokens`` / ``finish_reason: length``), ``"drop"`` (the
connection is closed without an answer), ``"bad_body"`` (status 200 with a
body that is not JSON at all, as from a broken proxy) and ``"lone_surrogate"``
(valid JSON whose label, or first string value, ends in the escape ``\\ud83d``, half of
a surrogate pair: it parses, but no UTF-8 file can store it) and ``"echo_auth"``
(a 400 whose error message repeats the request's ``authorization`` and
``x-api-key`` headers, as a careless proxy does: what reaches the client's
logs and files must be redacted).

The server is an asyncio HTTP/1.1 server (keep-alive, a 1024-connection backlog) on
its own event loop in a daemon thread, so 50 connections waiting out a simulated
latency cost nothing. Every request is recorded (``server.requests``) for assertions. Usage is
simulated: about one token per four characters, and the system prompt is
"cached" after its first use (cache writes, then cache reads) when it carries
``cache_control``.

Run standalone (the benchmark does, so client and server use different cores)::

    python -m autointerp.testing.llm_server --latency 0.2
    # prints: listening on http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from attrs import define, field

FAULTS = ("429", "529", "500", "401", "400", "slow", "malformed_json", "schema_violation", "max_tokens", "drop",
          "bad_body", "lone_surrogate", "echo_auth")


@define
class ServerRequest:
    """One request as the server saw it. ``prompt`` is the user message text."""

    api: str  # "anthropic" | "openai" | "batch"
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    model: str = ""
    system: str = ""
    prompt: str = ""
    schema: dict[str, Any] | None = None
    max_tokens: int = 0
    fault: str | None = None
    custom_id: str | None = None
    time: float = field(factory=time.time)


Responder = Callable[[ServerRequest], "dict[str, Any] | str"]


def fill_schema(schema: Mapping[str, Any] | None, hint: str = "") -> Any:
    """A plausible value matching a JSON schema (objects, strings, enums, numbers, arrays)."""
    if not schema:
        return {"label": f"label {hint}".strip(), "confidence": "medium", "reasoning": "default responder"}
    if "enum" in schema:
        return schema["enum"][0]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t == "object" or "properties" in schema:
        return {k: fill_schema(v, hint if k in ("label", "explanation") else "") for k, v in schema.get("properties", {}).items()}
    if t == "array":
        n = max(1, schema.get("minItems", 1))
        return [fill_schema(schema.get("items", {}), hint) for _ in range(n)]
    if t == "integer":
        return int(schema.get("minimum", 0))
    if t == "number":
        return float(schema.get("minimum", 0.5))
    if t == "boolean":
        return False
    return f"text {hint}".strip() if hint else "text"


def default_responder(req: ServerRequest) -> dict[str, Any]:
    """Fills the request's schema; a ``label`` names the first ``component:`` line of the prompt."""
    hint = ""
    for line in req.prompt.splitlines():
        if "component" in line.lower() and ":" in line:
            hint = line.split(":", 1)[1].strip()[:60]
            break
    return fill_schema(req.schema, hint)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


class LLMServer:
    """The fake LLM server. Use as a context manager, or ``start()`` / ``stop()``.

    >>> with LLMServer(latency_s=0.0) as server:
    ...     client = anthropic.Anthropic(base_url=server.url, api_key="test")

    ``api_key``: when set, requests with another key get 401. ``batch_polls``: a
    batch reports ``in_progress`` for this many status requests before it ends.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float = 0.0,
        api_key: str | None = None,
        fault_rates: Mapping[str, float] | None = None,
        fault_for: Callable[[ServerRequest], str | None] | None = None,
        seed: int = 0,
        retry_after_s: float = 0.05,
        slow_s: float = 2.0,
        batch_polls: int = 1,
        port: int = 0,
        record: bool = True,
        error_detail: Callable[[ServerRequest], str] | None = None,
    ):
        self.responder = responder or default_responder
        self.latency_s = latency_s
        self.api_key = api_key
        self.fault_rates = dict(fault_rates or {})
        for name in self.fault_rates:
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; known: {FAULTS}")
        self.fault_for = fault_for
        self.rng = random.Random(seed)
        self.retry_after_s = retry_after_s
        self.slow_s = slow_s
        self.batch_polls = batch_polls
        self.record = record
        #: appended to every error message (tests use it to echo what the client sent)
        self.error_detail = error_detail
        self.requests: list[ServerRequest] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self._queue: deque[str | None] = deque()
        self._lock = threading.Lock()
        self._cached_systems: set[str] = set()
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self.faults_served: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._bound_port is not None, "start() the server first"
        return f"http://127.0.0.1:{self._bound_port}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> LLMServer:
        """Serve on 127.0.0.1 from an event loop in a daemon thread."""
        ready = threading.Event()
        box: dict[str, Any] = {}

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await _Connection(self, reader, writer).serve()

            async def boot() -> asyncio.base_events.Server:
                return await asyncio.start_server(handle, "127.0.0.1", self._port, backlog=1024, limit=2**24)

            try:
                server = loop.run_until_complete(boot())
            except BaseException as e:  # noqa: BLE001 - reported to start()
                box["error"] = e
                ready.set()
                return
            box["port"] = server.sockets[0].getsockname()[1]
            box["server"] = server
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                tasks = asyncio.all_tasks(loop)
                for t in tasks:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=serve, name="llm-server", daemon=True)
        self._thread.start()
        ready.wait()
        if "error" in box:
            raise box["error"]
        self._bound_port = box["port"]
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop = None
            self._bound_port = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------

    def push_faults(self, *faults: str | None) -> None:
        """The next ``len(faults)`` requests get these faults, in order (None: no fault)."""
        for f in faults:
            if f is not None and f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; known: {FAULTS}")
        with self._lock:
            self._queue.extend(faults)

    def _pick_fault(self, req: ServerRequest) -> str | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.fault_for is not None:
            f = self.fault_for(req)
            if f is not None:
                return f
        if self.fault_rates:
            with self._lock:
                r = self.rng.random()
            acc = 0.0
            for name, p in self.fault_rates.items():
                acc += p
                if r < acc:
                    return name
        return None

    def _note(self, req: ServerRequest) -> None:
        with self._lock:
            if self.record:
                self.requests.append(req)
            if req.fault:
                self.faults_served[req.fault] = self.faults_served.get(req.fault, 0) + 1

    # -- answering -------------------------------------------------------------------

    def answer_text(self, req: ServerRequest) -> str:
        out = self.responder(req)
        return out if isinstance(out, str) else json.dumps(out)

    def usage_for(self, req: ServerRequest, text: str, cacheable: bool) -> dict[str, int]:
        sys_tokens = _tokens(req.system)
        usage = {"input_tokens": _tokens(req.prompt), "output_tokens": _tokens(text),
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if not req.system:
            return usage
        if not cacheable:
            usage["input_tokens"] += sys_tokens
            return usage
        h = hashlib.sha256(req.system.encode()).hexdigest()
        with self._lock:
            hit = h in self._cached_systems
            self._cached_systems.add(h)
        usage["cache_read_input_tokens" if hit else "cache_creation_input_tokens"] = sys_tokens
        return usage

    def anthropic_message(self, req: ServerRequest, fault: str | None) -> dict[str, Any]:
        """The Messages API answer to ``req`` (``fault`` may be a content fault)."""
        text, cut = _apply_content_fault(self.answer_text(req), fault)
        stop = "max_tokens" if cut else "end_turn"
        system_blocks = req.body.get("system")
        cacheable = isinstance(system_blocks, list) and any(isinstance(b, dict) and b.get("cache_control") for b in system_blocks)
        return {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self.usage_for(req, text, cacheable),
        }

    def openai_completion(self, req: ServerRequest, fault: str | None) -> dict[str, Any]:
        text, cut = _apply_content_fault(self.answer_text(req), fault)
        finish = "length" if cut else "stop"
        u = self.usage_for(req, text, cacheable=True)
        prompt_tokens = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": u["output_tokens"],
                "total_tokens": prompt_tokens + u["output_tokens"],
                "prompt_tokens_details": {"cached_tokens": u["cache_read_input_tokens"]},
            },
        }

    # -- batches ---------------------------------------------------------------------

    def create_batch(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        bid = "msgbatch_" + uuid.uuid4().hex[:20]
        results = []
        for item in body.get("requests", []):
            req = _anthropic_request("/v1/messages", headers, item["params"], api="batch")
            req.custom_id = item["custom_id"]
            fault = self._pick_fault(req)
            req.fault = fault
            self._note(req)
            if fault in ("429", "529", "500", "slow", "drop", "401", "400"):
                err_type = {"429": "rate_limit_error", "529": "overloaded_error", "401": "authentication_error", "400": "invalid_request_error"}.get(fault, "api_error")
                result = {"type": "errored", "error": {"type": "error", "error": {"type": err_type, "message": f"simulated {fault}"}}}
            else:
                result = {"type": "succeeded", "message": self.anthropic_message(req, fault)}
            results.append({"custom_id": item["custom_id"], "result": result})
        now = time.time()
        batch = {"id": bid, "created": now, "polls": 0, "results": results, "n": len(results), "ended": False}
        with self._lock:
            self.batches[bid] = batch
        return self.batch_json(batch)

    def batch_json(self, batch: dict[str, Any]) -> dict[str, Any]:
        def iso(t: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

        ended = batch["ended"]
        succeeded = sum(1 for r in batch["results"] if r["result"]["type"] == "succeeded")
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else batch["n"],
                "succeeded": succeeded if ended else 0,
                "errored": batch["n"] - succeeded if ended else 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": iso(batch["created"]),
            "expires_at": iso(batch["created"] + 86400),
            "ended_at": iso(time.time()) if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch['id']}/results" if ended else None,
        }


def _anthropic_request(path: str, headers: dict[str, str], body: dict[str, Any], api: str = "anthropic") -> ServerRequest:
    system = body.get("system", "")
    system_text = _text_of(system)
    prompt = "\n".join(_text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "user")
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
    return ServerRequest(
        api=api,
        path=path,
        headers=headers,
        body=body,
        model=str(body.get("model", "")),
        system=system_text,
        prompt=prompt,
        schema=fmt.get("schema"),
        max_tokens=int(body.get("max_tokens", 0) or 0),
    )


def _openai_request(path: str, headers: dict[str, str], body: dict[str, Any]) -> ServerRequest:
    msgs = body.get("messages", [])
    system = "\n".join(_text_of(m.get("content")) for m in msgs if m.get("role") in ("system", "developer"))
    prompt = "\n".join(_text_of(m.get("content")) for m in msgs if m.get("role") == "user")
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
    return ServerRequest(
        api="openai",
        path=path,
        headers=headers,
        body=body,
        model=str(body.get("model", "")),
        system=system,
        prompt=prompt,
        schema=schema,
        max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 0),
    )


_ANTHROPIC_ERRORS = {
    "429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit (simulated)"),
    "529": (529, "overloaded_error", "Overloaded (simulated)"),
    "500": (500, "api_error", "Internal server error (simulated)"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "400": (400, "invalid_request_error", "prompt is too long (simulated)"),
}


def _apply_content_fault(text: str, fault: str | None) -> tuple[str, bool]:
    """The answer text under a content fault, and whether it was cut off at max_tokens."""
    if fault == "malformed_json":
        return "Sure! Here is my answer: {label: oops", False
    if fault == "schema_violation":
        return json.dumps({"unexpected": "field"}), False
    if fault == "max_tokens":
        return text[: max(1, len(text) // 2)], True
    if fault == "lone_surrogate":
        return _with_lone_surrogate(text), False
    return text, False


def _with_lone_surrogate(text: str) -> str:
    """``text`` (a JSON object) with half of an emoji's surrogate pair on its label (or first string)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return json.dumps({"label": "\ud83d"})
    strings = [k for k, v in data.items() if isinstance(v, str)]
    name = "label" if "label" in strings else (strings[0] if strings else "label")
    data[name] = f"{data.get(name, '')} \ud83d"
    return json.dumps(data)  # ensure_ascii: the surrogate travels as the escape \ud83d


class _Reply(Exception):
    """Raised inside a route to send an answer (status, payload, headers, content type)."""

    def __init__(self, status: int, payload: Any, headers: Mapping[str, str] | None = None, content_type: str = "application/json"):
        self.status, self.payload, self.headers, self.content_type = status, payload, dict(headers or {}), content_type


class _Drop(Exception):
    """Close the connection without an answer."""


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable", 529: "Overloaded"}


class _Connection:
    """One HTTP/1.1 keep-alive connection, served on the server's event loop.

    asyncio rather than a thread per connection: 50 connections sleeping 200 ms
    each cost nothing, and no interpreter-lock handoffs add tail latency.
    """

    def __init__(self, owner: LLMServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.owner, self.reader, self.writer = owner, reader, writer

    async def serve(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    return
                parts = line.decode("latin-1").split()
                if len(parts) < 2:
                    return
                method, target = parts[0], parts[1]
                headers: dict[str, str] = {}
                while True:
                    h = await self.reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length") or 0)
                raw = await self.reader.readexactly(n) if n else b""
                try:
                    await self.route(method, target.split("?")[0], headers, raw)
                except _Reply as r:
                    self.send(r.status, r.payload, r.headers, r.content_type)
                except _Drop:
                    self.writer.transport.abort()
                    return
                await self.writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001
                pass

    def send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
                f"Content-Length: {len(data)}", "request-id: req_" + uuid.uuid4().hex[:16]]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

    def error(self, api: str, fault: str, req: ServerRequest | None = None) -> _Reply:
        status, etype, msg = _ANTHROPIC_ERRORS[fault]
        if self.owner.error_detail is not None and req is not None:
            msg = f"{msg}: {self.owner.error_detail(req)}"
        headers = {}
        if fault in ("429", "529"):
            headers["retry-after"] = f"{self.owner.retry_after_s:g}"
        if api == "openai":
            if status == 529:
                status = 503
            return _Reply(status, {"error": {"message": msg, "type": etype, "code": None, "param": None}}, headers)
        return _Reply(status, {"type": "error", "error": {"type": etype, "message": msg}}, headers)

    @staticmethod
    def echo_auth(api: str, headers: Mapping[str, str]) -> _Reply:
        """A 400 that repeats the credentials the client sent."""
        msg = (f"bad request (simulated); you sent authorization: {headers.get('authorization', '')} "
               f"x-api-key: {headers.get('x-api-key', '')}")
        if api == "openai":
            return _Reply(400, {"error": {"message": msg, "type": "invalid_request_error", "code": None, "param": None}})
        return _Reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": msg}})

    @staticmethod
    def key_of(headers: Mapping[str, str]) -> str | None:
        # the Anthropic SDK sends x-api-key (older) or a bearer token (newer); OpenAI a bearer token
        if headers.get("x-api-key"):
            return headers["x-api-key"]
        auth = headers.get("authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def auth_ok(self, headers: Mapping[str, str]) -> bool:
        return self.owner.api_key is None or self.key_of(headers) == self.owner.api_key

    async def route(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> None:
        api = "anthropic" if "anthropic-version" in headers else "openai"
        if path in ("/v1/chat/completions", "/chat/completions"):
            api = "openai"
        not_found = _Reply(404, {"type": "error", "error": {"type": "not_found_error", "message": f"no route {method} {path}"}})
        if method == "GET":
            if not self.auth_ok(headers):
                raise self.error(api, "401")
            if path == "/v1/models":
                raise self.models(api)
            if path.startswith("/v1/messages/batches/"):
                raise self.batch_get(path[len("/v1/messages/batches/"):])
            raise not_found
        if method != "POST":
            raise not_found
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        if path == "/v1/messages/batches":
            if not self.auth_ok(headers):
                raise self.error("anthropic", "401")
            raise _Reply(200, self.owner.create_batch(body, headers))
        if path == "/v1/messages":
            req = _anthropic_request(path, headers, body)
        elif api == "openai":
            req = _openai_request(path, headers, body)
        else:
            raise not_found
        await self.answer(api, req, headers)

    @staticmethod
    def models(api: str) -> _Reply:
        if api == "openai":
            return _Reply(200, {"object": "list", "data": [{"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}]})
        return _Reply(200, {"data": [{"type": "model", "id": "claude-test", "display_name": "Claude Test",
                                      "created_at": "2025-01-01T00:00:00Z"}],
                            "has_more": False, "first_id": "claude-test", "last_id": "claude-test"})  # fmt: skip

    def batch_get(self, rest: str) -> _Reply:
        """``GET /v1/messages/batches/<id>`` (a poll) or ``.../<id>/results``."""
        o = self.owner
        bid, _, tail = rest.partition("/")
        with o._lock:
            batch = o.batches.get(bid)
        if batch is None:
            return _Reply(404, {"type": "error", "error": {"type": "not_found_error", "message": f"no batch {bid}"}})
        if tail == "results":
            if not batch["ended"]:
                return _Reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "batch still processing"}})
            lines = "".join(json.dumps(r) + "\n" for r in batch["results"]).encode()
            return _Reply(200, lines, content_type="application/binary")
        batch["polls"] += 1
        if batch["polls"] > o.batch_polls:
            batch["ended"] = True
        return _Reply(200, o.batch_json(batch))

    async def answer(self, api: str, req: ServerRequest, headers: Mapping[str, str]) -> None:
        """A live message or chat completion: authentication, then this request's fault, then the answer."""
        o = self.owner
        if not self.auth_ok(headers):
            req.fault = "401"
            o._note(req)
            raise self.error(api, "401", req)
        fault = o._pick_fault(req)
        req.fault = fault
        o._note(req)
        if o.latency_s:
            await asyncio.sleep(o.latency_s)
        if fault == "drop":
            raise _Drop()
        if fault == "slow":
            await asyncio.sleep(o.slow_s)
        if fault == "bad_body":
            raise _Reply(200, b"<html>502 Bad Gateway</html>", content_type="application/json")
        if fault == "echo_auth":
            raise self.echo_auth(api, headers)
        if fault in _ANTHROPIC_ERRORS:
            raise self.error(api, fault, req)
        try:
            answer = o.anthropic_message(req, fault) if api == "anthropic" else o.openai_completion(req, fault)
        except Exception as e:  # noqa: BLE001 - a responder bug becomes a 500 the test can see
            raise _Reply(500, {"type": "error", "error": {"type": "api_error", "message": f"responder failed: {e!r}"}}) from None
        raise _Reply(200, answer)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A fake Anthropic/OpenAI server for tests and benchmarks.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds each answer takes")
    p.add_argument("--api_key", default=None)
    p.add_argument("--fault_rate", action="append", default=[], metavar="FAULT=P", help="e.g. 429=0.05 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry_after", type=float, default=0.05)
    p.add_argument("--slow", type=float, default=2.0)
    args = p.parse_args(argv)
    rates = {k: float(v) for k, v in (x.split("=", 1) for x in args.fault_rate)}
    server = LLMServer(latency_s=args.latency, api_key=args.api_key, fault_rates=rates, seed=args.seed,
                       retry_after_s=args.retry_after, slow_s=args.slow, port=args.port, record=False)
    server.start()
    print(f"listening on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
