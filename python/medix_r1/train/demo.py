"""``medix demo``: a few minutes of real MediX-R1 training on a CPU, fully offline.

Policy SmolLM2-135M-Instruct (converted once from the test GGUF), the same GGUF as an in-process llama.cpp
judge, the ONNX MiniLM embedder, and the bundled 50-item medical QA set; leaves a LoRA adapter,
``metrics.jsonl`` and a chart of the reward components.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medix_r1.errors import MissingModelError, check_model_path
from medix_r1.train.config import RunConfig, load_config
from medix_r1.train.data import demo_dataset_path
from medix_r1.train.prompt import compact_instruction

__all__ = [
    "DEMO_COMPARE",
    "DEMO_REWARD",
    "DEMO_STEPS",
    "demo_config",
    "find_test_models",
    "one_completion_per_pass",
    "run_demo",
]

DEMO_STEPS = 12  # `medix demo`'s default: the format reward has reached ~1 by then
DEMO_GROUP = 4
DEMO_COMPLETION_TOKENS = 64
DEMO_COMPARE = 8  # questions answered by the base and the trained policy at the end (0: no comparison)

# The demo's own reward settings (`medix train` keeps the paper's). With the embedded tiny models the paper's
# binary components carry no signal: the 135M judge says YES to nearly every answer and MiniLM's cosine for a
# right answer rarely reaches 0.8, so after the format is learned every group of completions scores the same
# and the advantages are zero. The judge's P(YES) and the cosine itself vary from answer to answer; the
# judge's P(YES) barely does (0.83-0.89 for anything with an answer), so the demo weighs it less and the
# embedding and the modality tag more.
DEMO_REWARD = [
    "--reward.soft_judge=true",
    "--reward.embed.soft=true",
    "--reward.format_weight=0.1",
    "--reward.llm_weight=0.2",
    "--reward.embed_weight=0.5",
    "--reward.modality_weight=0.3",
]

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
    """Settings chosen so the reward climbs within about ten CPU steps while a step stays short: a compact
    format instruction and two worked examples with different modality tags (about 300 prompt tokens instead
    of 420: the policy's forward and backward passes over prompt + completion dominate a CPU step), groups of
    4 completions of at most 64 tokens, temperature 0.8, LoRA at LR 1e-3, no KL, and the soft reward of
    ``DEMO_REWARD``. Timed by benchmarks/bench_train.py."""
    n_threads = threads or min(os.cpu_count() or 2, 4)
    base = [
        f"--model.path={models['policy']}",
        f"--data.path={demo_dataset_path()}",
        "--data.few_shot=2",  # two different tags: the tag depends on the image
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
        # A step embeds a handful of short answers: one ONNX Runtime thread does it in milliseconds, and a
        # second only spins against torch's threads for the same cores.
        "--reward.embed.threads=1",
        *DEMO_REWARD,
    ]
    cfg = load_config(None, base + list(overrides or []))
    if not cfg.data.system_prompt:  # the user's own instruction wins
        cfg.data.system_prompt = compact_instruction(cfg.data.reasoning_tag)
    return cfg


def one_completion_per_pass(cfg: RunConfig) -> dict[str, int]:
    """TRL arguments that generate and score a step's groups at once but run the policy's forward and
    backward passes one completion at a time, accumulating the gradient: the same update, with a quarter of
    the activation memory for groups of 4. On a CPU the saved activations of prompt + completion through all
    30 layers are most of the demo's memory (about 1 GB per completion in float32)."""
    n = cfg.train.prompts_per_step * cfg.algo.num_generations * cfg.train.gradient_accumulation_steps
    return {"per_device_train_batch_size": 1, "gradient_accumulation_steps": n}


def run_demo(
    out: str | Path,
    steps: int,
    models: dict[str, Path],
    overrides: list[str] | None = None,
    *,
    compare: int = DEMO_COMPARE,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, then (``compare`` > 0) answer that many demo questions with the base and the trained policy
    and print and chart the comparison; the result gains ``before_after`` (the summary), ``compare_json``
    and ``compare_chart``."""
    import gc

    from medix_r1.train.trainer import run_training

    cfg = demo_config(out, steps, models, overrides)
    result = run_training(cfg, overwrite=True, echo=echo, trainer_args=one_completion_per_pass(cfg))
    gc.collect()  # the trainer's policy copy and judge go before the comparison loads its own
    if compare > 0:
        from medix_r1.train.before_after import compare_policies, render_table, write_before_after

        ba = compare_policies(cfg, result["adapter"], questions=compare)
        echo(render_table(ba))
        result["compare_json"], result["compare_chart"] = write_before_after(ba, result["output_dir"])
        result["before_after"] = ba
    return result
