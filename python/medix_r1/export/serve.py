"""``medix serve``: an exported policy GGUF behind the chat server's OpenAI-compatible code (auth, caps,
deadlines, cancellation), plus what a chat client of a policy needs: streamed replies (server-sent events,
OpenAI's ``chat.completion.chunk`` layout), an optional llama.cpp LoRA GGUF, and image+text requests when a
vision projector (mmproj) is loaded.

A thin layer over :mod:`medix_r1.llm.server`: non-streaming text requests take exactly the chat server's
path; a streaming or image request is parsed and cancelled the same way and decoded on the same single model
thread.
"""

from __future__ import annotations

import io
import json
import queue
import time
import uuid
from pathlib import Path
from typing import Any

from medix_r1.errors import BackendError
from medix_r1.llm import BackendConfig, LlamaCppChat, open_local
from medix_r1.llm.server import (
    ROLES,
    BadRequest,
    Cancelled,
    ChatServer,
    Generation,
    Job,
    client_gone,
    request_integer,
    request_number,
)

__all__ = ["PolicyServer", "serve_policy"]

_STREAM_KEYS = ("stream", "stream_options")


def _has_images(body: Any) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return False
    for m in body["messages"]:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in c):
            return True
    return False


class PolicyServer(ChatServer):
    """:class:`~medix_r1.llm.server.ChatServer` for a policy: ``model`` a GGUF, ``mmproj`` its vision
    projector, ``lora`` a llama.cpp LoRA GGUF applied on top; ``stream: true`` answers as server-sent
    events."""

    def __init__(
        self,
        model: str | Path | BackendConfig | LlamaCppChat,
        *,
        lora: str | Path | None = None,
        mmproj: str | Path | None = None,
        chat_format: str | None = None,
        **kw: Any,
    ) -> None:
        """``model``: as :class:`ChatServer`'s (a path: ``mmproj``, ``chat_format`` and ``kw``'s ``n_ctx``,
        ``n_gpu_layers``, ``n_threads`` apply); the other ``kw`` are :class:`ChatServer`'s."""
        backend = {k: kw.pop(k) for k in ("n_ctx", "n_gpu_layers", "n_threads") if k in kw}
        chat = open_local(model, lora=lora, mmproj=mmproj, chat_format=chat_format, **backend)
        super().__init__(chat, **kw)
        base: Any = self.httpd.RequestHandlerClass  # the chat server's handler class
        self.httpd.RequestHandlerClass = _make_policy_handler(self, base)

    def parse_stream_request(self, body: dict) -> tuple[dict, bool]:
        """(generation kwargs, include_usage) of a ``stream: true`` request; 400 for what the chat server
        refuses too."""
        opts = body.get("stream_options") or {}
        if not isinstance(opts, dict):
            raise BadRequest("`stream_options` must be an object", param="stream_options")
        kwargs = self.parse_request({k: v for k, v in body.items() if k not in _STREAM_KEYS})
        if kwargs.get("top_logprobs") is not None:
            raise BadRequest("logprobs are not streamed here; ask without stream", param="logprobs")
        return kwargs, bool(opts.get("include_usage"))

    def image_completion(self, body: dict) -> dict:
        """An image+text request through llama-cpp-python's multimodal chat handler (the mmproj)."""
        if not self.chat.supports_images:
            raise BadRequest(
                "this server has no vision projector: start it with --mmproj mmproj-*.gguf for image "
                "requests",
                param="messages",
            )
        if body.get("stream"):
            raise BadRequest("image requests are answered without streaming", param="stream")
        msgs = []
        for i, m in enumerate(body["messages"]):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}", param="messages")
            c = m.get("content")
            parts = c if isinstance(c, list) else [{"type": "text", "text": c if isinstance(c, str) else ""}]
            for part in parts:
                ok = isinstance(part, dict) and (
                    (part.get("type") == "text" and isinstance(part.get("text"), str))
                    or (part.get("type") == "image_url" and isinstance(part.get("image_url"), dict))
                )
                if not ok:
                    raise BadRequest(
                        f"messages[{i}]: content parts must be text or image_url", param="messages"
                    )
            msgs.append({"role": m["role"], "content": parts})
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = (
            request_integer({"max_tokens": max_tokens}, "max_tokens", 256, 1, self.chat.llm.n_ctx()) or 256
        )
        temperature = request_number(body, "temperature", 1.0, 0.0, 2.0)
        fut = self._model_thread.submit(
            lambda: self.chat.chat(msgs, max_tokens=max_tokens, temperature=temperature)
        )
        text = fut.result()
        return self.completion(Generation(str(text), "stop", 0, 0), False)


