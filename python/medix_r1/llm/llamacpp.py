"""An in-process llama.cpp model behind the chat-backend interface, with the token-level API the judges use.

Message text never becomes a chat-control token: :meth:`LlamaCppChat.chat_tokens` renders the model's chat
template around placeholders, tokenizes only the template's own scaffolding with special-token parsing on, and
splices every message's text in tokenized with it off. Every prompt built here (the reward judge, the eval
grader, ``medix judge serve``, the evaluated policy) goes through it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medix_r1.errors import BackendError, check_model_path
from medix_r1.llm.base import Choice

__all__ = ["GGUF_HOW", "ROLES", "LlamaCppChat"]

ROLES = ("system", "user", "assistant", "tool")

GGUF_HOW = (
    "Pass the path of a local .gguf file (copy it from a machine with network, e.g. "
    "`huggingface-cli download <repo> <file>.gguf`; for the tests run `scripts/test-models.sh`)"
)

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

# Stands for message i while the chat template is rendered. NUL cannot come from the template itself, and
# message text is never rendered (it is spliced in as tokens), so no text can imitate a placeholder.
_SLOT = "\x00\x1amedix-slot-{}\x1a\x00"
_SLOT_RE = re.compile("\x00\x1amedix-slot-([0-9]+)\x1a\x00")


def _text_only(messages: Sequence[dict]) -> bool:
    return all(
        isinstance(m.get("content"), (str, list, type(None))) and _pieces(m) is not None for m in messages
    )


def _pieces(m: dict) -> list[str] | None:
    """A message's text as pieces: a string is one piece, a list of strings several (tokenized one by one,
    so a caller can keep a piece's tokens the same whatever its neighbours); None for media parts."""
    c = m.get("content")
    if c is None:
        return [""]
    if isinstance(c, str):
        return [c]
    if isinstance(c, list) and all(isinstance(p, str) for p in c):
        return list(c)
    return None


