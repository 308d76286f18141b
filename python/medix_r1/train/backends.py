"""Where and how the policy is loaded: Unsloth 4-bit QLoRA on one NVIDIA GPU, transformers + PEFT LoRA
otherwise (CPU or a GPU without Unsloth). The kwargs builders are pure functions so they are unit-tested
without a GPU; unsloth, bitsandbytes and torch are imported only inside the loaders.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medix_r1.errors import GpuRequiredError, MissingModelError, check_model_path
from medix_r1.media import is_vision_checkpoint
from medix_r1.train.config import RunConfig

__all__ = [
    "Backend",
    "grpo_args",
    "is_vision_checkpoint",
    "load_policy",
    "resolve_policy_path",
    "select_backend",
    "unsloth_load_kwargs",
    "unsloth_peft_kwargs",
]

_HOW_POLICY = "Set model.path to a local transformers checkpoint directory or a .gguf file"


@dataclass(frozen=True)
class Backend:
    name: str  # "unsloth" | "transformers"
    device: str  # "cuda" | "cpu"
    load_in_4bit: bool
    notice: str = ""


def select_backend(cfg: RunConfig, *, cuda: bool | None = None, unsloth: bool | None = None) -> Backend:
    """Pick the backend from the config and what this machine has (both injectable for tests)."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if unsloth is None:
        unsloth = importlib.util.find_spec("unsloth") is not None
    t = cfg.train
    device = "cuda" if (t.device == "cuda" or (t.device == "auto" and cuda)) else "cpu"
    if device == "cuda" and not cuda:
        raise GpuRequiredError("train.device=cuda but torch sees no CUDA GPU")
    want_4bit = cfg.lora.load_in_4bit if cfg.lora.load_in_4bit is not None else device == "cuda"
    if device == "cpu":
        if t.backend == "unsloth":
            raise GpuRequiredError(
                "train.backend=unsloth needs an NVIDIA GPU; use train.backend=auto to fall back to CPU"
            )
        if want_4bit:
            raise GpuRequiredError(
                "lora.load_in_4bit (QLoRA) needs a GPU (bitsandbytes); set it to false on CPU"
            )
        notice = (
            "medix: no NVIDIA GPU in use: training on CPU with transformers + PEFT LoRA (same data, reward, "
            "algorithm and outputs; much slower)."
        )
        return Backend("transformers", "cpu", False, notice)
    if t.backend == "unsloth" or (t.backend == "auto" and unsloth):
        if not unsloth:
            raise GpuRequiredError(
                "train.backend=unsloth but unsloth is not installed: pip install 'medix-r1[gpu]'"
            )
        return Backend("unsloth", "cuda", want_4bit)
    notice = (
        ""
        if t.backend == "transformers"
        else (
            "medix: unsloth is not installed; training with transformers + PEFT on the GPU "
            "(pip install 'medix-r1[gpu]' for Unsloth's faster, leaner QLoRA)."
        )
    )
    return Backend("transformers", "cuda", want_4bit, notice)


def resolve_policy_path(cfg: RunConfig) -> Path:
    """A trainable checkpoint directory: the configured one, or the GGUF converted once into the cache."""
    if not cfg.model.path:
        raise MissingModelError("model.path is not set: " + _HOW_POLICY)
    p = Path(cfg.model.path).expanduser()
    if p.suffix.lower() == ".gguf":
        from medix_r1.train.convert import gguf_to_checkpoint

        check_model_path(p, "policy model (GGUF)", _HOW_POLICY)
        return gguf_to_checkpoint(p, cfg.model.converted_dir or None)
    return check_model_path(p, "policy model", _HOW_POLICY, directory=True)


def _dtype_name(cfg: RunConfig, backend: Backend) -> str:
    if cfg.model.dtype != "auto":
        return cfg.model.dtype
    return "bfloat16" if backend.device == "cuda" else "float32"


def unsloth_load_kwargs(
    cfg: RunConfig, path: str | Path, backend: Backend, *, vision: bool
) -> dict[str, Any]:
    """Arguments for ``FastLanguageModel.from_pretrained`` / ``FastVisionModel.from_pretrained``."""
    kw: dict[str, Any] = {
        "model_name": str(path),
        "max_seq_length": cfg.model.max_seq_length,
        "load_in_4bit": backend.load_in_4bit,
        "dtype": None if cfg.model.dtype == "auto" else cfg.model.dtype,
        "full_finetuning": not cfg.lora.enabled,
        "local_files_only": True,
    }
    if vision:
        kw["use_gradient_checkpointing"] = "unsloth" if cfg.train.gradient_checkpointing else False
    else:
        kw["fast_inference"] = (
            False  # rollouts through TRL's generate (or TRL's vLLM), not Unsloth's own vLLM
        )
        kw["max_lora_rank"] = cfg.lora.r
    return kw


