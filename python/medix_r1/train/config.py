"""The training run's configuration: one dataclass per concern, loaded from YAML plus dotted command-line
overrides.

Every field carries a help string (``medix train --print-config`` prints them with the defaults). Algorithm
presets (GRPO, DAPO, GSPO, Dr. GRPO) fill whatever the user left unset, so a YAML only names what it changes.
"""

from __future__ import annotations

from medix_r1 import errors

import dataclasses
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from medix_r1.rewards.composite import RewardConfig

__all__ = [
    "ALGORITHMS",
    "AlgoConfig",
    "ConfigError",
    "DataConfig",
    "LoraConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "render_config",
]


ConfigError = errors.ConfigError  # one type for the whole package (medix_r1.errors)


def _f(default: Any = MISSING, help: str = "", *, factory: Any = MISSING) -> Any:
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# name -> preset of the fields left as None in AlgoConfig. Names follow TRL's (loss_type, scale_rewards, ...).
ALGORITHMS: dict[str, dict[str, Any]] = {
    "grpo": dict(
        beta=0.01,
        epsilon=0.2,
        epsilon_high=0.2,
        loss_type="grpo",
        scale_rewards="group",
        importance_sampling_level="token",
        dynamic_sampling=False,
    ),
    "dapo": dict(
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",
        scale_rewards="group",
        importance_sampling_level="token",
        dynamic_sampling=True,
    ),
    # GSPO's sequence-level ratio is much closer to 1 than a token's, hence its far narrower clip range.
    "gspo": dict(
        beta=0.0,
        epsilon=3e-4,
        epsilon_high=4e-4,
        loss_type="grpo",
        scale_rewards="group",
        importance_sampling_level="sequence",
        dynamic_sampling=False,
    ),
    "dr_grpo": dict(
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.2,
        loss_type="dr_grpo",
        scale_rewards="none",
        importance_sampling_level="token",
        dynamic_sampling=False,
    ),
}


