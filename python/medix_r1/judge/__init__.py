"""The YES/NO judge of the MediX-R1 composite reward: prompt, in-process and remote judges, cache, validation.

``make_judge(JudgeConfig(model="judge.gguf"))`` runs the judge in-process with llama.cpp;
``JudgeConfig(url=..., name=...)`` talks to any OpenAI-compatible server, e.g. ``medix judge serve``. Both are
built on the backend :func:`medix_r1.llm.open_backend` makes of the config (a JudgeConfig is a BackendConfig).
``make_judge(cfg, rule="reference")`` asks the MediX-R1 authors' question and reads the reply their way
(:class:`ReferenceJudge`, used by the reward's reference mode).
"""

from __future__ import annotations

from medix_r1.judge.core import Judge, JudgeConfig, LocalJudge, RemoteJudge, Verdict, VerdictCache, make_judge
from medix_r1.judge.prompt import build_messages, sanitize
from medix_r1.judge.reference import ReferenceJudge

__all__ = [
    "Judge",
    "JudgeConfig",
    "LocalJudge",
    "ReferenceJudge",
    "RemoteJudge",
    "Verdict",
    "VerdictCache",
    "build_messages",
    "make_judge",
    "sanitize",
]