def unsloth_peft_kwargs(cfg: RunConfig, *, vision: bool) -> dict[str, Any]:
    """Arguments for ``FastLanguageModel.get_peft_model`` / ``FastVisionModel.get_peft_model``."""
    lo = cfg.lora
    kw: dict[str, Any] = {
        "r": lo.r,
        "lora_alpha": lo.alpha,
        "lora_dropout": lo.dropout,
        "bias": "none",
        "random_state": cfg.train.seed,
        "use_gradient_checkpointing": "unsloth" if cfg.train.gradient_checkpointing else False,
    }
    if vision:
        kw.update(
            finetune_vision_layers=lo.finetune_vision_layers,
            finetune_language_layers=True,
            finetune_attention_modules=True,
            finetune_mlp_modules=True,
        )
    else:
        kw["target_modules"] = list(lo.target_modules)
    return kw


def peft_lora_config(cfg: RunConfig, *, vision: bool) -> Any:
    from peft import LoraConfig

    lo = cfg.lora
    targets: Any = list(lo.target_modules)
    if vision and not lo.finetune_vision_layers:
        # Only the language model's projections: a regex so the vision tower's q/k/v of the same name are
        # left alone.
        targets = (
            r".*(?:language_model|text_model|model\.layers).*\.(?:" + "|".join(lo.target_modules) + r")$"
        )
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def grpo_args(cfg: RunConfig, backend: Backend) -> dict[str, Any]:
    """Keyword arguments for ``trl.GRPOConfig``: algorithm preset, batch shape, checkpointing, logging."""
    a, t = cfg.algo, cfg.train
    kw: dict[str, Any] = {
        "output_dir": t.output_dir,
        "max_steps": t.max_steps,
        # TRL counts completions: each micro-batch holds prompts_per_step whole groups.
        "per_device_train_batch_size": t.prompts_per_step * a.num_generations,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "num_generations": a.num_generations,
        "max_completion_length": a.max_completion_length,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "num_iterations": a.num_iterations,
        "beta": a.beta,
        "epsilon": a.epsilon,
        "epsilon_high": a.epsilon_high,
        "loss_type": a.loss_type,
        "scale_rewards": a.scale_rewards,
        "importance_sampling_level": a.importance_sampling_level,
        # A truncated completion fails the format reward: that is the signal.
        "mask_truncated_completions": False,
        "learning_rate": t.learning_rate,
        "weight_decay": t.weight_decay,
        "warmup_steps": float(t.warmup_ratio),  # transformers 5: a float in [0, 1) is a ratio
        "lr_scheduler_type": t.lr_scheduler_type,
        "max_grad_norm": t.max_grad_norm,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "logging_steps": 1,
        "seed": t.seed,
        "data_seed": t.seed,
        "report_to": "none",
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "gradient_checkpointing": t.gradient_checkpointing,
        "use_cpu": backend.device == "cpu",
        "bf16": backend.device == "cuda" and _dtype_name(cfg, backend) == "bfloat16",
        "fp16": backend.device == "cuda" and _dtype_name(cfg, backend) == "float16",
        "log_completions": False,
        "use_vllm": t.use_vllm,
    }
    if t.use_vllm:
        kw["vllm_mode"] = t.vllm_mode
        if t.vllm_mode == "server":
            kw["vllm_server_host"] = t.vllm_server_host
            kw["vllm_server_port"] = t.vllm_server_port
        else:
            kw["vllm_gpu_memory_utilization"] = t.vllm_gpu_memory_utilization
    if t.gradient_checkpointing:
        kw["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    kw.update(cfg.trl)  # any further GRPOConfig field (train/config.check_trl_section checked them)
    return kw


def load_policy(cfg: RunConfig, backend: Backend) -> tuple[Any, Any, Any, bool]:
    """(model, processing_class, peft_config or None, is_vision); with Unsloth the adapter is already on."""
    path = resolve_policy_path(cfg)
    vision = is_vision_checkpoint(path, cfg.model.kind)
    model: Any  # transformers' stubs type .to() on the auto classes too narrowly for mypy
    if backend.name == "unsloth":
        import unsloth  # noqa: F401  (must precede transformers/trl to patch them)

        if vision:
            from unsloth import FastVisionModel as Fast
        else:
            from unsloth import FastLanguageModel as Fast
        model, proc = Fast.from_pretrained(**unsloth_load_kwargs(cfg, path, backend, vision=vision))
        if cfg.lora.enabled:
            model = Fast.get_peft_model(model, **unsloth_peft_kwargs(cfg, vision=vision))
        return model, proc, None, vision

    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

    dtype = getattr(torch, _dtype_name(cfg, backend))
    kw: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if backend.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    if vision:
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(str(path), **kw)
        proc = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        tok = proc.tokenizer
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kw)
        proc = tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if backend.device == "cuda" and not backend.load_in_4bit:
        model = model.to("cuda")
    if backend.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing
        )
    peft_cfg = peft_lora_config(cfg, vision=vision) if cfg.lora.enabled else None
    return model, proc, peft_cfg, vision