class LlamaCppChat:
    """An in-process llama.cpp model (``llama_cpp.Llama``).

    ``chat`` (optionally under a GBNF ``grammar``) for conversations; for the judges a token-level API:
    :meth:`chat_tokens` (the injection-proof prompt), :meth:`eval_prompt` (next-token logits reusing the KV
    cache of the longest common prefix with the previous prompt) and :meth:`choose` (which of a few allowed
    next tokens is most likely). All calls are serialised with a lock (llama.cpp contexts are not
    thread-safe).

    ``clip_model_path`` (a multimodal projector, ``mmproj-*.gguf``) is best effort: it installs a
    llama-cpp-python multimodal chat handler, so ``chat`` accepts OpenAI-style ``image_url`` content parts
    (``data:`` URIs or ``file://`` paths). The token-level API is text only.

    The model is opened by :func:`medix_r1.llm.cpu.open_llama` (threads, OpenMP wait policy and
    ``llama_extra_buffers`` auto|on|off decided for this CPU, after a cached self-test in a child process).
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
        llama_extra_buffers: str | None = None,
        lora_path: str | Path | None = None,
    ) -> None:
        path = check_model_path(model_path, "llama.cpp model", GGUF_HOW)
        lora = None if lora_path is None else check_model_path(lora_path, "llama.cpp LoRA adapter", GGUF_HOW)
        from medix_r1.llm.cpu import open_llama, prepare_runtime

        # The OpenMP wait policy is chosen from the machine's load (llm/cpu.py) and must be set before
        # llama_cpp loads its OpenMP runtime.
        prepare_runtime(n_threads)
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
            self.llm = open_llama(
                path,
                extra_buffers=llama_extra_buffers,
                n_ctx=n_ctx,
                n_gpu_layers=n_gpu_layers,
                n_threads=n_threads,
                seed=seed,
                chat_format=None if chat_handler is not None else chat_format,
                chat_handler=chat_handler,
                lora_path=None if lora is None else str(lora),
            )
        except BackendError:
            raise
        except Exception as e:  # llama.cpp reports a bad file as a bare ValueError
            raise BackendError(f"llama.cpp could not load {path}: {e}") from e
        self.name = f"llama.cpp:{path}"
        self.file_name = Path(model_path).name  # as given (a symlink keeps its own name)
        self.model_path = path
        self.seed = seed
        self.supports_images = chat_handler is not None
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
        self._scaffolds: dict[tuple[str, ...], list[list[int]]] = {}
        self._recurrent = bool(
            getattr(self.llm, "_is_recurrent", False) or getattr(self.llm, "_is_hybrid", False)
        )

    # -- prompts ---------------------------------------------------------------------------------------

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
        """The prompt the model's own chat template (GGUF metadata) makes of ``messages``, as text, ending
        with the assistant header (for reading; models are fed :meth:`chat_tokens`). Models without a
        template get ChatML."""
        msgs = []
        for m in messages:
            pieces = _pieces(m)
            if pieces is None:
                raise BackendError(f"{self.name}: the token-level API takes text-only messages")
            msgs.append({"role": m["role"], "content": "".join(pieces)})
        if self._formatter is None:
            body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
            return body + "<|im_start|>assistant\n"
        return str(self._formatter(messages=msgs).prompt)

    def _scaffold(self, roles: tuple[str, ...]) -> list[list[int]]:
        """The template's tokens around the messages: ``len(roles) + 1`` pieces (before message 0, between
        messages, after the last one), tokenized with special-token parsing on. Cached per role sequence."""
        got = self._scaffolds.get(roles)
        if got is not None:
            return got
        rendered = self.format_prompt([{"role": r, "content": _SLOT.format(i)} for i, r in enumerate(roles)])
        # One pass over the rendering (a count and split per message was quadratic: 30,000 messages, 14 s):
        # the placeholders must appear once each, in order.
        pieces, pos = [], 0
        found = _SLOT_RE.finditer(rendered)
        for i in range(len(roles) + 1):
            m = next(found, None)
            if i == len(roles) and m is None:
                break
            if m is None or int(m[1]) != i:
                j = i if i < len(roles) else int(m[1]) if m is not None else i
                raise BackendError(
                    f"{self.name}: its chat template rewrites, repeats or drops message {j} "
                    f"({roles[j] if j < len(roles) else '?'}), so message text cannot be spliced in as plain "
                    "tokens; use a model with a standard template or give it one with chat_format"
                )
            pieces.append(rendered[pos : m.start()])
            pos = m.end()
        pieces.append(rendered[pos:])
        got = [self.tokenize(p, special=True) for p in pieces]
        if len(self._scaffolds) < 64:
            self._scaffolds[roles] = got
        return got

    def chat_tokens(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        """The prompt for ``messages`` as token ids, and the offset where each text piece starts.

        Only the chat template's scaffolding (role headers, end-of-turn, the assistant header) is tokenized
        with special-token parsing on; every message's text is tokenized with it off and spliced in, so no
        text can become a control token, whatever the vocabulary. A message's ``content`` may be a list of
        strings: each is tokenized on its own (its tokens then do not depend on its neighbours)."""
        texts = []
        for m in messages:
            pieces = _pieces(m)
            if pieces is None or not isinstance(m.get("role"), str):
                raise BackendError(
                    f"{self.name}: the token-level API takes text-only {{role, content}} messages"
                )
            if m["role"] not in ROLES:  # a role is rendered into the scaffolding: it must be one we know
                raise BackendError(
                    f"{self.name}: unknown message role {m['role'][:40]!r} (allowed: {', '.join(ROLES)})"
                )
            texts.append(pieces)
        scaffold = self._scaffold(tuple(m["role"] for m in messages))
        tokens: list[int] = list(scaffold[0])
        starts: list[int] = []
        for pieces, after in zip(texts, scaffold[1:]):
            for p in pieces:
                starts.append(len(tokens))
                tokens += self.tokenize(p, special=False)
            tokens += after
        return tokens, starts

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Tokens of ``text``; ``special=False`` keeps ``<|im_start|>`` etc. literal (for untrusted text).
        Unencodable text (a lone surrogate) becomes U+FFFD rather than an error."""
        return list(self.llm.tokenize(text.encode("utf-8", errors="replace"), add_bos=False, special=special))

    def token_text(self, token: int) -> str:
        return bytes(self.llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def is_control(self, token: int) -> bool:
        """A token that special-token parsing would make of text (control/unknown attribute): the kind an
        answer must never produce."""
        import llama_cpp

        attr = int(llama_cpp.llama_vocab_get_attr(self._vocab, token))
        return bool(attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN))

    def control_tokens(self) -> list[int]:
        """Every control token of the vocabulary."""
        return [t for t in range(self.llm.n_vocab()) if self.is_control(t)]

    # -- chat ------------------------------------------------------------------------------------------

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
        """The assistant's reply; ``grammar`` (GBNF) constrains it. Text-only conversations are fed as
        :meth:`chat_tokens`; image parts go through the multimodal chat handler."""
        gbnf = None
        if grammar is not None:
            from llama_cpp import LlamaGrammar

            self._check_grammar(grammar)
            gbnf = LlamaGrammar.from_string(grammar, verbose=False)
        sampling: dict[str, Any] = dict(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=self.seed,
            grammar=gbnf,
        )
        with self.lock:
            # A cold start each time: reusing the cached prefix changes how llama.cpp batches the prompt, and
            # with it greedy near-ties, so the reply would depend on the previous conversation.
            self.reset()
            try:
                if not _text_only(messages):
                    out: Any = self.llm.create_chat_completion(
                        messages=messages,  # type: ignore[arg-type]  # OpenAI-style dicts
                        **sampling,
                    )
                    return str(out["choices"][0]["message"]["content"] or "")
                tokens, _ = self.chat_tokens(messages)
                if len(tokens) >= self.llm.n_ctx():
                    raise BackendError(
                        f"{self.name}: prompt of {len(tokens)} tokens exceeds the context of "
                        f"{self.llm.n_ctx()}"
                    )
                out = self.llm.create_completion(prompt=tokens, **sampling)
            except BackendError:
                raise
            except (ValueError, RuntimeError) as e:  # llama-cpp-python's context overflow, decode failures
                raise BackendError(f"{self.name}: {type(e).__name__}: {e}") from e
        return str(out["choices"][0]["text"] or "")

    def _check_grammar(self, grammar: str) -> None:
        # llama-cpp-python parses the grammar only when sampling starts, and a grammar llama.cpp rejects
        # then crashes the process (a NULL sampler): parse it here first.
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise BackendError(f"{self.name}: llama.cpp cannot parse the GBNF grammar {grammar[:200]!r}")
        llama_cpp.llama_sampler_free(sampler)

    def chat_many(self, list_of_messages: Sequence[list[dict]], **kw: Any) -> list[str]:
        """Sequential: one llama.cpp context cannot decode two conversations at once here."""
        return [self.chat(m, **kw) for m in list_of_messages]

    # -- token level -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the KV cache. Call it before filling the cache any other way than :meth:`eval_prompt`
        (e.g. ``llm.create_completion``), so that eval_prompt never reuses KV split differently."""
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
                self._kv_bounds = set()  # the cache was filled by another path (e.g. create_completion)
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
            except Exception as e:  # llama.cpp reports decode failures as bare RuntimeErrors
                llm.reset()
                self._kv_bounds, self._kv_tokens = set(), np.zeros(0, dtype=np.intc)
                raise BackendError(f"{self.name}: llama.cpp decode failed: {e}") from e
            self._kv_tokens = new
            self.evaluated_tokens += n - start
            self.reused_tokens += start
            ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()

    def choose(
        self,
        tokens: Sequence[int],
        options: Mapping[str, Sequence[int]],
        *,
        cuts: Sequence[int] | None = None,
    ) -> Choice:
        """Which of the allowed next tokens is most likely after ``tokens``: ``options`` maps each answer to
        the token ids that spell its start (``{"yes": [...], "no": [...]}``, ``{"0": [...], "1": [...]}``);
        the result scores each answer by the log-sum-exp of its tokens' logits. What greedy decoding under a
        grammar allowing only these tokens would pick, in one forward pass and with the probabilities."""
        logits = self.eval_prompt(tokens, cuts=cuts)
        scores = {}
        for key, ids in options.items():
            vals = logits[list(ids)].astype(np.float64) if len(ids) else np.zeros(0)
            scores[key] = float(np.logaddexp.reduce(vals)) if vals.size else float("-inf")
        return Choice(scores)

    def close(self) -> None:
        self.llm.close()
