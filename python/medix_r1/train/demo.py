"""``medix demo``: a few minutes of real MediX-R1 training on a CPU, fully offline.

Policy SmolLM2-135M-Instruct (converted once from the test GGUF), the same GGUF as an in-process llama.cpp
judge, the ONNX MiniLM embedder, and the bundled 50-item medical QA set; leaves a LoRA adapter,
``metrics.jsonl`` and a chart of the reward components.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medix_r1.errors import MissingModelError, check_model_path
from medix_r1.train.config import RunConfig, load_config
from medix_r1.train.data import demo_dataset_path
from medix_r1.train.prompt import compact_instruction

__all__ = ["DEMO_STEPS", "demo_config", "find_test_models", "run_demo"]

DEMO_STEPS = 12  # `medix demo`'s default: the format reward has reached ~1 by then
DEMO_GROUP = 4
DEMO_COMPLETION_TOKENS = 64

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_HF = "all-MiniLM-L6-v2"
MINILM_ONNX = "all-MiniLM-L6-v2-onnx"
_HOW = "run scripts/test-models.sh (or set MEDIX_TEST_MODELS to where it put them)"


def models_dir() -> Path:
    return Path(
        os.environ.get("MEDIX_TEST_MODELS", Path.home() / ".cache" / "medix-r1" / "test-models")
    ).expanduser()


def find_test_models(
    policy: str | None = None, judge: str | None = None, embedder: str | None = None
) -> dict[str, Path]:
    """Explicit paths win; otherwise the test models under MEDIX_TEST_MODELS. The embedder is exported to
    ONNX once from the Hugging Face checkpoint when only that is there."""
    root = models_dir()
    policy_p = check_model_path(policy or root / GGUF_NAME, "demo policy (GGUF)", _HOW)
    judge_p = check_model_path(judge or root / GGUF_NAME, "demo judge (GGUF)", _HOW)
    if embedder:
        emb = check_model_path(embedder, "demo embedder (ONNX directory)", _HOW, directory=True)
    else:
        emb = root / MINILM_ONNX
        if not (emb / "model.onnx").is_file():
            hf = root / MINILM_HF
            if not hf.is_dir():
                raise MissingModelError(
                    f"demo embedder: neither {emb} nor {hf} exists. {_HOW} (medix-r1 never downloads models)."
                )
            from medix_r1.embed.export import export_onnx

            export_onnx(hf, emb)
    return {"policy": policy_p, "judge": judge_p, "embedder": emb}


def demo_config(
    out: str | Path, steps: int, models: dict[str, Path], overrides: list[str] | None = None, threads: int = 0
) -> RunConfig:
    """Settings chosen so the format reward climbs within about ten CPU steps while a step stays short: a
    compact format instruction and one worked example (about 230 prompt tokens instead of 420: the policy's
    forward and backward passes over prompt + completion dominate a CPU step), groups of 4 completions of at
    most 64 tokens, temperature 0.8, LoRA at LR 1e-3, no KL. Timed by benchmarks/bench_train.py."""
    n_threads = threads or min(os.cpu_count() or 2, 4)
    base = [
        f"--model.path={models['policy']}",
        f"--data.path={demo_dataset_path()}",
        "--data.few_shot=1",
        "--algo.name=grpo",
        "--algo.beta=0.0",  # no reference forward pass: half the scoring cost on a CPU
        f"--algo.num_generations={DEMO_GROUP}",
        f"--algo.max_completion_length={DEMO_COMPLETION_TOKENS}",
        "--algo.temperature=0.8",
        "--lora.r=16",
        "--lora.alpha=32",
        f"--train.output_dir={out}",
        f"--train.max_steps={steps}",
        "--train.prompts_per_step=1",
        "--train.learning_rate=1e-3",
        f"--train.save_steps={max(steps // 2, 1)}",
        f"--train.threads={n_threads}",
        "--train.device=cpu",
        f"--reward.judge.model={models['judge']}",
        f"--reward.judge.n_threads={n_threads}",
        f"--reward.embed.model={models['embedder']}",
    ]
    cfg = load_config(None, base + list(overrides or []))
    if not cfg.data.system_prompt:  # the user's own instruction wins
        cfg.data.system_prompt = compact_instruction(cfg.data.reasoning_tag)
    return cfg


def run_demo(
    out: str | Path, steps: int, models: dict[str, Path], overrides: list[str] | None = None
) -> dict[str, Any]:
    from medix_r1.train.trainer import run_training

    cfg = demo_config(out, steps, models, overrides)
    return run_training(cfg, overwrite=True)
