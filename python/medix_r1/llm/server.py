"""A small OpenAI-compatible server for one llama.cpp model, standard library only: ``medix judge serve``
as is, ``medix serve`` (:mod:`medix_r1.export.serve`) with streaming, LoRA and images on top.

``POST /v1/chat/completions`` (with ``logprobs``/``top_logprobs`` computed from the logits, no
``logits_all``), ``GET /v1/models``, ``GET /health``. Message text is tokenized with special-token parsing
off and spliced into the chat template (:meth:`~medix_r1.llm.LlamaCppChat.chat_tokens`), so no client text
becomes a control token; roles are limited to system/user/assistant.

Under load: at most ``max_per_client`` open connections per client address; each must send a whole request
(head and body) within ``timeout`` seconds; at most ``max_connections`` requests served at once, a slot
being given only to a request that is fully read and authorised (beyond: 429 and close); at most
``max_queue`` requests waiting for the model (beyond: 429); a waiting or running request whose client
has gone is dropped; the body size is checked from Content-Length before anything is read; malformed input
of any kind is a 400. Decoding is serialised on the one llama.cpp context, always on the same worker thread:
llama.cpp's OpenMP build starts a thread team per calling thread, and a new team for every connection costs
~30 ms per request on a small CPU.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import select
import socket
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from medix_r1.errors import BackendError
from medix_r1.llm import BackendConfig, LlamaCppChat, open_local
from medix_r1.llm.remote import is_loopback_host

__all__ = [
    "ROLES",
    "BadRequest",
    "Cancelled",
    "ChatServer",
    "Generation",
    "Job",
    "JudgeServer",
    "client_gone",
    "generate",
    "request_integer",
    "request_number",
    "serve",
]

MAX_BODY = 1024 * 1024
ROLES = ("system", "user", "assistant")


@dataclass
class Generation:
    """One completion from :func:`generate`: text, why it stopped, per-token log-probs."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict] = field(default_factory=list)


class Cancelled(Exception):
    """The client went away; the generation stopped."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def _sample(scaled: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    p = np.exp(scaled - scaled.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p
        q = np.zeros_like(p)
        q[order[keep]] = p[order[keep]]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


def _logprob_entry(chat: LlamaCppChat, tok: int, logp: np.ndarray, k: int) -> dict:
    def one(t: int) -> dict:
        s = chat.token_text(t)
        return {"token": s, "logprob": float(logp[t]), "bytes": list(s.encode("utf-8"))}

    entry = one(tok)
    top = np.argpartition(-logp, k)[:k] if 0 < k < len(logp) else np.arange(len(logp) if k else 0)
    top = top[np.argsort(-logp[top])]
    entry["top_logprobs"] = [one(int(t)) for t in top]
    return entry


def generate(
    chat: LlamaCppChat,
    messages: Sequence[dict] | None = None,
    *,
    tokens: Sequence[int] | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    top_logprobs: int | None = None,
    seed: int | None = None,
    cancelled: Callable[[], bool] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Generation:
    """Complete ``messages`` (or their ready ``tokens``) token by token, with the top ``top_logprobs``
    alternatives for every token when asked (OpenAI's ``logprobs.content`` layout). Temperature 0 is greedy.
    ``cancelled()`` is checked before every token; when true, :class:`Cancelled` is raised. ``on_text(delta)``
    (streaming) receives the text as it grows, never a piece of a stop string or of a UTF-8 character."""
    if tokens is None:
        tokens = chat.chat_tokens(list(messages or []))[0]
    prompt = list(tokens)
    prompt_cuts = chat.line_cuts(prompt)
    rng = np.random.default_rng(chat.seed if seed is None else seed)
    stops = [s for s in (stop or []) if s]
    out: list[int] = []
    entries: list[dict] = []
    text = ""
    finish = "length"
    sent = 0  # characters of text already handed to on_text
    hold = max((len(s) for s in stops), default=1) - 1  # a stop string may still be forming in the tail
    with chat.lock:
        if len(prompt) + max_tokens > chat.llm.n_ctx():
            raise BackendError(
                f"{chat.name}: prompt of {len(prompt)} tokens + max_tokens {max_tokens} exceeds the "
                f"context of {chat.llm.n_ctx()}"
            )
        for _ in range(max_tokens):
            if cancelled is not None and cancelled():
                raise Cancelled()
            seq = prompt + out
            logits = chat.eval_prompt(seq, cuts=[*prompt_cuts, *range(len(prompt), len(seq))])
            logp = _log_softmax(logits)
            tok = int(np.argmax(logits)) if temperature <= 0 else _sample(logp / temperature, top_p, rng)
            if chat.is_eog(tok):
                finish = "stop"
                break
            out.append(tok)
            if top_logprobs is not None:
                entries.append(_logprob_entry(chat, tok, logp, top_logprobs))
            text = bytes(chat.llm.detokenize(out)).decode("utf-8", errors="replace")
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                break
            if on_text is not None:
                safe = len(text.rstrip("\ufffd")) - hold  # a torn UTF-8 character decodes as U+FFFD
                if safe > sent:
                    on_text(text[sent:safe])
                    sent = safe
    if on_text is not None and len(text) > sent:
        on_text(text[sent:])
    return Generation(text, finish, len(prompt), len(out), entries)


class BadRequest(Exception):
    """A request refused with an OpenAI-style error: ``status`` (400, 404, 429...), the offending ``param``
    and an error ``code``; the handler turns it into the JSON error reply."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def _text(v: Any, what: str, param: str) -> str:
    if not isinstance(v, str):
        raise BadRequest(f"{what} must be a string", param=param)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid Unicode (a lone surrogate)", param=param) from None
    return v


def request_number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    """``body[key]`` as a float in ``[lo, hi]`` (``default`` when absent or null); a :class:`BadRequest`
    naming the key otherwise (booleans are not numbers)."""
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise BadRequest(f"`{key}` must be a number in [{lo:g}, {hi:g}], got {str(v)[:50]!r}", param=key)
    return float(v)


def request_integer(body: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    """``body[key]`` as an int in ``[lo, hi]`` (``default`` when absent or null); a :class:`BadRequest`
    naming the key otherwise."""
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"`{key}` must be an integer in [{lo}, {hi}], got {str(v)[:50]!r}", param=key)
    return v


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("`messages` must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string `role`", param="messages")
        if m["role"] not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}", param="messages")
        c = m.get("content")
        if isinstance(c, list):  # OpenAI content parts: text only here
            texts = []
            for part in c:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise BadRequest(
                        f"messages[{i}]: only text content parts are supported", param="messages"
                    )
                texts.append(_text(part.get("text"), f"messages[{i}] text part", "messages"))
            c = "".join(texts)
        if c is None:
            c = ""
        if not isinstance(c, str):
            raise BadRequest(
                f"messages[{i}].content must be a string or a list of text parts", param="messages"
            )
        out.append({"role": m["role"], "content": _text(c, f"messages[{i}].content", "messages")})
    return out


