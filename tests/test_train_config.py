"""Run configuration: presets, validation, YAML + dotted overrides, --print-config, the GPU plan, backend
choice and the Unsloth / TRL kwargs (no GPU needed)."""

from __future__ import annotations

import pytest
from medix_r1.cli import main
from medix_r1.train.backends import (
    Backend,
    grpo_args,
    select_backend,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
)
from medix_r1.train.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    load_config,
    option_keys,
    render_config,
)
from medix_r1.train.plan import accelerate_config, make_plan


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("grpo", {"beta": 0.01, "loss_type": "grpo", "scale_rewards": "group", "dynamic_sampling": False}),
        (
            "dapo",
            {
                "beta": 0.0,
                "epsilon": 0.2,
                "epsilon_high": 0.28,
                "loss_type": "dapo",
                "dynamic_sampling": True,
            },
        ),
        ("gspo", {"importance_sampling_level": "sequence", "beta": 0.0}),
        ("dr_grpo", {"scale_rewards": "none", "loss_type": "dr_grpo"}),
    ],
)
def test_algorithm_presets(name, expect):
    cfg = load_config(None, [f"--algo.name={name}"])
    for k, v in expect.items():
        assert getattr(cfg.algo, k) == v, k


def test_explicit_value_beats_preset():
    cfg = load_config(None, ["--algo.name=dapo", "--algo.beta=0.05", "--algo.dynamic_sampling=false"])
    assert cfg.algo.beta == 0.05 and cfg.algo.dynamic_sampling is False and cfg.algo.epsilon_high == 0.28


def test_yaml_and_overrides(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("model:\n  path: /m.gguf\nalgo:\n  name: gspo\ntrain:\n  max_steps: 7\n  output_dir: out\n")
    cfg = load_config(y, ["--train.max_steps=3", "--lora.target_modules=[q_proj, v_proj]"])
    assert cfg.model.path == "/m.gguf" and cfg.algo.name == "gspo"
    assert cfg.train.max_steps == 3 and cfg.lora.target_modules == ["q_proj", "v_proj"]


def test_nested_override_creates_sections():
    d = apply_overrides({}, ["--reward.judge.model=j.gguf", "reward.embed.threshold=0.7"])
    assert d == {"reward": {"judge": {"model": "j.gguf"}, "embed": {"threshold": 0.7}}}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["--algo.name=ppo"], "algo.name"),
        (["--algo.num_generations=1"], "num_generations"),
        (["--train.backend=tpu"], "train.backend"),
        (["--train.nope=1"], "unknown key"),
        (["--nosection.x=1"], "unknown section"),
        (["--data.few_shot=5"], "few_shot"),
        (["--algo.epsilon=0.3", "--algo.epsilon_high=0.2"], "epsilon_high"),
    ],
)
def test_validation_names_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_print_config_lists_every_option_with_help(capsys):
    text = render_config()
    for key in ("model.path", "algo.epsilon_high", "lora.r", "train.save_steps", "data.skip_bad"):
        _section, name = key.split(".")
        assert f"{name}:" in text
    assert text.count("#") > 40  # every line carries its help
    assert main(["train", "--print-config", "--algo.name=dapo"]) == 0
    out = capsys.readouterr().out
    assert "epsilon_high: 0.28" in out and "reward" in out


def test_override_options_are_registered():
    keys = option_keys()
    assert "train.max_steps" in keys and "reward.judge.model" in keys and "reward.embed.model" in keys


def test_cli_rejects_bad_override(capsys):
    assert main(["train", "--print-config", "--algo.name=ppo"]) == 2
    assert "algo.name" in capsys.readouterr().err


def test_train_without_config_is_a_user_error(capsys):
    assert main(["train"]) == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.parametrize("n", [0, 1, 2, 8])
def test_plan_for_gpu_counts(n):
    cfg = load_config(None, ["--model.path=/models/qwen3-vl-2b", "--reward.judge.model=/models/judge"])
    plan = make_plan(cfg, "run.yaml", n)
    assert f"plan for {n} GPU" in plan
    if n == 0:
        assert "CPU" in plan and "medix train --config run.yaml" in plan and "vllm" not in plan
    elif n == 1:
        assert "Unsloth" in plan and "medix judge serve" in plan
    elif n == 2:
        assert "vllm_mode=colocate" in plan and "CUDA_VISIBLE_DEVICES=1 vllm serve /models/judge" in plan
    else:
        assert (
            "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5 accelerate launch --config_file accelerate_zero3_6.yaml" in plan
        )
        assert "CUDA_VISIBLE_DEVICES=6 trl vllm-serve --model /models/qwen3-vl-2b" in plan
        assert "CUDA_VISIBLE_DEVICES=7 vllm serve /models/judge" in plan
        assert "zero_stage: 3" in plan and "num_processes: 6" in plan
        assert "easyr1.py:compute_score" in plan


