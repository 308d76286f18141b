"""The supervised judge (medix_r1.judge.supervised): the local GGUF judge in a worker process, killed with
real signals. Same verdicts as in-process, bit for bit; a worker killed mid-batch is replaced and nothing
judged is lost; a judge that keeps dying leaves pairs unscorable with the signal named (a JudgeFailedError
for the composite reward); and (slow) `medix train` survives a SIGSEGV of its judge, or stops with a
checkpoint and the resume command when the judge keeps dying, and `--resume` then finishes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from medix_r1.errors import BackendError, JudgeFailedError, MissingModelError
from medix_r1.judge import JudgeConfig, LocalJudge, VerdictCache
from medix_r1.judge.supervised import CRASH_ENV, PID_FILE_ENV, SupervisedJudge, describe_exit

PAIRS = [
    ("pneumonia in the right lower lobe", "Right lower lobe pneumonia"),
    ("no acute abnormality", "Right lower lobe pneumonia"),
    ("a benign lesion", "Osteosarcoma of the distal femur"),
    ("osteosarcoma most likely", "Osteosarcoma of the distal femur"),
    ("normal study", "Pneumothorax"),
    ("collapsed lung on the left", "Pneumothorax"),
]


@pytest.fixture(scope="module")
def in_process(gguf_path):
    j = LocalJudge(gguf_path, n_threads=1, cache_size=0)
    yield [(v.match, v.p_yes) for v in j.judge(PAIRS)]
    j.close()


def _config(gguf_path, **kw) -> JudgeConfig:
    return JudgeConfig(model=str(gguf_path), n_threads=1, **kw)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def test_verdicts_are_bit_identical_to_the_in_process_judge(gguf_path, in_process):
    j = SupervisedJudge(_config(gguf_path))
    try:
        got = j.judge(PAIRS)
        assert [(v.match, v.p_yes) for v in got] == in_process  # the same floats, not approximately
        assert all(v.source == "judge" for v in got)
        assert [v.source for v in j.judge(PAIRS)] == ["cache"] * len(PAIRS)
        assert j.p_yes(*PAIRS[2]) == in_process[2][1]
        assert j.name.startswith("llama.cpp:") and j.starts == 1 and not j.deaths
    finally:
        j.close()


def test_a_worker_killed_mid_batch_is_replaced_and_nothing_judged_is_lost(
    gguf_path, in_process, tmp_path, monkeypatch
):
    monkeypatch.setenv(PID_FILE_ENV, str(tmp_path / "judge.pid"))
    j = SupervisedJudge(_config(gguf_path))
    first = j.pid
    assert first is not None and int((tmp_path / "judge.pid").read_text()) == first
    result: list = []
    t = threading.Thread(target=lambda: result.append(j.judge(PAIRS)))
    try:
        t.start()
        deadline = time.monotonic() + 300
        while len(j.cache) == 0:  # the first verdict is in: kill the worker in the middle of the batch
            assert t.is_alive() and time.monotonic() < deadline
            time.sleep(0.005)
        done_before = len(j.cache)
        os.kill(first, signal.SIGSEGV)
        t.join(600)
        assert not t.is_alive()
        assert [(v.match, v.p_yes) for v in result[0]] == in_process
        if done_before < len(PAIRS):  # the kill landed before the batch ended
            assert len(j.deaths) == 1 and "SIGSEGV (signal 11)" in j.deaths[0] and j.starts == 2
            assert j.model_calls == len(PAIRS)  # verdicts already sent were kept, not asked again
        assert _gone(first) and j.pid != first
        assert int((tmp_path / "judge.pid").read_text()) == j.pid
        # Killed between batches: the next batch notices, starts a fresh worker and judges.
        second = j.pid
        assert second is not None
        os.kill(second, signal.SIGSEGV)
        while not _gone(second):
            time.sleep(0.01)
        j.cache = VerdictCache(0)  # asked again, not answered from the cache
        assert [(v.match, v.p_yes) for v in j.judge(PAIRS[:2])] == in_process[:2]
        assert f"judge process {second} died" in j.deaths[-1] and "SIGSEGV" in j.deaths[-1]
    finally:
        j.close()


def test_a_judge_that_keeps_dying_leaves_pairs_unscorable_with_the_signal(gguf_path, monkeypatch):
    from medix_r1.rewards import CompositeReward, RewardConfig

    monkeypatch.setenv(CRASH_ENV, "request")  # every worker kills itself with SIGSEGV on a request
    r = CompositeReward(RewardConfig(mode="reference", judge=_config(gguf_path)))
    judge = r.judge
    assert isinstance(judge, SupervisedJudge)
    try:
        verdicts = judge.judge(PAIRS[:3])
        assert [v.match for v in verdicts] == [None] * 3
        assert all("died while judging: SIGSEGV (signal 11)" in (v.error or "") for v in verdicts)
        assert judge.starts == 1 + judge.respawns and len(judge.deaths) == judge.starts
        with pytest.raises(JudgeFailedError, match="SIGSEGV"):
            r.score(["pneumonia"], ["<X_RAY> Pneumothorax"])
    finally:
        r.close()


def test_a_judge_that_cannot_start_is_a_clear_error(gguf_path, tmp_path, monkeypatch):
    with pytest.raises(MissingModelError, match="no such file"):
        SupervisedJudge(_config(tmp_path / "absent.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(BackendError, match=r"bad\.gguf"):  # the canary or the loader names the file
        SupervisedJudge(_config(bad))
    monkeypatch.setenv(CRASH_ENV, "start")
    with pytest.raises(BackendError, match="died while loading the model: SIGSEGV"):
        SupervisedJudge(_config(gguf_path))


def test_exit_descriptions():
    assert describe_exit(-11) == "SIGSEGV (signal 11)"
    assert describe_exit(-6) == "SIGABRT (signal 6)"
    assert "OOM killer" in describe_exit(-9)
    assert describe_exit(3) == "exit status 3"


def test_the_worker_ends_with_its_supervisor(gguf_path):
    script = (
        "import os, signal, sys\n"
        "from medix_r1.judge import JudgeConfig\n"
        "from medix_r1.judge.supervised import SupervisedJudge\n"
        f"j = SupervisedJudge(JudgeConfig(model={str(gguf_path)!r}, n_threads=1))\n"
        "print(j.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL
    pid = int(p.stdout.split()[0])
    deadline = time.monotonic() + 30
    while not _gone(pid):  # end-of-file on its socket: it exits instead of lingering as an orphan
        assert time.monotonic() < deadline, "the judge worker outlived its supervisor"
        time.sleep(0.1)


# -- slow: `medix train` with the tiny models, the judge killed with real signals ---------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from medix_r1.train.data import demo_dataset_path

    p = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    p.write_text("".join(demo_dataset_path().read_text().splitlines(keepends=True)[:8]))
    return p


def _run_yaml(tmp_path: Path, gguf_path, data, out: Path) -> Path:
    import yaml

    cfg = {
        "model": {"path": str(gguf_path)},
        "data": {"path": str(data)},
        "algo": {"num_generations": 2, "max_completion_length": 8, "beta": 0.0},
        "train": {
            "output_dir": str(out),
            "max_steps": 4,
            "prompts_per_step": 1,
            "save_steps": 1,
            "save_total_limit": 10,
            "threads": 2,
            "device": "cpu",
            "judge_retries": 1,
            "judge_retry_wait": 0.1,
        },
        # reference mode: nearly every short completion is an answer the judge is asked about
        "reward": {"mode": "reference", "judge": {"model": str(gguf_path), "n_threads": 1}},
    }
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _train(run_yaml: Path, pid_file: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, PID_FILE_ENV: str(pid_file), "PYTHONUNBUFFERED": "1"}
    env.pop(CRASH_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", "medix_r1.cli", "train", "--config", str(run_yaml), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _wait_for(path: Path, proc: subprocess.Popen, what: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"training exited before {what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_train_survives_a_judge_segfault(gguf_path, tiny_data, tmp_path):
    out, pid_file = tmp_path / "run", tmp_path / "judge.pid"
    proc = _train(_run_yaml(tmp_path, gguf_path, tiny_data, out), pid_file)
    try:
        _wait_for(out / "checkpoint-1" / "trainer_state.json", proc, "the first checkpoint")
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGSEGV)  # mid-run: steps 2-4 still need the judge
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"judge process {killed} died" in stderr and "SIGSEGV (signal 11)" in stderr
    assert "starting a fresh judge process" in stderr
    assert int(pid_file.read_text()) != killed and _gone(killed)
    assert _steps(out) == [1, 2, 3, 4]
    assert (out / "checkpoint-4" / "trainer_state.json").is_file() and "4 steps done" in stdout


@pytest.mark.slow
def test_train_stops_with_a_checkpoint_when_the_judge_keeps_dying_and_resumes(gguf_path, tiny_data, tmp_path):
    out, pid_file = tmp_path / "run", tmp_path / "judge.pid"
    run_yaml = _run_yaml(tmp_path, gguf_path, tiny_data, out)
    proc = _train(run_yaml, pid_file)
    killed: set[int] = set()

    def keep_killing() -> None:  # every judge process started after the first checkpoint dies at once
        while proc.poll() is None:
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                pid = 0
            if pid and pid not in killed:
                killed.add(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSEGV)
            time.sleep(0.01)

    killer = threading.Thread(target=keep_killing, daemon=True)
    try:
        _wait_for(out / "checkpoint-1" / "trainer_state.json", proc, "the first checkpoint")
        killer.start()
        _, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    killer.join(10)
    assert proc.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("medix: error:")]
    assert len(errors) == 1, stderr[-3000:]  # one line says what happened and what to do
    err = errors[0]
    assert "the judge failed 2 times in a row" in err and "SIGSEGV (signal 11)" in err
    assert f"medix train --config {run_yaml} --resume" in err
    assert "Traceback" not in stderr
    assert len(killed) >= 3  # the first worker and fresh ones, each killed
    ck = int(err.split("checkpoint-")[1].split(";")[0].split()[0])
    assert (out / f"checkpoint-{ck}" / "trainer_state.json").is_file() and ck < 4
    done = _steps(out)
    assert done == list(range(1, ck + 1))  # nothing computed before the stop was lost

    resumed = _train(run_yaml, pid_file, "--resume")
    _, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stderr[-3000:]
    assert _steps(out) == [1, 2, 3, 4]
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_reference_rule_in_the_worker_uses_the_users_prompt_template(gguf_path, tmp_path):
    """Reference mode in the supervised worker asks with the template ``reference_prompt`` names, exactly as
    the in-process judge does (same verdicts and P(YES)); a bad template fails in the parent."""
    from medix_r1.errors import ConfigError
    from medix_r1.judge import make_judge

    tpl = tmp_path / "prompt.txt"
    tpl.write_text("Same meaning? Say YES or NO.\nA: {predicted}\nB: {ground_truth}\n", encoding="utf-8")
    cfg = _config(gguf_path)
    cfg.reference_prompt = str(tpl)
    pairs = [("Pneumonia", "pneumonia"), ("Fracture", "Pneumothorax")]
    inproc = make_judge(cfg, rule="reference")
    want = inproc.judge(pairs)
    sup = SupervisedJudge(cfg, rule="reference")
    try:
        got = sup.judge(pairs)
    finally:
        sup.close()
    assert [(v.match, v.p_yes) for v in got] == [(v.match, v.p_yes) for v in want]
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholders here", encoding="utf-8")
    cfg.reference_prompt = str(bad)
    with pytest.raises(ConfigError, match=r"bad\.txt"):
        SupervisedJudge(cfg, rule="reference")


def test_the_worker_sleeps_between_batches_unless_the_user_chose(monkeypatch, tmp_path):
    """The judge worker's OpenMP threads wait PASSIVE (its caller trains between batches); a user's
    OMP_WAIT_POLICY is kept."""
    from medix_r1.judge.core import JudgeConfig
    from medix_r1.judge.supervised import worker_env

    cfg = JudgeConfig(model=str(tmp_path / "j.gguf"))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert worker_env(cfg)["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert worker_env(cfg)["OMP_WAIT_POLICY"] == "ACTIVE"