@dataclass
class Job:
    """A request waiting for (or running on) the model thread: the keyword arguments of :func:`generate`
    (``tokens``, ``max_tokens``, ..., optionally ``on_text``) and ``gone``, set when its client has left (the
    model thread then stops at its next token). Queue it with :meth:`ChatServer.submit`."""

    kwargs: dict
    gone: threading.Event = field(default_factory=threading.Event)


class _HTTPServer(ThreadingHTTPServer):
    """Connections and slots. A connection is accepted while its address has fewer than ``max_per_client``
    open and all addresses together fewer than ``max_open``; it must send a whole request (head and body)
    within ``deadline`` seconds of starting it, or of its previous response (a reaper in the accept loop
    shuts its socket down); a request gets one of ``max_connections`` slots only once it is fully read and
    authorised. So clients that send slowly, or without a key, hold a thread for at most ``deadline``
    seconds and never a slot."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        addr: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
        *,
        max_per_client: int = 16,
        deadline: float = 30.0,
    ):
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.max_open = max(4 * max_connections, 2 * max_per_client)
        self.deadline = deadline
        self.refused_connections = 0  # 429: no slot, or too many connections (from one address)
        self.timed_out = 0  # connections closed for not sending their request in time
        self._lock = threading.Lock()
        self._per_client: dict[str, int] = {}
        self._open = 0
        self._watched: dict[socket.socket, float] = {}
        super().__init__(addr, handler)

    def _refuse(self, request: Any, message: str) -> None:
        self.refused_connections += 1
        body = json.dumps({"error": {"message": message, "type": "rate_limit_error"}})
        try:
            request.settimeout(1.0)
            request.sendall(
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\n" + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        who = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        with self._lock:
            mine = self._per_client.get(who, 0)
            refuse = None
            if mine >= self.max_per_client:
                refuse = f"too many connections from {who} (max {self.max_per_client} per address)"
            elif self._open >= self.max_open:
                refuse = f"too many open connections (max {self.max_open})"
            else:
                self._per_client[who] = mine + 1
                self._open += 1
        if refuse:
            self._refuse(request, refuse)
            return
        try:
            super().process_request(request, (who, *client_address[1:]))
        except BaseException:
            self._forget(who)
            raise

    def _forget(self, who: str) -> None:
        with self._lock:
            self._open -= 1
            n = self._per_client.get(who, 1) - 1
            if n:
                self._per_client[who] = n
            else:
                self._per_client.pop(who, None)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.unwatch(request)
            self._forget(client_address[0])

    def watch(self, sock: socket.socket) -> None:
        """Start the clock on ``sock``: it must finish sending a request within ``deadline`` seconds."""
        with self._lock:
            self._watched[sock] = time.monotonic() + self.deadline

    def unwatch(self, sock: socket.socket) -> None:
        with self._lock:
            self._watched.pop(sock, None)

    def service_actions(self) -> None:
        """Called by ``serve_forever`` every poll interval: shut down sockets past their deadline (the
        handler's blocked read then sees end-of-file and the thread ends)."""
        super().service_actions()
        now = time.monotonic()
        with self._lock:
            late = [s for s, t in self._watched.items() if t <= now]
            for s in late:
                del self._watched[s]
                self.timed_out += 1
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def take_slot(self) -> bool:
        return self._slots.acquire(blocking=False)

    def release_slot(self) -> None:
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or stalls is its own problem, not a server error worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class ChatServer:
    """A running server: ``url`` (the OpenAI base URL, ending in ``/v1``), ``close()``.

    ``model``: a GGUF path (``n_ctx``/``n_gpu_layers``/``n_threads`` apply), a
    :class:`~medix_r1.llm.BackendConfig` naming one, or an open :class:`~medix_r1.llm.LlamaCppChat` (see
    :func:`~medix_r1.llm.open_local`). ``api_key``: clients must send ``Authorization: Bearer <key>`` (all
    but ``/health``). ``timeout``: seconds a connection may stay idle plus take to send a whole request
    (head and body), a deadline, not a per-read timeout. ``max_connections``: requests being served at
    once; a request takes a slot only once it is fully read and authorised. ``max_per_client``: open
    connections from one address (beyond: 429 at once).
    """

    def __init__(
        self,
        model: str | Path | BackendConfig | LlamaCppChat,
        *,
        host: str = "127.0.0.1",
        port: int = 8085,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        name: str | None = None,
        api_key: str | None = None,
        max_connections: int = 64,
        max_queue: int = 32,
        timeout: float = 30.0,
        max_body: int = MAX_BODY,
        max_per_client: int = 16,
    ) -> None:
        if min(max_connections, max_queue, max_body, max_per_client) < 1 or not timeout > 0:
            raise ValueError(
                "max_connections, max_queue, max_per_client, timeout and max_body must be positive"
            )
        self.chat = open_local(model, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads)
        self.model_name = name or Path(self.chat.file_name).stem
        self.api_key = api_key or None
        self.max_queue = max_queue
        self.timeout = timeout
        self.max_body = max_body
        self.created = int(time.time())
        self.served = 0  # completed chat requests
        self.cancelled = 0  # requests dropped because their client went away
        self.rejected = 0  # 429s for a full queue
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medix-judge-model")
        if not is_loopback_host(host):
            warnings.warn(
                f"medix judge serve: listening on {host}, reachable from other machines"
                + ("" if self.api_key else " and without --api-key: anyone who can reach it can use it"),
                RuntimeWarning,
                stacklevel=2,
            )
        self.httpd = _HTTPServer(
            (host, port),
            _make_handler(self),
            max_connections,
            max_per_client=max_per_client,
            deadline=timeout,
        )
        h, p = self.httpd.server_address[:2]
        self.host, self.port = str(h), int(p)
        self.url = f"http://{self.host}:{self.port}/v1"
        self._thread: threading.Thread | None = None

    @property
    def refused_connections(self) -> int:
        return self.httpd.refused_connections

    @property
    def timed_out(self) -> int:
        """Connections closed because their request was not sent within ``timeout``."""
        return self.httpd.timed_out

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self.serve_forever, name="medix-judge-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
        self._model_thread.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def models(self) -> dict:
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "medix-r1"}
            ],
        }

    def parse_request(self, body: Any) -> dict:
        """The validated generation arguments of a chat request (400/404 :class:`BadRequest` otherwise);
        ``tokens`` is the prompt exactly as the model will get it."""
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        n_msgs = len(body["messages"]) if isinstance(body.get("messages"), list) else 0
        if n_msgs > self.chat.llm.n_ctx():  # every message costs template tokens: this many cannot fit
            raise BadRequest(
                f"{n_msgs} messages cannot fit the context of {self.chat.llm.n_ctx()} tokens",
                param="messages",
                code="context_length_exceeded",
            )
        messages = _messages(body)
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise BadRequest(
                f"model {str(model)[:100]!r} is not served here; this server serves {self.model_name!r}",
                param="model",
                status=404,
                code="model_not_found",
            )
        if body.get("stream"):
            raise BadRequest("streaming is not supported by medix judge serve", param="stream")
        request_integer(body, "n", 1, 1, 1)
        n_ctx = self.chat.llm.n_ctx()
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = request_integer({"max_tokens": max_tokens}, "max_tokens", 256, 1, n_ctx) or 256
        temperature = request_number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = request_number(body, "top_p", 1.0, 0.0, 1.0)
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None:
            if not isinstance(stop, list) or len(stop) > 16:
                raise BadRequest("`stop` must be a string or a list of at most 16 strings", param="stop")
            stop = [_text(s, "each `stop`", "stop") for s in stop]
        want_logprobs = body.get("logprobs", False)
        if not isinstance(want_logprobs, bool):
            raise BadRequest("`logprobs` must be a boolean", param="logprobs")
        top = request_integer(body, "top_logprobs", 0, 0, 20) if want_logprobs else None
        seed = request_integer(body, "seed", None, 0, 2**32 - 1)
        try:
            tokens, _ = self.chat.chat_tokens(messages)
        except BackendError as e:
            raise BadRequest(str(e), param="messages") from e
        if len(tokens) + max_tokens > n_ctx:
            raise BadRequest(
                f"prompt of {len(tokens)} tokens + max_tokens {max_tokens} exceeds the context of {n_ctx}",
                param="messages",
                code="context_length_exceeded",
            )
        return {
            "tokens": tokens,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p if top_p > 0 else 1.0,
            "stop": stop,
            "top_logprobs": top,
            "seed": seed,
        }

    def _run(self, job: Job) -> Generation:
        if job.gone.is_set():
            raise Cancelled()
        return generate(self.chat, cancelled=job.gone.is_set, **job.kwargs)

    def submit(self, job: Job) -> Future:
        """Queue ``job`` for the model thread; 429 when ``max_queue`` requests are already waiting."""
        with self._pending_lock:
            if self._pending >= self.max_queue:
                self.rejected += 1
                raise BadRequest(
                    f"server busy: {self._pending} requests queued (max {self.max_queue}); retry later",
                    status=429,
                    code="rate_limit_exceeded",
                )
            self._pending += 1
        fut = self._model_thread.submit(self._run, job)

        def release(_: Future) -> None:
            with self._pending_lock:
                self._pending -= 1

        fut.add_done_callback(release)
        return fut

    def completion(self, gen: Generation, want_logprobs: bool) -> dict:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "logprobs": {"content": gen.logprobs} if want_logprobs else None,
                    "finish_reason": gen.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "total_tokens": gen.prompt_tokens + gen.completion_tokens,
            },
        }


