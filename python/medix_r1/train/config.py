"""The training run's configuration: one dataclass per concern, loaded from YAML plus dotted command-line
overrides by the package's one config loader (:mod:`medix_r1.config`).

Every field carries one help string and its allowed values (a ``Literal`` annotation, bounds);
``medix train --print-config`` prints them with the defaults. A wrong value is a ConfigError naming the key
(``lora.enabled``), the value and what is allowed, raised before any model loads. Algorithm presets (GRPO,
DAPO, GSPO, Dr. GRPO) fill whatever the user left unset, so a YAML only names what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medix_r1 import config as _cfg
from medix_r1.config import bad_value, check_fields
from medix_r1.config import option as _f
from medix_r1.errors import ConfigError
from medix_r1.rewards.composite import RewardConfig, weights_shorthand

__all__ = [
    "ALGORITHMS",
    "AlgoConfig",
    "ConfigError",
    "DataConfig",
    "LoraConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "TrainerKnobs",
    "add_override_options",
    "apply_overrides",
    "check_trl_section",
    "collect_overrides",
    "load_config",
    "option_keys",
    "render_config",
]

apply_overrides = _cfg.apply_overrides
collect_overrides = _cfg.collect_overrides
_to_dict = _cfg.to_dict  # train/trainer.py writes run_config.yaml with it

# name -> preset of the fields left as None in AlgoConfig. Names follow TRL's (loss_type, scale_rewards, ...).
# Each algorithm is GRPO's preset with what it changes.
_GRPO: dict[str, Any] = dict(
    beta=0.01,
    epsilon=0.2,
    epsilon_high=0.2,
    loss_type="grpo",
    scale_rewards="group",
    importance_sampling_level="token",
    dynamic_sampling=False,
)
ALGORITHMS: dict[str, dict[str, Any]] = {
    "grpo": _GRPO,
    # No KL term, a higher upper clip (clip-higher), DAPO's token-level loss, dynamic sampling.
    "dapo": {**_GRPO, "beta": 0.0, "epsilon_high": 0.28, "loss_type": "dapo", "dynamic_sampling": True},
    # GSPO's sequence-level ratio is much closer to 1 than a token's, hence its far narrower clip range.
    "gspo": {
        **_GRPO,
        "beta": 0.0,
        "epsilon": 3e-4,
        "epsilon_high": 4e-4,
        "importance_sampling_level": "sequence",
    },
    # No KL term, Dr. GRPO's loss, rewards not scaled by the group's std.
    "dr_grpo": {**_GRPO, "beta": 0.0, "loss_type": "dr_grpo", "scale_rewards": "none"},
}


@dataclass
class ModelConfig:
    path: str = _f(
        "", "base model: a local transformers checkpoint directory or a .gguf file (converted once)"
    )
    kind: Literal["auto", "text", "vision"] = _f(
        "auto", "whether the model takes images (auto: read its config)"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "weights dtype (auto: float32 on CPU, bfloat16 on GPU)"
    )
    max_seq_length: int = _f(2048, "longest prompt + completion in tokens (Unsloth's max_seq_length)", ge=16)
    converted_dir: str = _f("", "where a GGUF is converted to (default ~/.cache/medix-r1/policies/<name>)")

    def __post_init__(self) -> None:
        check_fields(self, "model")


@dataclass
class DataConfig:
    path: str = _f(
        "", "training data: JSONL, Parquet, an image folder with metadata.jsonl, or a save_to_disk dir"
    )
    max_samples: int = _f(0, "use at most this many rows (0: all)", ge=0)
    skip_bad: bool = _f(False, "skip rows that fail `medix data check` (and report them) instead of refusing")
    reasoning_tag: Literal["think", "thinking"] = _f("think", "the reasoning tag the prompt asks for")
    system_prompt: str = _f("", "replace the built-in medical format instruction (empty: built-in)")
    few_shot: int = _f(
        0, "worked examples shown as earlier chat turns; helps very small policies", ge=0, le=2
    )
    image_max_side: int = _f(512, "resize images so their longer side is at most this (0: keep)", ge=0)

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass
class AlgoConfig:
    name: Literal["grpo", "dapo", "gspo", "dr_grpo"] = _f("grpo", "fills the fields below left unset (null)")
    num_generations: int = _f(
        4, "group size G: completions sampled per prompt (>= 2: group advantages)", ge=2
    )
    temperature: float = _f(1.0, "sampling temperature of the rollouts", gt=0)
    top_p: float = _f(1.0, "nucleus sampling of the rollouts", gt=0, le=1)
    max_completion_length: int = _f(256, "longest completion in tokens", ge=1)
    num_iterations: int = _f(
        1, "policy updates per generated batch (mu); > 1 makes the clipping matter", ge=1
    )
    beta: float | None = _f(None, "KL coefficient to the reference policy (grpo 0.01, others 0)", ge=0)
    epsilon: float | None = _f(None, "lower clip range of the importance ratio", gt=0)
    epsilon_high: float | None = _f(None, "upper clip range, >= epsilon (DAPO's clip-higher: 0.28)", gt=0)
    loss_type: str | None = _f(None, "TRL loss_type: grpo | dapo | dr_grpo | bnpo | ...")
    scale_rewards: Literal["group", "batch", "none"] | None = _f(
        None, "divide advantages by this std (Dr. GRPO: none)"
    )
    importance_sampling_level: Literal["token", "sequence"] | None = _f(None, "GSPO: sequence")
    dynamic_sampling: bool | None = _f(
        None, "drop groups with zero reward variance and refill the batch (DAPO)"
    )
    dynamic_min_mean: float = _f(0.01, "dynamic sampling also drops groups whose mean reward is below this")
    dynamic_max_mean: float = _f(0.99, "... or above this (the authors' online filter)")
    dynamic_max_rounds: int = _f(
        4, "extra generation rounds per step to refill the batch before giving up", ge=0
    )

    def __post_init__(self) -> None:
        check_fields(self, "algo")
        for k, v in ALGORITHMS[self.name].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        check_fields(self, "algo")  # the preset's values too
        assert self.epsilon is not None and self.epsilon_high is not None
        if self.epsilon_high < self.epsilon:
            raise bad_value("algo.epsilon_high", self.epsilon_high, f">= algo.epsilon ({self.epsilon})")


@dataclass
class LoraConfig:
    enabled: bool = _f(True, "train a LoRA adapter (false: full fine-tuning, GPU only in practice)")
    r: int = _f(16, "LoRA rank", ge=1)
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r)", ge=1)
    dropout: float = _f(0.0, "LoRA dropout", ge=0, lt=1)
    target_modules: list[str] = _f(  # noqa: RUF009
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        help="modules that get adapters (the language model's attention and MLP projections)",
    )
    load_in_4bit: bool | None = _f(None, "QLoRA: load the base in 4 bit (null: yes on a GPU, no on CPU)")
    finetune_vision_layers: bool = _f(False, "VLMs: also adapt the vision tower")

    def __post_init__(self) -> None:
        check_fields(self, "lora")
        if not self.target_modules:
            raise bad_value("lora.target_modules", self.target_modules, "at least one module name")


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/medix", "where checkpoints, the adapter, metrics.jsonl and the chart go")
    backend: Literal["auto", "unsloth", "transformers"] = _f(
        "auto", "auto: Unsloth on an NVIDIA GPU, else transformers"
    )
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "where the policy trains")
    max_steps: int = _f(100, "optimizer steps", ge=1)
    prompts_per_step: int = _f(
        2, "prompts per optimizer step per device (each sampled num_generations times)", ge=1
    )
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step", ge=1)
    learning_rate: float = _f(
        1e-5, "peak learning rate (LoRA wants ~1e-5..5e-4; the authors' full FT: 1e-6)", gt=0
    )
    weight_decay: float = _f(0.01, "AdamW weight decay", ge=0)
    warmup_ratio: float = _f(0.0, "share of steps with linear warm-up", ge=0, lt=1)
    lr_scheduler_type: str = _f("constant", "transformers scheduler name: constant, linear, cosine, ...")
    max_grad_norm: float = _f(1.0, "gradient clipping", gt=0)
    save_steps: int = _f(50, "write a resumable checkpoint every N steps", ge=1)
    save_total_limit: int = _f(2, "keep at most this many checkpoints", ge=1)
    seed: int = _f(0, "seed of the data order, the sampling and the LoRA init")
    threads: int = _f(0, "CPU threads for torch (0: torch's default)", ge=0)
    gradient_checkpointing: bool = _f(False, "trade compute for memory")
    judge_retries: int = _f(
        3, "on a judge outage, retry a batch's scoring this many times before stopping", ge=0
    )
    judge_retry_wait: float = _f(10.0, "seconds between those retries (doubling each time)", ge=0)
    log_completions: int = _f(
        0,
        "every N steps, append that step's completions (every process's) with their rewards to "
        "completions.jsonl in output_dir (0: never)",
        ge=0,
    )
    chart: bool = _f(True, "draw reward_components.png from metrics.jsonl at the end")
    use_vllm: bool = _f(False, "generate rollouts with vLLM (TRL use_vllm; see `medix train --plan`)")
    vllm_mode: Literal["server", "colocate"] = _f(
        "server", "server: a `trl vllm-serve` process on other GPUs; colocate: the same GPUs"
    )
    vllm_server_host: str = _f("127.0.0.1", "host of `trl vllm-serve` (vllm_mode=server)")
    vllm_server_port: int = _f(8000, "port of `trl vllm-serve` (vllm_mode=server)", ge=1, le=65535)
    vllm_gpu_memory_utilization: float = _f(
        0.3, "share of each GPU vLLM may take (vllm_mode=colocate)", gt=0, le=1
    )

    def __post_init__(self) -> None:
        check_fields(self, "train")


@dataclass
class RunConfig:
    model: ModelConfig = _f(factory=ModelConfig, help="the policy")  # noqa: RUF009
    data: DataConfig = _f(factory=DataConfig, help="the training data")  # noqa: RUF009
    algo: AlgoConfig = _f(factory=AlgoConfig, help="the RL algorithm")  # noqa: RUF009
    lora: LoraConfig = _f(factory=LoraConfig, help="LoRA / QLoRA")  # noqa: RUF009
    reward: RewardConfig = _f(  # noqa: RUF009
        factory=RewardConfig, help="the MediX-R1 composite reward (medix_r1.rewards.composite)"
    )
    train: TrainConfig = _f(factory=TrainConfig, help="the optimisation loop and outputs")  # noqa: RUF009
    trl: dict[str, Any] = _f(  # noqa: RUF009
        factory=dict,
        help="any further trl.GRPOConfig field, passed through (checked against GRPOConfig's own fields; "
        "those medix sets from the sections above are refused: set them there)",
    )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _cfg.to_dict(self)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RunConfig:
        cfg: RunConfig = _cfg.build(cls, d or {}, "", prepare={"reward": weights_shorthand})
        return cfg


# The sections as the loader and the command-line parser see them.
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "algo": AlgoConfig,
    "lora": LoraConfig,
    "reward": RewardConfig,
    "train": TrainConfig,
}


@dataclass(frozen=True)
class TrainerKnobs:
    """What MedixGRPOTrainer reads beyond ``GRPOConfig``, typed. No defaults of its own: always made from a
    RunConfig (:meth:`from_config`), so each knob has its one default in the sections above."""

    dynamic_sampling: bool
    dynamic_min_mean: float
    dynamic_max_mean: float
    dynamic_max_rounds: int
    judge_retries: int
    judge_retry_wait: float
    log_completions: int

    @classmethod
    def from_config(cls, cfg: RunConfig | None = None) -> TrainerKnobs:
        cfg = cfg if cfg is not None else RunConfig()
        a, t = cfg.algo, cfg.train
        return cls(
            dynamic_sampling=bool(a.dynamic_sampling),
            dynamic_min_mean=a.dynamic_min_mean,
            dynamic_max_mean=a.dynamic_max_mean,
            dynamic_max_rounds=a.dynamic_max_rounds,
            judge_retries=t.judge_retries,
            judge_retry_wait=t.judge_retry_wait,
            log_completions=t.log_completions,
        )


# trl.GRPOConfig fields medix derives from other options than the one of the same name.
_TRL_DERIVED = {
    "per_device_train_batch_size": "train.prompts_per_step x algo.num_generations",
    "warmup_steps": "train.warmup_ratio",
    "data_seed": "train.seed",
    "use_cpu": "train.device",
    "bf16": "model.dtype",
    "fp16": "model.dtype",
}


def check_trl_section(cfg: RunConfig) -> None:
    """Check the ``trl:`` section against ``trl.GRPOConfig``'s own fields (imported only when the section is
    not empty): an unknown key is an error naming the closest field, a value is converted by the field's
    annotation, and a field medix sets itself is refused with the option that sets it. Every error at once."""
    if not cfg.trl:
        return
    import dataclasses
    import typing

    from trl import GRPOConfig

    from medix_r1.train.backends import Backend, grpo_args

    known = [f.name for f in dataclasses.fields(GRPOConfig) if f.init]
    try:
        hints = typing.get_type_hints(GRPOConfig)
    except Exception:
        hints = {}
    bare = dataclasses.replace(cfg, trl={})
    managed = set(grpo_args(bare, Backend("transformers", "cpu", False))) | {
        "vllm_mode",
        "vllm_server_host",
        "vllm_server_port",
        "vllm_gpu_memory_utilization",
        "gradient_checkpointing_kwargs",
    }
    own = {f.name: f"{sec}.{f.name}" for sec, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    errors: list[ConfigError] = []
    for name, value in list(cfg.trl.items()):
        key = f"trl.{name}"
        if name not in known:
            errors.append(
                ConfigError(
                    f"{key}: not a trl.GRPOConfig field; {_cfg.closest(str(name), known)}"
                    "(see `python -c 'import trl; help(trl.GRPOConfig)'`)",
                    key=key,
                    value=value,
                    allowed="a trl.GRPOConfig field",
                )
            )
        elif name in managed:
            via = own.get(name) or _TRL_DERIVED.get(name)
            errors.append(
                ConfigError(
                    f"{key}: set by medix-r1" + (f" from {via}; set that instead" if via else " (fixed)"),
                    key=key,
                    value=value,
                    allowed=via or "not settable",
                )
            )
        else:
            try:
                cfg.trl[name] = _cfg.convert(value, hints.get(name, Any), key)
            except ConfigError as e:
                errors.append(e)
    if errors:
        raise _cfg.combine(errors)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run file (or nothing: all defaults), apply overrides, convert and check every value."""
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}", value=str(p))
        d = _cfg.load_yaml(p) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections", value=str(p))
    apply_overrides(d, overrides or [])
    cfg = RunConfig.from_dict(d)
    check_trl_section(cfg)
    return cfg


def render_config(cfg: RunConfig | None = None) -> str:
    """YAML of every option with its (current or default) value and help, as ``--print-config`` shows."""
    return _cfg.render(
        cfg or RunConfig(), "medix train configuration: every option, its default, and what it does."
    )


def option_keys() -> list[str]:
    """Every dotted option (``train.max_steps``, ``reward.judge.model``, ...), for the command-line parser."""
    return _cfg.option_keys(SECTIONS)


def add_override_options(parser: Any) -> None:
    """Register ``--section.key`` for every option (hidden from --help; --print-config documents them)."""
    _cfg.add_override_options(parser, option_keys())
