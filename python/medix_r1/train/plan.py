"""``medix train --plan``: the exact commands to run a config on the GPUs this machine has (or a given count).

0 GPUs: the CPU fallback. 1 GPU: Unsloth QLoRA, judge in-process (llama.cpp) or on `medix judge serve`.
2 GPUs: training with vLLM colocated on GPU 0, the judge on `vllm serve` on GPU 1. 3+ GPUs: one GPU for
the judge, one for `trl vllm-serve` (rollouts), the rest train under accelerate + DeepSpeed ZeRO-3 (or FSDP),
with the same run in its CPU form (``torchrun``, gloo, no vLLM) to rehearse the mechanics on any machine
first.
The EasyR1 route is described for 8-GPU full fine-tuning as the authors did it.
"""

from __future__ import annotations

import os
import shlex

from medix_r1.train.config import RunConfig

__all__ = ["accelerate_config", "count_gpus", "launch_command", "make_plan"]


def count_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def accelerate_config(n_processes: int, strategy: str = "zero3") -> str:
    """An accelerate config file for ``n_processes`` GPUs with DeepSpeed ZeRO-3 or FSDP."""
    head = (
        "compute_environment: LOCAL_MACHINE\nmachine_rank: 0\nnum_machines: 1\n"
        f"num_processes: {n_processes}\n"
    )
    if strategy == "fsdp":
        return head + (
            "distributed_type: FSDP\nmixed_precision: bf16\nfsdp_config:\n  fsdp_version: 2\n"
            "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n  fsdp_state_dict_type: SHARDED_STATE_DICT\n"
            "  fsdp_cpu_ram_efficient_loading: true\n  fsdp_reshard_after_forward: true\n"
        )
    return head + (
        "distributed_type: DEEPSPEED\nmixed_precision: bf16\ndeepspeed_config:\n  zero_stage: 3\n"
        "  zero3_init_flag: true\n  zero3_save_16bit_model: true\n  offload_optimizer_device: none\n"
        "  offload_param_device: none\n"
    )


def launch_command(
    n_processes: int,
    cfg_arg: str,
    overrides: str = "",
    *,
    config_file: str | None = None,
    gpu_ids: str | None = None,
) -> str:
    """``medix train`` on ``n_processes`` processes: ``accelerate launch`` on the GPUs ``gpu_ids`` with an
    accelerate config file, or without ``config_file`` the CPU form, torch's own launcher (``torchrun``,
    gloo), which needs no GPU."""
    if config_file is not None:
        env = f"CUDA_VISIBLE_DEVICES={gpu_ids} " if gpu_ids else ""
        head = f"{env}accelerate launch --config_file {shlex.quote(config_file)}"
    else:
        head = f"torchrun --nproc-per-node {n_processes}"
    return f"{head} -m medix_r1.cli train {cfg_arg}" + (f" {overrides}" if overrides else "")


def _judge_model(cfg: RunConfig) -> str:
    """The judge's file (in-process) or its model id on the server (``vllm serve <id>``)."""
    judge = cfg.reward.judge
    model = judge and (judge.model or judge.name)
    # Expanded: a quoted "~/..." would reach the program unexpanded.
    return os.path.expanduser(str(model)) if model else "/models/Qwen3-4B-Instruct-2507"


def _remote_judge(name: str) -> str:
    """Overrides that point the reward at a judge server on port 8001 instead of an in-process file."""
    return (
        "--reward.judge.model=null --reward.judge.url=http://127.0.0.1:8001/v1 "
        f"--reward.judge.name={shlex.quote(name)}"
    )


