"""One description of a chat backend and the one factory that builds it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medix_r1.config import check_fields, combine, option
from medix_r1.errors import BackendError, ConfigError
from medix_r1.llm.cpu import ExtraBuffers
from medix_r1.llm.llamacpp import LlamaCppChat
from medix_r1.llm.remote import OpenAIChat

__all__ = ["BackendConfig", "open_backend", "open_local"]

MAX_TIMEOUT = 86400.0  # one day: a larger (or infinite) timeout is refused, not an OverflowError later


@dataclass
class BackendConfig:
    """Which chat model to use and how: a local GGUF run in-process by llama.cpp (``model``) or an
    OpenAI-compatible server (``url`` + ``name``). The llama.cpp fields apply to the first, the HTTP ones to
    the second. The reward judge, the eval grader and the evaluated policy are all built from one of these.
    """

    model: str | None = option(None, "GGUF file run in-process with llama.cpp")
    url: str | None = option(None, "base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8085/v1")
    name: str | None = option(None, "model id on that server (required with url)")
    n_ctx: int = option(4096, "llama.cpp context size in tokens", ge=256)
    n_gpu_layers: int = option(0, "llama.cpp layers offloaded to the GPU (-1: all)")
    n_threads: int | None = option(
        None, "llama.cpp CPU threads (default: chosen from the cores free, see medix_r1.llm.cpu)", ge=1
    )
    # YAML reads a bare off/on as false/true: both accepted (and stored as "off"/"on")
    llama_extra_buffers: ExtraBuffers | bool = option(  # noqa: RUF009
        "auto",
        "llama.cpp's extra CPU buffer types: auto (off on AMX CPUs, where they crash), on, off; "
        "--llama-extra-buffers / MEDIX_LLAMA_EXTRA_BUFFERS override it",
    )
    seed: int = option(0, "llama.cpp sampling seed")
    chat_format: str | None = option(None, "llama-cpp-python chat format (default: the GGUF's own template)")
    mmproj: str | None = option(None, "multimodal projector (mmproj-*.gguf) for images")
    concurrency: int = option(8, "requests in flight at once against the server", ge=1)
    timeout: float = option(
        60.0, "seconds one server request may take in all (connect + reply)", gt=0, le=MAX_TIMEOUT
    )
    batch_timeout: float | None = option(
        None, "seconds a batch of server requests may take in all, retries included", gt=0, le=MAX_TIMEOUT
    )
    max_retries: int = option(3, "retries of a failed server request (exponential backoff)", ge=0)
    api_key_env: str | None = option(
        None, "environment variable holding the server's API key (sent only to url's host)"
    )

    _section = "backend"  # the config section named in errors

    def __post_init__(self) -> None:
        sec = self._section
        errors: list[ConfigError] = []
        try:
            check_fields(self, sec)  # types and declared bounds
        except ConfigError as e:
            errors.extend(getattr(e, "errors", None) or [e])
        if isinstance(self.llama_extra_buffers, bool):
            self.llama_extra_buffers = "on" if self.llama_extra_buffers else "off"
        if bool(self.model) == bool(self.url):
            errors.append(
                ConfigError(
                    f"{sec}: give exactly one of {sec}.model (a local .gguf) or {sec}.url (a server)",
                    key=f"{sec}.model",
                    value=self.model,
                    allowed="exactly one of model / url",
                )
            )
        elif self.url and not self.name:
            errors.append(
                ConfigError(
                    f"{sec}.url needs {sec}.name, the model id served there (see GET <url>/models)",
                    key=f"{sec}.name",
                    value=None,
                    allowed="the server's model id",
                )
            )
        if errors:
            raise combine(errors)


def open_backend(config: BackendConfig, **overrides: Any) -> LlamaCppChat | OpenAIChat:
    """The one function that opens a chat backend (the reward judge, the eval grader, the evaluated policy,
    `medix judge serve`): :class:`LlamaCppChat` for a ``.gguf`` model, :class:`OpenAIChat` for a server. A
    missing GGUF raises MissingModelError; ``overrides`` (e.g. ``backoff``) go to the class."""
    if config.url:
        assert config.name is not None
        return OpenAIChat(
            config.url,
            config.name,
            api_key_env=config.api_key_env,
            timeout=config.timeout,
            batch_timeout=config.batch_timeout,
            max_retries=config.max_retries,
            concurrency=config.concurrency,
            **overrides,
        )
    model = str(config.model)
    if not model.endswith(".gguf"):
        raise BackendError(
            f"{model!r} is not a .gguf file; for a model behind a server give its URL and name instead"
        )
    return LlamaCppChat(
        model,
        n_ctx=config.n_ctx,
        n_gpu_layers=config.n_gpu_layers,
        n_threads=config.n_threads,
        seed=config.seed,
        chat_format=config.chat_format,
        clip_model_path=config.mmproj,
        llama_extra_buffers=str(config.llama_extra_buffers),  # normalised to auto|on|off
        **overrides,
    )


def open_local(
    model: str | Path | BackendConfig | LlamaCppChat, *, lora: str | Path | None = None, **config: Any
) -> LlamaCppChat:
    """An in-process llama.cpp model (a judge, a served model): ``model`` itself when already open, else
    the GGUF a :class:`BackendConfig` names (for a path: ``config``, BackendConfig fields such as ``n_ctx``
    or ``mmproj``, None for the declared default) opened by :func:`open_backend`, with the llama.cpp LoRA
    GGUF ``lora`` applied on top."""
    if isinstance(model, LlamaCppChat):
        return model
    if not isinstance(model, BackendConfig):
        given: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in config.items()}
        model = BackendConfig(model=str(model), **{k: v for k, v in given.items() if v is not None})
    chat = open_backend(model, **({} if lora is None else {"lora_path": lora}))
    if not isinstance(chat, LlamaCppChat):
        raise BackendError(f"{model.url}: a local .gguf model is needed here, not a server")
    return chat
