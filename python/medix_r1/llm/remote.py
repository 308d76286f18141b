"""A standard-library client for any OpenAI-compatible chat server (vLLM, llama.cpp's server, ``medix judge
serve``), with hard deadlines, bounded retries, no redirects and an API key that only its own origin sees."""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medix_r1.errors import BackendError

__all__ = [
    "OpenAIChat",
    "is_loopback_host",
    "normalise_base_url",
    "printable",
    "redact_url",
    "redact_urls",
]

MAX_REPLY = 64 * 1024 * 1024  # a reply larger than this is a broken server, not a verdict


class _Retryable(Exception):
    """A failure worth another attempt (connection, deadline, 5xx/429, malformed reply)."""

    def __init__(self, cause: str, *, unreachable: bool = False) -> None:
        super().__init__(cause)
        self.unreachable = unreachable


def normalise_base_url(base_url: str) -> str:
    u = urllib.parse.urlsplit(base_url.strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise BackendError(
            f"not an http(s) URL: {redact_url(base_url)!r} (expected e.g. http://127.0.0.1:8085/v1)"
        )
    if u.username or u.password:
        raise BackendError(
            f"{redact_url(base_url)!r}: put credentials in an environment variable (api_key_env), not the "
            "URL (they were left out of this message)"
        )
    path = u.path.rstrip("/")
    if not path:
        path = "/v1"  # the usual mount point; servers mounted elsewhere are named with their full path
    return urllib.parse.urlunsplit((u.scheme, u.netloc, path, "", ""))


_SECRET_PARAM = re.compile(r"key|token|secret|passw|auth|sig|credential|session", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def redact_url(url: str) -> str:
    """``url`` fit to record (a meta file, a log): no userinfo, and the value of every query parameter whose
    name looks like a credential (``api_key``, ``key``, ``token``, ``sig``, ...) replaced by ``REDACTED``."""
    if "://" not in str(url):  # not a URL: drop whatever may be userinfo ("user:pw@host/...")
        return str(url).rpartition("@")[2]
    try:
        u = urllib.parse.urlsplit(str(url))
        netloc = u.netloc.rpartition("@")[2]
        query = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    except ValueError:
        return "<unparsable URL>"
    query = [(k, "REDACTED" if _SECRET_PARAM.search(k) else v) for k, v in query]
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, urllib.parse.urlencode(query), ""))


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _has_secret(url: str) -> bool:
    u = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    return "@" in u.netloc or any(_SECRET_PARAM.search(k) for k, _ in query)


def redact_urls(text: str) -> str:
    """``text`` with every URL in it that carries a credential (userinfo, a credential-looking query
    parameter) redacted as :func:`redact_url` does; other text and URLs unchanged. For anything that renders
    or logs a configuration or an error (config dumps, ``--print-config``, the CLI's error line)."""

    def one(m: re.Match[str]) -> str:
        try:
            return redact_url(m[0]) if _has_secret(m[0]) else m[0]
        except ValueError:
            return "<unparsable URL>"

    return _URL_IN_TEXT.sub(one, text) if "://" in text else text