def make_plan(cfg: RunConfig, config_path: str | None, n_gpus: int, strategy: str = "zero3") -> str:
    cfg_arg = f"--config {shlex.quote(config_path)}" if config_path else "--config run.yaml"
    policy = os.path.expanduser(cfg.model.path) if cfg.model.path else "/models/policy"
    judge = _judge_model(cfg)
    judge_is_gguf = judge.endswith(".gguf")
    out: list[str] = [f"# medix train plan for {n_gpus} GPU(s): {cfg.algo.name}, policy {policy}"]
    if n_gpus == 0:
        out += [
            "# No NVIDIA GPU: training falls back to transformers + PEFT LoRA on the CPU (small models "
            "only).",
            f"medix train {cfg_arg}",
        ]
    elif n_gpus == 1:
        out += [
            "# One GPU: Unsloth 4-bit QLoRA + TRL GRPOTrainer (pip install 'medix-r1[train,gpu]').",
            "# Judge in-process: a quantized GGUF through llama.cpp shares the GPU "
            "(reward.judge.model=<file>.gguf,",
            "# reward.judge.n_gpu_layers=-1). Or serve it once and point the reward at it:",
            f"#   medix judge serve --model {shlex.quote(judge)} --port 8001 --name judge &",
            f"#   medix train {cfg_arg} {_remote_judge('judge')}",
            f"medix train {cfg_arg}" + ("" if judge_is_gguf else f" {_remote_judge(judge)}"),
        ]
    elif n_gpus == 2:
        out += [
            "# GPU 1: the judge on vLLM (OpenAI-compatible).",
            f"CUDA_VISIBLE_DEVICES=1 vllm serve {shlex.quote(judge)} --port 8001 --max-model-len 4096 "
            "--gpu-memory-utilization 0.9 &",
            "# GPU 0: training, with vLLM rollouts colocated in the same process.",
            f"CUDA_VISIBLE_DEVICES=0 medix train {cfg_arg} --train.use_vllm=true --train.vllm_mode=colocate "
            f"--train.vllm_gpu_memory_utilization=0.3 {_remote_judge(judge)}",
        ]
    else:
        n_train = n_gpus - 2
        train_ids = ",".join(str(i) for i in range(n_train))
        rollout_gpu, judge_gpu = n_gpus - 2, n_gpus - 1
        acc = f"accelerate_{strategy}_{n_train}.yaml"
        out += [
            f"# GPUs {train_ids}: training ({n_train} processes, "
            f"{'DeepSpeed ZeRO-3' if strategy == 'zero3' else 'FSDP'}),"
            f" GPU {rollout_gpu}: rollouts on `trl vllm-serve`, GPU {judge_gpu}: the judge on `vllm serve`.",
            f"cat > {acc} <<'EOF'",
            accelerate_config(n_train, strategy).rstrip(),
            "EOF",
            f"CUDA_VISIBLE_DEVICES={judge_gpu} vllm serve {shlex.quote(judge)} --port 8001 "
            "--max-model-len 4096 &",
            f"CUDA_VISIBLE_DEVICES={rollout_gpu} trl vllm-serve --model {shlex.quote(policy)} --port 8000 &",
            launch_command(
                n_train,
                cfg_arg,
                "--train.backend=transformers --train.use_vllm=true --train.vllm_mode=server "
                f"--train.vllm_server_port=8000 {_remote_judge(judge)}",
                config_file=acc,
                gpu_ids=train_ids,
            ),
            "# Full fine-tuning instead of LoRA: add --lora.enabled=false (ZeRO-3 shards the weights "
            "and optimizer).",
            "# Rehearse the same launch on the CPU first (gloo, no vLLM; small models only, a few steps):",
            f"#   medix judge serve --model {shlex.quote(judge) if judge_is_gguf else '<judge>.gguf'} "
            "--port 8001 --name judge &",
            "#   "
            + launch_command(
                n_train,
                cfg_arg,
                "--train.backend=transformers --train.device=cpu --train.max_steps=2 "
                + _remote_judge("judge"),
            ),
        ]
    if n_gpus >= 1:
        out += [
            "",
            "# EasyR1 route (the authors' 8-GPU recipe; verl workers, full fine-tuning): in the EasyR1 "
            "config set",
            "#   worker.reward.reward_function=<site-packages>/medix_r1/integrations/easyr1.py:compute_score",
            "#   algorithm.adv_estimator=grpo, worker.rollout.n=5, data.max_response_length=4096,",
            "#   worker.actor.optim.lr=1.0e-6, algorithm.kl_coef=1.0e-2 (DAPO: disable_kl, clip "
            "0.2/0.28, online filter)",
            "# and serve the judge as above; see medix_r1/integrations/easyr1.py for how it reads the "
            "judge settings.",
        ]
    return "\n".join(out) + "\n"
