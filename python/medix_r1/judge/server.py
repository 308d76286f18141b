"""``medix judge serve``: a small OpenAI-compatible server for one llama.cpp model, standard library only.

``POST /v1/chat/completions`` (with ``logprobs``/``top_logprobs`` computed from the logits, no
``logits_all``), ``GET /v1/models``, ``GET /health``. Connections are served concurrently; decoding is
serialised on the one llama.cpp context, always on the same worker thread: llama.cpp's OpenMP build starts a
thread team per calling thread, and a new team for every connection costs ~30 ms per request on a small CPU.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from medix_r1.errors import BackendError

__all__ = ["JudgeServer", "serve"]

MAX_BODY = 8 * 1024 * 1024


class _BadRequest(Exception):
    def __init__(self, message: str, *, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise _BadRequest(f"`{key}` must be a number in [{lo:g}, {hi:g}], got {v!r}", param=key)
    return float(v)


def _integer(body: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _BadRequest(f"`{key}` must be an integer in [{lo}, {hi}], got {v!r}", param=key)
    return v


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _BadRequest("`messages` must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _BadRequest(f"messages[{i}] must be an object with a string `role`", param="messages")
        c = m.get("content")
        if isinstance(c, list):  # OpenAI content parts: text only here
            texts = []
            for part in c:
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise _BadRequest(
                        f"messages[{i}]: only text content parts are supported", param="messages"
                    )
                texts.append(part["text"])
            c = "".join(texts)
        if c is None:
            c = ""
        if not isinstance(c, str):
            raise _BadRequest(
                f"messages[{i}].content must be a string or a list of text parts", param="messages"
            )
        out.append({"role": m["role"], "content": c})
    return out


class JudgeServer:
    """A running server: ``url`` (the OpenAI base URL, ending in ``/v1``), ``close()``."""

    def __init__(
        self,
        model: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8085,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        name: str | None = None,
    ) -> None:
        from medix_r1.llm import LlamaCppChat

        self.chat = LlamaCppChat(model, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads)
        self.model_name = name or Path(model).stem
        self.created = int(time.time())
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medix-judge-model")
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self.httpd.daemon_threads = True
        h, p = self.httpd.server_address[:2]
        self.host, self.port = str(h), int(p)
        self.url = f"http://{self.host}:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self.serve_forever, name="medix-judge-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
        self._model_thread.shutdown(wait=True)

    def __enter__(self) -> JudgeServer:
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

    def chat_completion(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        messages = _messages(body)
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise _BadRequest(
                f"model {model!r} is not served here; this server serves {self.model_name!r}",
                param="model",
                status=404,
                code="model_not_found",
            )
        if body.get("stream"):
            raise _BadRequest("streaming is not supported by medix judge serve", param="stream")
        if _integer(body, "n", 1, 1, 1) != 1:
            raise _BadRequest("only n=1 is supported", param="n")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = _integer({"max_tokens": max_tokens}, "max_tokens", 256, 1, self.chat.llm.n_ctx())
        temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
            raise _BadRequest("`stop` must be a string or a list of strings", param="stop")
        want_logprobs = body.get("logprobs", False)
        if not isinstance(want_logprobs, bool):
            raise _BadRequest("`logprobs` must be a boolean", param="logprobs")
        top = _integer(body, "top_logprobs", 0, 0, 20) if want_logprobs else None
        seed = _integer(body, "seed", None, 0, 2**32 - 1)
        try:
            gen = self._model_thread.submit(
                self.chat.generate,
                messages,
                max_tokens=int(max_tokens or 256),
                temperature=temperature,
                top_p=top_p if top_p > 0 else 1.0,
                stop=stop,
                top_logprobs=top,
                seed=seed,
            ).result()
        except BackendError as e:
            if "exceeds the context" in str(e):
                raise _BadRequest(
                    str(e).split(": ", 1)[-1], param="messages", code="context_length_exceeded"
                ) from e
            raise
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


def _make_handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "medix-judge"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise here
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(
            self, status: int, message: str, *, kind: str = "invalid_request_error", **extra: Any
        ) -> None:
            self._send(
                status, {"error": {"message": message, "type": kind, "param": None, "code": None, **extra}}
            )

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/health", "/v1/health"):
                self._send(200, {"status": "ok", "model": server.model_name})
            elif path in ("/v1/models", "/models"):
                self._send(200, server.models())
            else:
                self._error(404, f"no such endpoint: GET {self.path}", kind="not_found_error")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self._error(400 if length < 0 else 413, "bad or too large Content-Length")
                return
            raw = self.rfile.read(length)
            if path not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no such endpoint: POST {self.path}", kind="not_found_error")
                return
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                self._error(400, f"the request body is not valid JSON: {e}")
                return
            try:
                self._send(200, server.chat_completion(body))
            except _BadRequest as e:
                self._error(e.status, str(e), param=e.param, code=e.code)
            except Exception as e:  # the model failed: report it, keep serving
                self._error(500, f"{type(e).__name__}: {e}", kind="server_error")

    return Handler


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8085,
    n_ctx: int = 4096,
    n_gpu_layers: int = 0,
    n_threads: int | None = None,
    name: str | None = None,
    block: bool = True,
) -> JudgeServer:
    """Serve ``model``. ``block=False`` returns at once with the server running in a daemon thread (call
    ``.close()``); ``block=True`` serves until interrupted. ``port=0`` picks a free port (see ``.url``)."""
    srv = JudgeServer(
        model, host=host, port=port, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, name=name
    )
    if not block:
        return srv.start()
    try:
        srv.serve_forever()
    finally:
        srv.close()
    return srv
