"""One config style (issue 21 item 3): every config dataclass on the one loader, every error of a file
reported at once (key, value, allowed; the closest known key for a typo), the trainer's knobs typed, and a
`trl:` section checked against GRPOConfig's own fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from medix_r1.config import build
from medix_r1.errors import ConfigError, UserError
from medix_r1.judge import JudgeConfig
from medix_r1.judge.validate import Thresholds
from medix_r1.rewards.composite import RewardConfig
from medix_r1.train.config import load_config

THREE_BAD = """\
train:
  max_steps: many
  learnin_rate: 0.001
lora:
  r: 0
"""


def test_three_bad_keys_are_reported_together(tmp_path: Path):
    f = tmp_path / "run.yaml"
    f.write_text(THREE_BAD)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert msg.startswith("3 errors")
    assert "train.max_steps: got 'many'; allowed: an integer" in msg
    assert "train.learnin_rate: unknown key; did you mean learning_rate?" in msg
    assert "lora.r: got 0; allowed: >= 1" in msg
    assert [x.key for x in e.value.errors] == ["train.max_steps", "train.learnin_rate", "lora.r"]
    r = subprocess.run(
        [sys.executable, "-m", "medix_r1.cli", "train", "--config", str(f), "--plan"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert all(k in r.stderr for k in ("train.max_steps", "train.learnin_rate", "lora.r")), r.stderr


def test_unknown_section_names_the_closest():
    with pytest.raises(ConfigError, match="rewad: unknown section; did you mean reward"):
        load_config(None, ["--rewad.mode=strict"])


def test_reward_judge_and_thresholds_use_the_loader():
    with pytest.raises(ConfigError) as e:
        RewardConfig.from_dict(
            {"mode": "loose", "llm_weight": -1, "judge": {"url": "u", "name": "n", "cache_size": -1}}
        )
    keys = [x.key for x in e.value.errors]
    assert keys == ["reward.mode", "reward.llm_weight", "reward.judge.cache_size"]
    assert "one of strict, reference" in str(e.value)
    with pytest.raises(ConfigError, match="judge.max_retries: got -1; allowed: >= 0"):
        build(JudgeConfig, {"url": "u", "name": "n", "max_retries": -1}, "judge")
    with pytest.raises(UserError, match="--min-auroc: got 1.5; allowed: >= 0 and <= 1"):
        Thresholds(min_auroc=1.5)
    assert RewardConfig.from_dict({"weights": "llm=1,embed=0"}).llm_weight == 1.0
