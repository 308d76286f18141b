"""`trl.GRPOTrainer` used directly with our reward, as the README's "Use it from Python" shows: one real step
on the CPU with the tiny policy (SmolLM2-135M converted from the test GGUF) and the composite reward with the
real in-process judge and embedder. Without CUDA, TRL 1.15's chunked log-prob kernel is Triton-only, so the
README tells users to call ``medix_r1.train.grpo.install_cpu_logprob()`` first; this checks both halves."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

PROMPT = (
    "Answer with a modality tag, <thinking>...</thinking> and <answer>...</answer>. "
    "Question: what does this chest X-ray show?"
)


def _trainer(tmp_path, gguf_path, minilm_onnx_dir):
    import trl
    from datasets import Dataset
    from medix_r1.rewards import CompositeReward
    from medix_r1.train.convert import gguf_to_checkpoint

    policy = gguf_to_checkpoint(gguf_path)
    reward = CompositeReward(
        {
            "mode": "reference",
            "judge": {"model": str(gguf_path), "n_threads": 2},
            "embed": {"model": str(minilm_onnx_dir)},
        }
    )
    data = Dataset.from_list([{"prompt": PROMPT, "solution": "<X_RAY> Right lower lobe pneumonia"}] * 2)
    args = trl.GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=12,
        learning_rate=1e-5,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = trl.GRPOTrainer(model=str(policy), reward_funcs=reward, args=args, train_dataset=data)
    return trainer, reward


def test_trl_grpo_trainer_with_our_reward_on_cpu(tmp_path, gguf_path, minilm_onnx_dir, monkeypatch):
    import torch
    import trl.trainer.utils as tu

    if torch.cuda.is_available():
        pytest.skip("the CPU log-prob note is about machines without CUDA")
    torch.set_num_threads(2)
    from medix_r1.train import grpo

    # TRL's own kernel, even if an earlier test in this process installed ours (undone afterwards)
    monkeypatch.setattr(tu, "_ChunkedLogProbFunction", grpo.TRL_CHUNKED_LOGPROB or tu._ChunkedLogProbFunction)

    trainer, reward = _trainer(tmp_path / "without", gguf_path, minilm_onnx_dir)
    with pytest.raises(Exception, match="active drivers"):  # TRL's Triton kernel on a CPU
        trainer.train()
    reward.close()

    from medix_r1.train.grpo import install_cpu_logprob

    assert install_cpu_logprob() is True  # what the README says to call first
    trainer, reward = _trainer(tmp_path / "with", gguf_path, minilm_onnx_dir)
    try:
        out = trainer.train()
    finally:
        reward.close()
    assert out.global_step == 1
    logged = {k: v for row in trainer.state.log_history for k, v in row.items()}
    assert "rewards/medix_composite/mean" in logged, sorted(logged)
    assert reward.counters["items"] == 2 and len(reward.last_scores) == 2