@dataclass
class ModelConfig:
    path: str = _f(
        "", "base model: a local transformers checkpoint directory or a .gguf file (converted once)"
    )
    kind: str = _f("auto", "auto | text | vision: whether the model takes images (auto: read its config)")
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16 (auto: float32 on CPU, bfloat16 on GPU)")
    max_seq_length: int = _f(2048, "longest prompt + completion in tokens (Unsloth's max_seq_length)")
    converted_dir: str = _f("", "where a GGUF is converted to (default ~/.cache/medix-r1/policies/<name>)")

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "text", "vision"):
            raise ConfigError(f"model.kind must be auto, text or vision, got {self.kind!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.max_seq_length < 16:
            raise ConfigError(f"model.max_seq_length must be >= 16, got {self.max_seq_length}")


@dataclass
class DataConfig:
    path: str = _f(
        "", "training data: JSONL, Parquet, an image folder with metadata.jsonl, or a save_to_disk dir"
    )
    max_samples: int = _f(0, "use at most this many rows (0: all)")
    skip_bad: bool = _f(False, "skip rows that fail `medix data check` (and report them) instead of refusing")
    reasoning_tag: str = _f("think", "think | thinking: the reasoning tag the prompt asks for")
    system_prompt: str = _f("", "replace the built-in medical format instruction (empty: built-in)")
    few_shot: int = _f(0, "worked examples (0-2) shown as earlier chat turns; helps very small policies")
    image_max_side: int = _f(512, "resize images so their longer side is at most this (0: keep)")

    def __post_init__(self) -> None:
        if self.reasoning_tag not in ("think", "thinking"):
            raise ConfigError(f"data.reasoning_tag must be think or thinking, got {self.reasoning_tag!r}")
        if not (0 <= self.few_shot <= 2):
            raise ConfigError(f"data.few_shot must be 0, 1 or 2, got {self.few_shot}")
        if self.max_samples < 0 or self.image_max_side < 0:
            raise ConfigError("data.max_samples and data.image_max_side must be >= 0")


@dataclass
class AlgoConfig:
    name: str = _f("grpo", "grpo | dapo | gspo | dr_grpo; fills the fields below left unset (null)")
    num_generations: int = _f(4, "group size G: completions sampled per prompt")
    temperature: float = _f(1.0, "sampling temperature of the rollouts")
    top_p: float = _f(1.0, "nucleus sampling of the rollouts")
    max_completion_length: int = _f(256, "longest completion in tokens")
    num_iterations: int = _f(1, "policy updates per generated batch (mu); > 1 makes the clipping matter")
    beta: float | None = _f(None, "KL coefficient to the reference policy (grpo 0.01, others 0)")
    epsilon: float | None = _f(None, "lower clip range of the importance ratio")
    epsilon_high: float | None = _f(None, "upper clip range (DAPO's clip-higher: 0.28)")
    loss_type: str | None = _f(None, "TRL loss_type: grpo | dapo | dr_grpo | bnpo | ...")
    scale_rewards: str | None = _f(
        None, "group | batch | none: divide advantages by this std (Dr. GRPO: none)"
    )
    importance_sampling_level: str | None = _f(None, "token | sequence (GSPO: sequence)")
    dynamic_sampling: bool | None = _f(
        None, "drop groups with zero reward variance and refill the batch (DAPO)"
    )
    dynamic_min_mean: float = _f(0.01, "dynamic sampling also drops groups whose mean reward is below this")
    dynamic_max_mean: float = _f(0.99, "... or above this (the authors' online filter)")
    dynamic_max_rounds: int = _f(4, "extra generation rounds per step to refill the batch before giving up")

    def __post_init__(self) -> None:
        if self.name not in ALGORITHMS:
            raise ConfigError(f"algo.name must be one of {sorted(ALGORITHMS)}, got {self.name!r}")
        for k, v in ALGORITHMS[self.name].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.num_generations < 2:
            raise ConfigError(
                f"algo.num_generations must be >= 2 (group advantages), got {self.num_generations}"
            )
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ConfigError(f"algo.scale_rewards must be group, batch or none, got {self.scale_rewards!r}")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise ConfigError("algo.importance_sampling_level must be token or sequence")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ConfigError("algo.temperature must be > 0 and algo.top_p in (0, 1]")
        if self.max_completion_length < 1 or self.num_iterations < 1 or self.dynamic_max_rounds < 0:
            raise ConfigError(
                "algo.max_completion_length and num_iterations must be >= 1, dynamic_max_rounds >= 0"
            )
        if self.beta < 0 or self.epsilon <= 0 or self.epsilon_high < self.epsilon:
            raise ConfigError("algo.beta must be >= 0, epsilon > 0 and epsilon_high >= epsilon")


@dataclass
class LoraConfig:
    enabled: bool = _f(True, "train a LoRA adapter (false: full fine-tuning, GPU only in practice)")
    r: int = _f(16, "LoRA rank")
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r)")
    dropout: float = _f(0.0, "LoRA dropout")
    target_modules: list[str] = _f(  # noqa: RUF009
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        help="modules that get adapters (the language model's attention and MLP projections)",
    )
    load_in_4bit: bool | None = _f(None, "QLoRA: load the base in 4 bit (null: yes on a GPU, no on CPU)")
    finetune_vision_layers: bool = _f(False, "VLMs: also adapt the vision tower")

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not (0 <= self.dropout < 1):
            raise ConfigError("lora.r and lora.alpha must be >= 1 and lora.dropout in [0, 1)")
        if not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one module")


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/medix", "where checkpoints, the adapter, metrics.jsonl and the chart go")
    backend: str = _f(
        "auto", "auto | unsloth | transformers (auto: Unsloth on an NVIDIA GPU, else transformers)"
    )
    device: str = _f("auto", "auto | cpu | cuda")
    max_steps: int = _f(100, "optimizer steps")
    prompts_per_step: int = _f(
        2, "prompts per optimizer step per device (each sampled num_generations times)"
    )
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step")
    learning_rate: float = _f(1e-5, "peak learning rate (LoRA wants ~1e-5..5e-4; the authors' full FT: 1e-6)")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_ratio: float = _f(0.0, "share of steps with linear warm-up, in [0, 1)")
    lr_scheduler_type: str = _f("constant", "transformers scheduler name: constant, linear, cosine, ...")
    max_grad_norm: float = _f(1.0, "gradient clipping")
    save_steps: int = _f(50, "write a resumable checkpoint every N steps")
    save_total_limit: int = _f(2, "keep at most this many checkpoints")
    seed: int = _f(0, "seed of the data order, the sampling and the LoRA init")
    threads: int = _f(0, "CPU threads for torch (0: torch's default)")
    gradient_checkpointing: bool = _f(False, "trade compute for memory")
    judge_retries: int = _f(3, "on a judge outage, retry a batch's scoring this many times before stopping")
    judge_retry_wait: float = _f(10.0, "seconds between those retries (doubling each time)")
    log_completions: int = _f(0, "print this many sample completions per step (0: none)")
    chart: bool = _f(True, "draw reward_components.png from metrics.jsonl at the end")
    use_vllm: bool = _f(False, "generate rollouts with vLLM (TRL use_vllm; see `medix train --plan`)")
    vllm_mode: str = _f("server", "server (a `trl vllm-serve` process on other GPUs) | colocate (same GPUs)")
    vllm_server_host: str = _f("127.0.0.1", "host of `trl vllm-serve` (vllm_mode=server)")
    vllm_server_port: int = _f(8000, "port of `trl vllm-serve` (vllm_mode=server)")
    vllm_gpu_memory_utilization: float = _f(0.3, "share of each GPU vLLM may take (vllm_mode=colocate)")

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "unsloth", "transformers"):
            raise ConfigError(f"train.backend must be auto, unsloth or transformers, got {self.backend!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.max_steps < 1 or self.prompts_per_step < 1 or self.gradient_accumulation_steps < 1:
            raise ConfigError(
                "train.max_steps, prompts_per_step and gradient_accumulation_steps must be >= 1"
            )
        if self.vllm_mode not in ("server", "colocate"):
            raise ConfigError(f"train.vllm_mode must be server or colocate, got {self.vllm_mode!r}")
        if self.save_steps < 1 or self.learning_rate <= 0 or self.judge_retries < 0:
            raise ConfigError("train.save_steps >= 1, learning_rate > 0 and judge_retries >= 0 are required")


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

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            sub = d[f.name] or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"{f.name}: expected a mapping, got {type(sub).__name__}")
            if f.name == "reward":
                try:
                    kw["reward"] = RewardConfig.from_dict(sub)
                except (TypeError, ValueError) as e:
                    raise ConfigError(f"reward: {e}") from None
            else:
                kw[f.name] = _build(_SECTIONS[f.name], sub, f.name)
        return cls(**kw)


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "algo": AlgoConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
}


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def _to_dict(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--a.b.c=value`` / ``a.b.c=value`` strings (values parsed as YAML) to a nested dict in place."""
    for item in overrides:
        body = item[2:] if item.startswith("--") else item
        if "=" not in body:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        key, _, raw = body.partition("=")
        parts = [p for p in key.split(".") if p]
        if len(parts) < 2:
            raise ConfigError(f"override {item!r}: name a section and a key, e.g. --train.max_steps=10")
        node = d
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(raw)
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run file (or nothing: all defaults), apply overrides, validate."""
    import yaml

    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    apply_overrides(d, overrides or [])
    return RunConfig.from_dict(d)


def _yaml_scalar(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _render(obj: Any, cls: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    for f in fields(cls):
        help_ = f.metadata.get("help", "") if f.metadata else ""
        value = getattr(obj, f.name) if obj is not None else None
        sub_cls = type(value) if is_dataclass(value) else None
        if sub_cls is not None:
            out.append(f"{pad}{f.name}:" + (f"  # {help_}" if help_ else ""))
            _render(value, sub_cls, indent + 1, out)
        else:
            line = f"{pad}{f.name}: {_yaml_scalar(_to_dict(value))}"
            out.append(line + (f"  # {help_}" if help_ else ""))


def render_config(cfg: RunConfig | None = None) -> str:
    """YAML of every option with its (current or default) value and help, as ``--print-config`` shows."""
    cfg = cfg or RunConfig()
    out: list[str] = ["# medix train configuration: every option, its default, and what it does."]
    _render(cfg, RunConfig, 0, out)
    return "\n".join(out) + "\n"


def replace(cfg: Any, **changes: Any) -> Any:
    return dataclasses.replace(cfg, **changes)


def _dataclass_in(tp: Any) -> Any:
    """The dataclass inside an annotation such as ``JudgeConfig | None``, else None."""
    import typing

    if is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if is_dataclass(arg):
            return arg
    return None


def _keys_of(cls: Any, prefix: str, out: list[str], depth: int = 0) -> None:
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: fall back to the declared defaults
        hints = {}
    for f in fields(cls):
        sub = _dataclass_in(hints.get(f.name))
        if sub is None and f.default_factory is not MISSING:  # type: ignore[misc]
            try:
                val = f.default_factory()  # type: ignore[misc]
                sub = type(val) if is_dataclass(val) else None
            except Exception:
                sub = None
        if sub is not None and depth < 3:
            _keys_of(sub, f"{prefix}{f.name}.", out, depth + 1)
        else:
            out.append(prefix + f.name)


def option_keys() -> list[str]:
    """Every dotted option (``train.max_steps``, ``reward.judge.model``, ...), for the command-line parser."""
    out: list[str] = []
    for name, cls in _SECTIONS.items():
        _keys_of(cls, f"{name}.", out)
    _keys_of(RewardConfig, "reward.", out)
    return out


def add_override_options(parser: Any) -> None:
    """Register ``--section.key`` for every option (hidden from --help; --print-config documents them)."""
    import argparse

    for key in option_keys():
        parser.add_argument(
            f"--{key}", dest=f"ov__{key}", default=None, metavar="VALUE", help=argparse.SUPPRESS
        )


def collect_overrides(args: Any) -> list[str]:
    return [f"--{k[4:]}={v}" for k, v in vars(args).items() if k.startswith("ov__") and v is not None]