def _chunk(
    rid: str, created: int, model: str, delta: dict, finish: str | None, usage: dict | None = None
) -> bytes:
    payload: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
    }
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode("utf-8") + b"\n\n"


def _make_policy_handler(server: PolicyServer, base: type) -> type:
    class Handler(base):  # type: ignore[misc, valid-type]
        server_version = "medix-serve"

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path not in ("/v1/chat/completions", "/chat/completions"):
                super().do_POST()
                return
            raw = self._read_body()
            if raw is None:
                return
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                body = None
            streaming = isinstance(body, dict) and body.get("stream") is True
            images = _has_images(body)
            if not streaming and not images:
                # The chat server's own path, unchanged: hand it the body it would have read.
                real: Any = self.rfile  # type: ignore[has-type]
                self.rfile = io.BufferedReader(io.BytesIO(raw))
                try:
                    super().do_POST()
                finally:
                    self.rfile = real
                return
            # Read and authorised: stop the request deadline and take a slot (the chat server's rule).
            if self._authorised():
                self._in_slot(lambda: self._post_policy(body, images))

        def _post_policy(self, body: Any, images: bool) -> None:
            assert isinstance(body, dict)
            try:
                if images:
                    payload = server.image_completion(body)
                    server.served += 1
                    self._send(200, payload)
                    return
                kwargs, include_usage = server.parse_stream_request(body)
            except BadRequest as e:
                self._error(e.status, str(e), param=e.param, code=e.code)
                return
            except BackendError as e:
                self._error(500, str(e), kind="server_error")
                return
            self._stream(kwargs, include_usage)

        def _stream(self, kwargs: dict, include_usage: bool) -> None:
            pieces: queue.Queue[str] = queue.Queue()
            job = Job({**kwargs, "on_text": pieces.put})
            try:
                fut = server.submit(job)
            except BadRequest as e:
                self._error(e.status, str(e), param=e.param, code=e.code)
                return
            rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            self.close_connection = True  # the body ends when the connection does (no Content-Length)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(
                    _chunk(rid, created, server.model_name, {"role": "assistant", "content": ""}, None)
                )
                self.wfile.flush()
                while True:
                    try:
                        piece = pieces.get(timeout=0.1)
                    except queue.Empty:
                        if fut.done() and pieces.empty():
                            break
                        if client_gone(self.connection):
                            raise ConnectionResetError from None
                        continue
                    self.wfile.write(_chunk(rid, created, server.model_name, {"content": piece}, None))
                    self.wfile.flush()
                try:
                    gen: Generation = fut.result()
                except BackendError as e:
                    err = {"error": {"message": str(e), "type": "server_error"}}
                    self.wfile.write(b"data: " + json.dumps(err).encode() + b"\n\n")
                    return
                self.wfile.write(_chunk(rid, created, server.model_name, {}, gen.finish_reason))
                if include_usage:
                    usage = {
                        "prompt_tokens": gen.prompt_tokens,
                        "completion_tokens": gen.completion_tokens,
                        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
                    }
                    self.wfile.write(_chunk(rid, created, server.model_name, {}, None, usage))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                server.served += 1
            except (ConnectionError, TimeoutError, OSError, Cancelled):
                job.gone.set()  # the model thread stops at its next token
                fut.cancel()
                server.cancelled += 1

    return Handler


def serve_policy(model: str | Path, *, block: bool = True, **kw: Any) -> PolicyServer:
    """Serve the policy ``model`` (``kw`` go to :class:`PolicyServer`); ``block=False`` returns the running
    server (call ``.close()``); ``port=0`` picks a free port."""
    srv = PolicyServer(model, **kw)
    if not block:
        srv.start()
        return srv
    try:
        srv.serve_forever()
    finally:
        srv.close()
    return srv