def client_gone(sock: socket.socket) -> bool:
    """True when the peer of ``sock`` closed its side (readable with nothing to read): a request whose
    client has gone is cancelled rather than decoded for no one."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _make_handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "medix-judge"
        timeout = server.timeout  # per-read socket timeout; the deadline on a whole request is the reaper's

        @property
        def httpd(self) -> _HTTPServer:
            assert isinstance(self.server, _HTTPServer)
            return self.server

        def handle_one_request(self) -> None:
            self.httpd.watch(self.connection)  # idle time + request head + body: one deadline
            try:
                super().handle_one_request()
            finally:
                self.httpd.unwatch(self.connection)

        def _take_slot(self) -> bool:
            """Once the request is read and authorised: a slot, or 429 and close."""
            self.httpd.unwatch(self.connection)
            if self.httpd.take_slot():
                return True
            self.httpd.refused_connections += 1
            self.close_connection = True
            self._error(
                429,
                f"too many requests in progress (max {self.httpd.max_connections}); retry later",
                kind="rate_limit_error",
            )
            return False

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise here
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _error(
            self, status: int, message: str, *, kind: str = "invalid_request_error", **extra: Any
        ) -> None:
            self._send(
                status, {"error": {"message": message, "type": kind, "param": None, "code": None, **extra}}
            )

        def _authorised(self) -> bool:
            if server.api_key is None:
                return True
            got = self.headers.get("Authorization", "")
            if hmac.compare_digest(got.encode("utf-8", "replace"), f"Bearer {server.api_key}".encode()):
                return True
            if self.command != "GET":
                self.close_connection = True  # its body is never read from a client without the key
            self._error(
                401, "missing or wrong API key (Authorization: Bearer ...)", kind="authentication_error"
            )
            return False

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/health", "/v1/health"):  # no slot: it must answer while every slot is busy
                self.httpd.unwatch(self.connection)
                self._send(200, {"status": "ok", "model": server.model_name})
                return
            if self._authorised():
                self._in_slot(lambda: self._get(path))

        def _get(self, path: str) -> None:
            if path in ("/v1/models", "/models"):
                self._send(200, server.models())
            else:
                self._error(404, f"no such endpoint: GET {self.path[:200]}", kind="not_found_error")

        def _read_body(self) -> bytes | None:
            """The request's body (a Content-Length of at most ``max_body``, sent within the deadline); None
            when it was refused (the error is sent) or not sent in time (the connection is closed)."""
            raw_len = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._error(411, "send the body with a Content-Length (no chunked transfer encoding)")
                return None
            try:
                length = int(raw_len) if raw_len is not None else -1
            except ValueError:
                length = -1
            if length < 0 or length > server.max_body:
                self.close_connection = True  # the body (if any) is never read
                if length < 0:
                    self._error(411 if raw_len is None else 400, "a valid Content-Length is required")
                else:
                    self._error(413, f"request body of {length} bytes exceeds the limit of {server.max_body}")
                return None
            deadline = time.monotonic() + server.timeout
            chunks, left = [], length
            try:
                while left > 0 and time.monotonic() <= deadline:
                    chunk = self.rfile.read1(min(left, 65536))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
            except OSError:  # a read timed out (TimeoutError) or the connection failed
                pass
            if left > 0:  # too slow, or the client stopped sending
                self.close_connection = True
                return None
            return b"".join(chunks)

        def _in_slot(self, work: Callable[[], None]) -> None:
            """Once the request is read and authorised: ``work()`` in a slot (none free: 429 and close)."""
            if not self._take_slot():
                return
            try:
                work()
            finally:
                self.httpd.release_slot()

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if not self._authorised():
                return
            raw = self._read_body()
            if raw is not None:
                self._in_slot(lambda: self._post(path, raw))

        def _post(self, path: str, raw: bytes) -> None:
            if path not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no such endpoint: POST {self.path[:200]}", kind="not_found_error")
                return
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, nesting too deep
                self._error(400, f"the request body is not valid JSON: {str(e)[:200]}")
                return
            try:
                kwargs = server.parse_request(body)
                job = Job(kwargs)
                fut = server.submit(job)
            except BadRequest as e:
                self._error(e.status, str(e), param=e.param, code=e.code)
                return
            except RecursionError:
                self._error(400, "the request is nested too deeply")
                return
            while True:
                try:
                    gen = fut.result(timeout=0.1)
                    break
                except FutureTimeout:
                    if client_gone(self.connection):
                        job.gone.set()
                        fut.cancel()
                        server.cancelled += 1
                        self.close_connection = True
                        return
                except (Cancelled, CancelledError):
                    server.cancelled += 1
                    self.close_connection = True
                    return
                except BackendError as e:  # the model failed on valid input: report it, keep serving
                    self._error(500, str(e), kind="server_error")
                    return
                except Exception as e:  # a bug: say so, keep serving
                    traceback.print_exc(file=sys.stderr)
                    self._error(500, f"internal error: {type(e).__name__}: {e}", kind="server_error")
                    return
            server.served += 1
            self._send(200, server.completion(gen, kwargs["top_logprobs"] is not None))

    return Handler


JudgeServer = ChatServer  # the name `medix judge serve`'s server had in medix_r1.judge.server


def serve(
    model: str | Path | LlamaCppChat,
    *,
    block: bool = True,
    **kw: Any,
) -> ChatServer:
    """Serve ``model`` (``kw`` go to :class:`ChatServer`). ``block=False`` returns at once with the server
    running in a daemon thread (call ``.close()``); ``block=True`` serves until interrupted. ``port=0`` picks
    a free port (see ``.url``)."""
    srv = ChatServer(model, **kw)
    if not block:
        return srv.start()
    try:
        srv.serve_forever()
    finally:
        srv.close()
    return srv
