"""URL credentials (``user:password@`` and ``?api_key=`` / ``token`` / ... query values) in a judge URL never
reach a file in the run folder, the printed configuration or an error line: every place that renders a
training config or a URL redacts them (``medix_r1.llm.remote.redact_url``). With the real `medix judge
serve` on the test GGUF and a one-step run of the SmolLM2 policy converted from it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SECRETS = ("SECRET-Q1", "SECRET-Q2", "hunter2-SECRET")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def _medix(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "medix_r1.cli", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _leaks(*texts: str, folder: Path | None = None) -> list[str]:
    found = [s for t in texts for s in SECRETS if s in t]
    if folder is not None:
        for p in folder.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                found += [f"{p}: {s}" for s in SECRETS if s.encode() in data]
    return found


def test_redaction_helpers():
    from medix_r1.config import redacted, short
    from medix_r1.llm.remote import normalise_base_url, redact_urls

    text = "got 'http://bob:hunter2-SECRET@h:8/v1?api_key=SECRET-Q1&x=1', see http://ok/v1?x=2"
    assert redact_urls(text) == "got 'http://h:8/v1?api_key=REDACTED&x=1', see http://ok/v1?x=2"
    assert redacted({"a": ["https://h/v1?token=SECRET-Q2"], "b": 1}) == {
        "a": ["https://h/v1?token=REDACTED"],
        "b": 1,
    }
    assert not _leaks(short("http://u:hunter2-SECRET@h/v1"))
    with pytest.raises(Exception) as e:
        normalise_base_url("http://bob:hunter2-SECRET@h/v1")
    assert not _leaks(str(e.value)) and "api_key_env" in str(e.value)
    with pytest.raises(Exception) as e:
        normalise_base_url("bob:hunter2-SECRET@h/v1")
    assert not _leaks(str(e.value))


def test_print_config_and_config_errors_redact_a_url_secret(tmp_path):
    url = "http://bob:hunter2-SECRET@127.0.0.1:9/v1?api_key=SECRET-Q1&token=SECRET-Q2"
    r = _medix("train", "--print-config", f"--reward.judge.url={url}", "--reward.judge.name=m", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "url: http://127.0.0.1:9/v1?api_key=REDACTED&token=REDACTED" in r.stdout
    assert not _leaks(r.stdout, r.stderr)
    # a config error quoting the value (a URL given where a number goes)
    r = _medix("train", "--print-config", f"--reward.judge.timeout={url}", timeout=120)
    assert r.returncode == 2 and "reward.judge.timeout" in r.stderr
    assert not _leaks(r.stdout, r.stderr), r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_judge_url_secret_never_reaches_the_run_folder(gguf_path, tmp_path):
    """A one-step run against a served judge whose URL carries query secrets: no file of the run folder
    (run_config.yaml, metrics, checkpoint, adapter) and no printed line holds them; a URL with
    ``user:password@`` is refused with an error line that does not repeat the password."""
    from medix_r1.train.data import demo_dataset_path

    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(demo_dataset_path().read_text().splitlines(keepends=True)[:4]))
    port = _free_port()
    cmd = [sys.executable, "-m", "medix_r1.cli", "judge", "serve", "--model", str(gguf_path)]
    cmd += ["--port", str(port), "--n-ctx", "1024", "--n-threads", "1", "--name", "judge"]
    server = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "judge server did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    if json.load(resp)["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.2)
        base = [
            f"--model.path={gguf_path}",
            f"--data.path={data}",
            "--data.few_shot=0",
            "--algo.num_generations=2",
            "--algo.max_completion_length=8",
            "--train.max_steps=1",
            "--train.prompts_per_step=1",
            "--train.save_steps=1",
            "--train.threads=1",
            "--train.device=cpu",
            "--reward.judge.name=judge",
        ]
        run_file = tmp_path / "run.yaml"
        run_file.write_text("reward:\n  mode: reference\n")
        out = tmp_path / "run"
        url = f"http://127.0.0.1:{port}/v1?api_key=SECRET-Q1&token=SECRET-Q2"
        r = _medix(
            "train",
            "--config",
            str(run_file),
            *base,
            f"--train.output_dir={out}",
            f"--reward.judge.url={url}",
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert (out / "checkpoint-1" / "trainer_state.json").is_file()
        assert "api_key=REDACTED&token=REDACTED" in (out / "run_config.yaml").read_text()
        assert not _leaks(r.stdout, r.stderr, folder=out)

        out2 = tmp_path / "run2"
        url2 = f"http://bob:hunter2-SECRET@127.0.0.1:{port}/v1"
        r = _medix(
            "train",
            "--config",
            str(run_file),
            *base,
            f"--train.output_dir={out2}",
            f"--reward.judge.url={url2}",
        )
        assert r.returncode == 2, r.stderr[-3000:]
        [line] = [x for x in r.stderr.splitlines() if x.startswith("medix: error:")]
        assert "api_key_env" in line
        assert not _leaks(r.stdout, r.stderr, folder=out2)
    finally:
        server.terminate()
        server.wait(timeout=30)
