"""Chat backends shared by the judge and the evaluator: llama.cpp in-process and any OpenAI-compatible server.

Both raise :class:`medix_r1.errors.BackendError` naming the backend and the cause; nothing here touches the
network except the server URL the caller names.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medix_r1.errors import BackendError, check_model_path

__all__ = [
    "ChatBackend",
    "Generation",
    "LlamaCppChat",
    "OpenAIChat",
    "open_chat_backend",
]

GGUF_HOW = (
    "Pass the path of a local .gguf file (copy it from a machine with network, e.g. "
    "`huggingface-cli download <repo> <file>.gguf`; for the tests run `scripts/test-models.sh`)"
)


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that turns a list of chat messages into the assistant's reply."""

    name: str

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
    ) -> str: ...


# chat_format names with a dedicated llama-cpp-python multimodal handler; anything else uses the generic
# libmtmd handler, which works for every projector that llama.cpp's `mtmd` library understands.
_VISION_HANDLERS = {
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "moondream2": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
}


@dataclass
class Generation:
    """One completion from :meth:`LlamaCppChat.generate`: text, why it stopped, per-token log-probs."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict] = field(default_factory=list)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


class LlamaCppChat:
    """An in-process llama.cpp model (``llama_cpp.Llama``) behind the :class:`ChatBackend` interface.

    Besides ``chat`` it offers a token-level API used by the judge and by ``medix judge serve``:
    :meth:`eval_prompt` evaluates a prompt reusing the KV cache of the longest common prefix with the previous
    prompt and returns the next-token logits; :meth:`generate` samples with per-token top log-probs. All calls
    are serialised with a lock (llama.cpp contexts are not thread-safe).

    ``clip_model_path`` (a multimodal projector, ``mmproj-*.gguf``) is best effort: it installs a
    llama-cpp-python multimodal chat handler (a dedicated one for the ``chat_format`` names llama-cpp-python
    knows, the generic libmtmd one otherwise), so ``chat`` accepts OpenAI-style ``image_url`` content parts
    (``data:`` URIs or ``file://`` paths). The token-level API is text only.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        seed: int = 0,
        chat_format: str | None = None,
        clip_model_path: str | Path | None = None,
    ) -> None:
        path = check_model_path(model_path, "llama.cpp model", GGUF_HOW)
        if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
            warnings.warn(
                "OMP_WAIT_POLICY=PASSIVE is set: llama.cpp's OpenMP threads then sleep at the barrier after "
                "every graph op, which made the judge ~3x slower on 2 CPU cores here; unset it for llama.cpp",
                RuntimeWarning,
                stacklevel=2,
            )
        import llama_cpp
        from llama_cpp import llama_chat_format

        chat_handler = None
        if clip_model_path is not None:
            clip = check_model_path(clip_model_path, "multimodal projector (mmproj .gguf)", GGUF_HOW)
            cls = getattr(llama_chat_format, _VISION_HANDLERS.get(chat_format or "", "MTMDChatHandler"), None)
            if cls is None:
                raise BackendError(
                    f"this llama-cpp-python ({llama_cpp.__version__}) has no multimodal chat handler for "
                    f"chat_format={chat_format!r}; upgrade it or drop clip_model_path"
                )
            kwargs: dict[str, Any] = {"clip_model_path": str(clip), "verbose": False}
            if cls.__name__ == "MTMDChatHandler":
                kwargs["use_gpu"] = n_gpu_layers != 0
            chat_handler = cls(**kwargs)
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_gpu_layers=n_gpu_layers,
                n_threads=n_threads,
                seed=seed,
                chat_format=None if chat_handler is not None else chat_format,
                chat_handler=chat_handler,
                verbose=False,
            )
        except Exception as e:  # llama.cpp reports a bad file as a bare ValueError
            raise BackendError(f"llama.cpp could not load {path}: {e}") from e
        self.name = f"llama.cpp:{path}"
        self.model_path = path
        self.seed = seed
        self.lock = threading.RLock()
        self.evaluated_tokens = 0  # tokens actually decoded by eval_prompt (the rest came from the KV cache)
        self.reused_tokens = 0
        self.block_size = 64  # longest run of eval_prompt's default cuts without a line break
        self.min_last_piece = 6  # shortest last piece eval_prompt's default cuts leave
        self._breaks: dict[int, bool] = {}  # token id -> "its text contains a line break"
        self._kv_bounds: set[int] = set()  # decode-call boundaries of what the KV cache holds
        self._kv_tokens = np.zeros(0, dtype=np.intc)  # the prompt eval_prompt left in the cache
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._formatter = self._make_formatter()
        self._recurrent = bool(
            getattr(self.llm, "_is_recurrent", False) or getattr(self.llm, "_is_hybrid", False)
        )

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
    ) -> str:
        with self.lock:
            # A cold start each time: reusing the cached prefix changes how llama.cpp batches the prompt, and
            # with it greedy near-ties, so the reply would depend on the previous conversation.
            self.reset()
            try:
                out = self.llm.create_chat_completion(
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    stop=stop,
                    seed=self.seed,
                )
            except Exception as e:
                raise BackendError(f"{self.name}: {type(e).__name__}: {e}") from e
        return out["choices"][0]["message"]["content"] or ""

    def chat_many(self, list_of_messages: Sequence[list[dict]], **kw: Any) -> list[str]:
        """Sequential: one llama.cpp context cannot decode two conversations at once here."""
        return [self.chat(m, **kw) for m in list_of_messages]

    def _make_formatter(self) -> Any:
        from llama_cpp import llama_chat_format

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def format_prompt(self, messages: list[dict]) -> str:
        """The prompt the model's own chat template (GGUF metadata) makes of ``messages``, ending with the
        assistant header. Models without a template get ChatML."""
        for m in messages:
            if not isinstance(m.get("content"), str):
                raise BackendError(f"{self.name}: the token-level API takes text-only messages")
        if self._formatter is None:
            body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
            return body + "<|im_start|>assistant\n"
        return self._formatter(messages=messages).prompt

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Tokens of ``text``; ``special=False`` keeps ``<|im_start|>`` etc. literal (for untrusted text)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def token_text(self, token: int) -> str:
        return self.llm.detokenize([token]).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def reset(self) -> None:
        """Forget the KV cache. Call it before filling the cache any other way than :meth:`eval_prompt`
        (e.g. ``llm.create_chat_completion``), so that eval_prompt never reuses KV split differently."""
        with self.lock:
            self.llm.reset()
            self._kv_bounds, self._kv_tokens = set(), np.zeros(0, dtype=np.intc)

    def line_cuts(self, tokens: Sequence[int]) -> list[int]:
        """Deterministic split points of a prompt: after every token containing a line break, and every
        ``block_size`` tokens within a longer line, except those that would leave a last piece shorter than
        ``min_last_piece`` tokens. They depend on the prompt alone, and prompts that diverge at the start of a
        line (a new message, a new field, an answer after its tag) share every cut before the divergence, so
        the whole common prefix is reused."""
        cuts, last = [], 0
        for i, t in enumerate(tokens, 1):
            brk = self._breaks.get(t)
            if brk is None:
                brk = self._breaks[t] = "\n" in self.token_text(t)
            if brk or i - last >= self.block_size:
                cuts.append(i)
                last = i
        # No short last piece: the template's closing lines ("<|im_end|>\n<|im_start|>assistant\n") always
        # follow the text before them, so cutting there saves nothing and costs a decode call each.
        while cuts and len(tokens) - cuts[-1] < self.min_last_piece:
            cuts.pop()
        return cuts

    def eval_prompt(self, tokens: Sequence[int], *, cuts: Sequence[int] | None = None) -> np.ndarray:
        """Evaluate ``tokens`` and return the logits for the next token (a float32 copy).

        The prompt is decoded in pieces split at ``cuts`` (token offsets; default :meth:`line_cuts`), one
        decode call per piece. llama.cpp's numbers depend on how a prompt is split into batches, so fixed
        cuts make the logits of a prompt the same whatever was evaluated before it (greedy near-ties would
        otherwise flip with the history). The KV cache keeps the previous prompt, and the longest common
        prefix that ends at a cut of both prompts is reused. ``evaluated_tokens`` / ``reused_tokens`` count
        both parts.
        """
        import llama_cpp

        llm = self.llm
        n = len(tokens)
        if n == 0:
            raise BackendError(f"{self.name}: empty prompt")
        if n > llm.n_ctx():
            raise BackendError(f"{self.name}: prompt of {n} tokens exceeds the context of {llm.n_ctx()}")
        with self.lock:
            if cuts is None:
                cuts = self.line_cuts(tokens)
            bounds = [*sorted({c for c in cuts if 0 < c < n}), n]
            new = np.asarray(tokens, dtype=np.intc)
            old = llm.input_ids[: llm.n_tokens]
            if not np.array_equal(old, self._kv_tokens):
                self._kv_bounds = set()  # the cache was filled by another path (e.g. create_chat_completion)
            m = min(len(old), n)
            diff = np.flatnonzero(old[:m] != new[:m])
            common = int(diff[0]) if diff.size else m
            start = max((c for c in bounds[:-1] if c <= common and c in self._kv_bounds), default=0)
            if self._recurrent and start < llm.n_tokens:
                start = 0  # a recurrent state cannot be rewound to a prefix
            if start == 0:
                llm.reset()
            llm.n_tokens = start  # eval() drops the KV cells from here on
            self._kv_bounds = {c for c in self._kv_bounds if c <= start}
            try:
                pos = start
                for b in bounds:
                    if b > pos:
                        llm.eval(new[pos:b].tolist())
                        pos = b
                        self._kv_bounds.add(b)
            except Exception as e:
                llm.reset()
                self._kv_bounds, self._kv_tokens = set(), np.zeros(0, dtype=np.intc)
                raise BackendError(f"{self.name}: llama.cpp decode failed: {e}") from e
            self._kv_tokens = new
            self.evaluated_tokens += n - start
            self.reused_tokens += start
            ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()

    def generate(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        top_logprobs: int | None = None,
        seed: int | None = None,
    ) -> Generation:
        """Complete ``messages`` token by token, with the top ``top_logprobs`` alternatives for every token
        when asked (OpenAI's ``logprobs.content`` layout). Temperature 0 is greedy."""
        prompt = self.format_prompt(messages)
        tokens = self.tokenize(prompt, special=True)
        prompt_cuts = self.line_cuts(tokens)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        stops = [s for s in (stop or []) if s]
        out: list[int] = []
        entries: list[dict] = []
        text = ""
        finish = "length"
        with self.lock:
            if len(tokens) + max_tokens > self.llm.n_ctx():
                raise BackendError(
                    f"{self.name}: prompt of {len(tokens)} tokens + max_tokens {max_tokens} exceeds the "
                    f"context of {self.llm.n_ctx()}"
                )
            for _ in range(max_tokens):
                seq = tokens + out
                logits = self.eval_prompt(seq, cuts=[*prompt_cuts, *range(len(tokens), len(seq))])
                logp = _log_softmax(logits)
                if temperature <= 0:
                    tok = int(np.argmax(logits))
                else:
                    tok = self._sample(logp / temperature, top_p, rng)
                if self.is_eog(tok):
                    finish = "stop"
                    break
                out.append(tok)
                piece = self.token_text(tok)
                if top_logprobs is not None:
                    entries.append(self._logprob_entry(tok, piece, logp, top_logprobs))
                text = self.llm.detokenize(out).decode("utf-8", errors="replace")
                cut = min((text.find(s) for s in stops if s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                    break
        return Generation(text, finish, len(tokens), len(out), entries)

    @staticmethod
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

    def _logprob_entry(self, tok: int, piece: str, logp: np.ndarray, k: int) -> dict:
        def one(t: int, s: str) -> dict:
            return {"token": s, "logprob": float(logp[t]), "bytes": list(s.encode("utf-8"))}

        entry = one(tok, piece)
        top = np.argpartition(-logp, k)[:k] if 0 < k < len(logp) else np.arange(len(logp) if k else 0)
        top = top[np.argsort(-logp[top])]
        entry["top_logprobs"] = [one(int(t), self.token_text(int(t))) for t in top]
        return entry

    def close(self) -> None:
        self.llm.close()


class _Retryable(Exception):
    """A failure worth another attempt (connection, timeout, 5xx/429, malformed reply)."""

    def __init__(self, cause: str, *, unreachable: bool = False) -> None:
        super().__init__(cause)
        self.unreachable = unreachable


def _normalise_base_url(base_url: str) -> str:
    u = urllib.parse.urlsplit(base_url.strip())
    if u.scheme not in ("http", "https") or not u.netloc:
        raise BackendError(f"not an http(s) URL: {base_url!r} (expected e.g. http://127.0.0.1:8085/v1)")
    path = u.path.rstrip("/")
    if not path:
        path = "/v1"  # the usual mount point; servers mounted elsewhere are named with their full path
    return urllib.parse.urlunsplit((u.scheme, u.netloc, path, "", ""))


class OpenAIChat:
    """A client for ``POST {base_url}/chat/completions`` of any OpenAI-compatible server (vLLM, llama.cpp's
    ``llama-server``, ``medix judge serve``), using only the standard library.

    Every request has a timeout and at most ``max_retries`` retries with exponential backoff (with jitter)
    on connection errors, timeouts, HTTP 429/5xx and malformed JSON; other HTTP errors fail at once. In
    :meth:`request_many` a server found unreachable after all retries fails the requests not yet started
    immediately, so a dead server costs one retry cycle per batch rather than one per item.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
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
        self.base_url = _normalise_base_url(base_url)
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.name = f"{self.base_url} model={model}"

    def _post_once(self, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = _error_detail(e)
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}: {detail}") from e
            raise BackendError(f"{self.url}: HTTP {e.code}: {detail}") from e
        except TimeoutError as e:
            raise _Retryable(f"no reply within {self.timeout:g}s (timeout)") from e
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"no reply within {self.timeout:g}s (timeout)") from e
            raise _Retryable(f"cannot connect: {reason}", unreachable=True) from e
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Retryable(f"connection failed: {type(e).__name__}: {e}", unreachable=True) from e
        try:
            reply = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _Retryable(f"malformed JSON in the reply: {raw[:200]!r}") from e
        if not isinstance(reply, dict):
            raise _Retryable(f"malformed reply (not a JSON object): {raw[:200]!r}")
        return reply

    def request(self, body: dict, *, _down: threading.Event | None = None) -> dict:
        """POST ``body`` (``model`` is filled in) with retries; return the decoded JSON reply."""
        body = {"model": self.model, **body}
        attempts = self.max_retries + 1
        last = ""
        for i in range(attempts):
            if _down is not None and _down.is_set():
                raise BackendError(
                    f"{self.url}: not attempted: the server was unreachable earlier in this batch"
                )
            try:
                return self._post_once(body)
            except _Retryable as e:
                last = str(e)
                if i + 1 < attempts:
                    time.sleep(self.backoff * (2**i) * (0.75 + 0.5 * random.random()))
                elif e.unreachable and _down is not None:
                    _down.set()
        raise BackendError(f"{self.url}: {last} (after {attempts} attempt{'s' * (attempts > 1)})")

    def request_many(
        self, bodies: Sequence[dict], *, on_result: Callable[[int, dict | BackendError], None] | None = None
    ) -> list[dict | BackendError]:
        """Run ``bodies`` concurrently (at most ``concurrency`` in flight); failures are returned in place.
        ``on_result(i, result)`` is called from the worker thread as soon as request ``i`` is done."""
        down = threading.Event()

        def one(i: int) -> dict | BackendError:
            try:
                r: dict | BackendError = self.request(bodies[i], _down=down)
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
    def _body(messages: list[dict], max_tokens: int, temperature: float, top_p: float, stop: Any) -> dict:
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        if stop:
            body["stop"] = list(stop)
        return body

    def _content(self, reply: dict) -> str:
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise BackendError(
                f"{self.url}: reply without choices[0].message.content: {str(reply)[:300]}"
            ) from e
        return content or ""

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
    ) -> str:
        return self._content(self.request(self._body(messages, max_tokens, temperature, top_p, stop)))

    def chat_many(
        self,
        list_of_messages: Sequence[list[dict]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
    ) -> list[str | BackendError]:
        bodies = [self._body(m, max_tokens, temperature, top_p, stop) for m in list_of_messages]
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


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        raw = e.read()
    except Exception:
        return e.reason or ""
    try:
        msg = json.loads(raw)["error"]["message"]
        return str(msg)
    except Exception:
        return raw[:300].decode("utf-8", errors="replace") or str(e.reason)


def open_chat_backend(
    model: str | None = None, url: str | None = None, name: str | None = None, **kw: Any
) -> ChatBackend:
    """A ``.gguf`` path -> :class:`LlamaCppChat`; ``url`` (+ ``name``, the model id on the server) ->
    :class:`OpenAIChat`. ``kw`` goes to the chosen class."""
    if url and model and not str(model).endswith(".gguf"):
        name = name or model  # `open_chat_backend(model="judge", url=...)` reads naturally too
        model = None
    if url and model:
        raise BackendError("give either a local .gguf model or a server URL, not both")
    if url:
        if not name:
            raise BackendError(f"{url}: name the model served there (e.g. --name judge)")
        return OpenAIChat(url, name, **kw)
    if model:
        if not str(model).endswith(".gguf"):
            raise BackendError(
                f"{model!r} is not a .gguf file; for a model behind a server pass its URL and name instead"
            )
        return LlamaCppChat(model, **kw)
    raise BackendError("no chat backend: give a local .gguf model path or an OpenAI-compatible server URL")