def printable(text: str, limit: int = 300) -> str:
    """Text a server sent, cut to ``limit`` characters with control and bidi characters escaped, fit for a
    terminal (no escape sequences, no reordered lines)."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256 else f"\\u{ord(m[0]):04x}", text[:limit]
    )


def is_loopback_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class OpenAIChat:
    """A client for ``POST {base_url}/chat/completions`` of an OpenAI-compatible server.

    Deadlines, not socket timeouts: each attempt (connect, send, every byte of the reply) must finish within
    ``timeout`` seconds, so a server trickling a byte a second cannot hold a request longer; a batch
    (:meth:`request_many`) must finish within ``batch_timeout`` when set. Failed attempts (connection errors,
    deadlines, HTTP 429/5xx, malformed JSON) are retried at most ``max_retries`` times with exponential
    backoff and jitter, within those deadlines; other HTTP errors and redirects fail at once. A server found
    unreachable fails the rest of its batch at once (one retry cycle per batch, not per item).

    The bearer token is read from the environment variable named ``api_key_env`` (never implicitly from
    ``OPENAI_API_KEY``) or given as ``api_key``; it is sent only to ``base_url``'s origin (redirects are
    refused) and a warning is given when that is plain http to a non-loopback host.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        batch_timeout: float | None = None,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
    ) -> None:
        if not model:
            raise BackendError(f"{base_url}: name the model served there (the server's model id)")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or concurrency < 1:
            raise BackendError(
                "timeout > 0, max_retries >= 0, backoff >= 0 and concurrency >= 1 are required"
            )
        if batch_timeout is not None and batch_timeout <= 0:
            raise BackendError(f"batch_timeout must be > 0, got {batch_timeout}")
        self.base_url = normalise_base_url(base_url)
        self.url = self.base_url + "/chat/completions"
        u = urllib.parse.urlsplit(self.url)
        self._scheme, self._host = u.scheme, str(u.hostname)
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._path = u.path
        self.model = model
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise BackendError(
                    f"the environment variable {api_key_env} (named as the API key's variable) is not set"
                )
        self._api_key = api_key or None
        self.api_key_env = api_key_env
        if self._api_key and self._scheme == "http" and not is_loopback_host(self._host):
            warnings.warn(
                f"the API key for {self.base_url} goes over plain http to a non-loopback host, readable by "
                "anyone on the path; use https",
                RuntimeWarning,
                stacklevel=2,
            )
        self.timeout = timeout
        self.batch_timeout = batch_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.name = f"{self.base_url} model={model}"

    def __repr__(self) -> str:  # never the key
        return f"OpenAIChat({self.base_url!r}, {self.model!r})"

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _post_once(self, data: bytes, deadline: float) -> dict:
        budget = deadline - time.monotonic()
        if budget <= 0:
            raise _Retryable(f"no reply within {self.timeout:g}s (deadline)")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        conn = self._connection(budget)
        expired = threading.Event()

        def expire() -> None:  # wakes a read blocked on a trickling server: the deadline is the whole reply
            expired.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(budget, expire)
        timer.daemon = True
        timer.start()
        try:
            conn.request("POST", self._path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_REPLY + 1)
            status, location, reason = resp.status, resp.getheader("Location"), resp.reason
        except ConnectionRefusedError as e:
            raise _Retryable("cannot connect: connection refused", unreachable=True) from e
        except TimeoutError as e:
            raise _Retryable(f"no reply within {self.timeout:g}s (deadline)") from e
        except (OSError, http.client.HTTPException) as e:
            if expired.is_set():
                raise _Retryable(f"no reply within {self.timeout:g}s (deadline)") from e
            unreachable = isinstance(e, (socket.gaierror, ConnectionRefusedError)) or conn.sock is None
            what = "cannot connect" if unreachable else "connection failed"
            raise _Retryable(f"{what}: {type(e).__name__}: {e}", unreachable=unreachable) from e
        finally:
            timer.cancel()
            conn.close()
        if expired.is_set():
            raise _Retryable(f"no reply within {self.timeout:g}s (deadline)")
        if len(raw) > MAX_REPLY:
            raise _Retryable(f"reply larger than {MAX_REPLY} bytes")
        if 300 <= status < 400:
            raise BackendError(
                f"{self.url}: HTTP {status} redirect to {location!r} refused (requests and the API key are "
                "never forwarded to another address); give the final URL"
            )
        if status >= 400:
            detail = _error_detail(raw, reason)
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}: {detail}")
            raise BackendError(f"{self.url}: HTTP {status}: {detail}")
        try:
            reply = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise _Retryable(f"malformed JSON in the reply: {raw[:200]!r}") from e
        if not isinstance(reply, dict):
            raise _Retryable(f"malformed reply (not a JSON object): {raw[:200]!r}")
        return reply

    def _how_to_start(self) -> str:
        return (
            f" Is the server running? Start a judge there with `medix judge serve --judge-model FILE.gguf "
            f"--port {self._port}`."
        )

    def served_models(self) -> list[str] | None:
        """The model ids ``GET {base_url}/models`` lists (one attempt within ``timeout``); None when the
        server does not list them (no such endpoint, an error status, an unreadable reply). Raises
        BackendError when the server cannot be reached at all."""
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        conn = self._connection(self.timeout)
        try:
            conn.request("GET", self._path.rsplit("/chat/completions", 1)[0] + "/models", headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_REPLY + 1)
            status = resp.status
        except (OSError, http.client.HTTPException) as e:
            raise BackendError(f"{self.base_url}/models: cannot connect: {type(e).__name__}: {e}") from e
        finally:
            conn.close()
        if status != 200 or len(raw) > MAX_REPLY:
            return None
        try:
            data = json.loads(raw)["data"]
            ids = [str(m["id"]) for m in data]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        return ids

    def check_model(self) -> None:
        """Raise BackendError, naming both, when the server lists the models it serves and ``model`` is not
        one of them. Servers that accept any name (llama-cpp-python's) would otherwise answer a misspelt one
        without a word; one that cannot be reached or does not list its models is not checked (requests to
        it report their own errors)."""
        try:
            ids = self.served_models()
        except BackendError:
            return
        if ids is None or self.model in ids:
            return
        served = ", ".join(repr(i) for i in ids[:20]) + (f" (+{len(ids) - 20} more)" if len(ids) > 20 else "")
        raise BackendError(
            f"{self.base_url}: model {self.model!r} is not served there; it serves "
            f"{served or 'no models'} (GET {self.base_url}/models). Give one of these as the model name "
            "(e.g. --judge-name)."
        )

    def request(
        self, body: dict, *, _down: threading.Event | None = None, _batch_deadline: float | None = None
    ) -> dict:
        """POST ``body`` (``model`` is filled in) with retries; return the decoded JSON reply."""
        try:
            data = json.dumps({"model": self.model, **body}).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as e:
            raise BackendError(f"{self.url}: the request cannot be sent as JSON: {e}") from e
        if _batch_deadline is None and self.batch_timeout is not None:
            _batch_deadline = time.monotonic() + self.batch_timeout
        attempts = self.max_retries + 1
        last, tried, unreachable = "", 0, False
        for i in range(attempts):
            if _down is not None and _down.is_set():
                raise BackendError(
                    f"{self.url}: not attempted: the server was unreachable earlier in this batch"
                )
            now = time.monotonic()
            deadline = now + self.timeout
            if _batch_deadline is not None:
                if _batch_deadline - now <= 0:
                    last = last or f"the batch deadline of {self.batch_timeout:g}s passed"
                    break
                deadline = min(deadline, _batch_deadline)
            tried += 1
            try:
                return self._post_once(data, deadline)
            except _Retryable as e:
                last, unreachable = str(e), e.unreachable
                if i + 1 < attempts:
                    pause = self.backoff * (2**i) * (0.75 + 0.5 * random.random())
                    if _batch_deadline is not None:
                        pause = min(pause, max(0.0, _batch_deadline - time.monotonic()))
                    time.sleep(pause)
        if unreachable and _down is not None:
            _down.set()
        hint = self._how_to_start() if "connection refused" in last else ""
        raise BackendError(
            f"{self.url}: {last} (after {tried} attempt{'s' * (tried != 1)}).{hint}".rstrip(".")
        )

    def request_many(
        self, bodies: Sequence[dict], *, on_result: Callable[[int, dict | BackendError], None] | None = None
    ) -> list[dict | BackendError]:
        """Run ``bodies`` concurrently (at most ``concurrency`` in flight); failures are returned in place.
        ``on_result(i, result)`` is called from the worker thread as soon as request ``i`` is done."""
        down = threading.Event()
        batch_deadline = None if self.batch_timeout is None else time.monotonic() + self.batch_timeout

        def one(i: int) -> dict | BackendError:
            try:
                r: dict | BackendError = self.request(bodies[i], _down=down, _batch_deadline=batch_deadline)
            except BackendError as e:
                r = e
            if on_result is not None:
                on_result(i, r)
            return r

        if len(bodies) <= 1:
            return [one(i) for i in range(len(bodies))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(one, range(len(bodies))))

    @staticmethod
    def _body(
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        top_p: float,
        stop: Any,
        grammar: str | None,
    ) -> dict:
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        if stop:
            body["stop"] = list(stop)
        if grammar is not None:
            body["grammar"] = grammar  # llama.cpp's server; others ignore or refuse it
        return body

    def _content(self, reply: dict) -> str:
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise BackendError(
                f"{self.url}: reply without choices[0].message.content: {str(reply)[:300]}"
            ) from e
        if content is not None and not isinstance(content, str):
            raise BackendError(f"{self.url}: choices[0].message.content is not text: {str(content)[:300]}")
        return content or ""

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        grammar: str | None = None,
    ) -> str:
        return self._content(
            self.request(self._body(messages, max_tokens, temperature, top_p, stop, grammar))
        )

    def chat_many(
        self,
        list_of_messages: Sequence[list[dict]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        grammar: str | None = None,
    ) -> list[str | BackendError]:
        bodies = [self._body(m, max_tokens, temperature, top_p, stop, grammar) for m in list_of_messages]
        out: list[str | BackendError] = []
        for r in self.request_many(bodies):
            if isinstance(r, BackendError):
                out.append(r)
                continue
            try:
                out.append(self._content(r))
            except BackendError as e:
                out.append(e)
        return out


def _error_detail(raw: bytes, reason: str) -> str:
    """The server's error message, printable (a server may echo back anything, escape codes included)."""
    try:
        return printable(str(json.loads(raw)["error"]["message"]))
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        return printable(raw[:300].decode("utf-8", errors="replace") or reason)
