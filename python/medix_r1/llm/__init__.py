"""Chat backends shared by the reward judge, the eval grader and the evaluated policy: llama.cpp in-process
and any OpenAI-compatible server, both described by one :class:`BackendConfig` and built by
:func:`open_backend` (:func:`open_local` where it must be in-process).

Both raise :class:`medix_r1.errors.BackendError` naming the backend and the cause; nothing here touches the
network except the server URL the caller names.
"""

from __future__ import annotations

from medix_r1.llm.base import ChatBackend, Choice
from medix_r1.llm.config import BackendConfig, open_backend, open_local
from medix_r1.llm.llamacpp import GGUF_HOW, LlamaCppChat
from medix_r1.llm.remote import OpenAIChat

__all__ = [
    "GGUF_HOW",
    "BackendConfig",
    "ChatBackend",
    "Choice",
    "LlamaCppChat",
    "OpenAIChat",
    "open_backend",
    "open_local",
]