def test_plan_cli_injected_gpu_count(capsys):
    assert main(["train", "--plan", "--gpus", "8", "--strategy", "fsdp"]) == 0
    out = capsys.readouterr().out
    assert "distributed_type: FSDP" in out and "accelerate_fsdp_6.yaml" in out


def test_accelerate_config_zero3():
    assert "zero_stage: 3" in accelerate_config(4) and "num_processes: 4" in accelerate_config(4)


def test_backend_selection():
    cfg = RunConfig()
    b = select_backend(cfg, cuda=False, unsloth=False)
    assert (b.name, b.device, b.load_in_4bit) == ("transformers", "cpu", False) and "CPU" in b.notice
    b = select_backend(cfg, cuda=True, unsloth=True)
    assert (b.name, b.device, b.load_in_4bit) == ("unsloth", "cuda", True) and not b.notice
    b = select_backend(cfg, cuda=True, unsloth=False)
    assert b.name == "transformers" and b.load_in_4bit and "unsloth" in b.notice
    with pytest.raises(RuntimeError, match="NVIDIA GPU"):
        select_backend(load_config(None, ["--train.backend=unsloth"]), cuda=False, unsloth=True)
    with pytest.raises(RuntimeError, match="GPU"):
        select_backend(load_config(None, ["--lora.load_in_4bit=true"]), cuda=False, unsloth=False)


def test_unsloth_kwargs_text_and_vision():
    cfg = load_config(
        None, ["--lora.r=8", "--lora.alpha=16", "--train.seed=3", "--model.max_seq_length=4096"]
    )
    gpu = Backend("unsloth", "cuda", True)
    kw = unsloth_load_kwargs(cfg, "/m", gpu, vision=False)
    assert kw["model_name"] == "/m" and kw["load_in_4bit"] is True and kw["max_seq_length"] == 4096
    assert kw["fast_inference"] is False and kw["max_lora_rank"] == 8 and kw["local_files_only"] is True
    peft = unsloth_peft_kwargs(cfg, vision=False)
    assert peft["r"] == 8 and peft["lora_alpha"] == 16 and peft["random_state"] == 3
    assert "q_proj" in peft["target_modules"] and "finetune_vision_layers" not in peft
    vkw = unsloth_load_kwargs(cfg, "/vlm", gpu, vision=True)
    assert "fast_inference" not in vkw and vkw["load_in_4bit"] is True
    vpeft = unsloth_peft_kwargs(cfg, vision=True)
    assert vpeft["finetune_vision_layers"] is False and vpeft["finetune_language_layers"] is True
    assert "target_modules" not in vpeft


@pytest.mark.parametrize("algo", ["grpo", "dapo", "gspo", "dr_grpo"])
def test_grpo_args_follow_the_algorithm(algo):
    cfg = load_config(None, [f"--algo.name={algo}", "--train.prompts_per_step=3", "--algo.num_generations=4"])
    kw = grpo_args(cfg, Backend("transformers", "cpu", False))
    assert kw["per_device_train_batch_size"] == 12 and kw["num_generations"] == 4
    assert kw["loss_type"] == cfg.algo.loss_type and kw["beta"] == cfg.algo.beta
    assert kw["importance_sampling_level"] == cfg.algo.importance_sampling_level
    assert kw["use_cpu"] is True and kw["bf16"] is False and kw["use_vllm"] is False
    from trl import GRPOConfig

    GRPOConfig(**kw)  # TRL accepts every key


def test_grpo_args_gpu_vllm():
    cfg = load_config(
        None, ["--train.use_vllm=true", "--train.vllm_mode=server", "--train.vllm_server_port=8123"]
    )
    kw = grpo_args(cfg, Backend("unsloth", "cuda", True))
    assert kw["bf16"] is True and kw["use_cpu"] is False
    assert kw["use_vllm"] and kw["vllm_mode"] == "server" and kw["vllm_server_port"] == 8123


def test_example_run_files_load():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "examples").glob("train_*.yaml"))
    assert files
    for f in files:
        load_config(f)
