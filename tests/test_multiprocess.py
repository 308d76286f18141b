"""Training under torch's launcher, `torchrun --nproc-per-node 2` (gloo on the CPU), with real parts: the
SmolLM2-135M policy converted from the test GGUF, the real GGUF judge (in-process, or one `medix judge serve`
shared by both processes) and the real ONNX embedder.

- the `--plan` CPU rehearsal command, run as printed (GRPO, the judge served once for both processes);
- equivalence: each process's advantages are its slice of the Rust group advantages of the gathered batch,
  for a group size that divides the per-process batch (DAPO run) and one that does not (Dr. GRPO run, 3 rows
  per process, groups of 2); the gathered rewards are re-scored here by the single-process reward;
- DAPO lockstep: rewards rigged so only process 1 sees a zero-variance group; both processes drop the same
  group and run the same two refill rounds (a timeout, never a hang);
- GSPO killed (the whole process group) after its first checkpoint, then `--resume`d.
- a failure on one process only (a custom component raising on rank 1, the embedder raising there, the judge
  failing there): every process stops with the same error naming the process (timeouts, never a hang), with
  step 1's checkpoint, metrics and logged completions intact.

The accelerate-config parse checks (DeepSpeed ZeRO-3, FSDP) and the refusal of `accelerate launch --cpu`
(which starts one process) need no model and are fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
TIMEOUT = 300  # per launch; a hang fails the test instead of blocking CI


def _torchrun(*args: str) -> list[str]:
    """``torchrun ARGS`` (as ``python -m torch.distributed.run``), ``--standalone``: a free rendezvous port,
    so runs side by side do not collide on torchrun's default port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", *args]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from medix_r1.train.data import demo_dataset_path

    p = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    p.write_text("".join(demo_dataset_path().read_text().splitlines(keepends=True)[:8]))
    return p


def _common(gguf_path, minilm_onnx_dir, data, out, algo) -> list[str]:
    return [
        f"--model.path={gguf_path}",
        f"--data.path={data}",
        "--data.few_shot=0",
        f"--algo.name={algo}",
        "--algo.num_generations=2",
        "--algo.max_completion_length=8",
        f"--train.output_dir={out}",
        "--train.max_steps=2",
        "--train.prompts_per_step=1",
        "--train.learning_rate=5e-4",
        "--train.threads=1",
        "--train.device=cpu",
        "--train.save_steps=1",
        "--train.save_total_limit=5",
        f"--reward.judge.model={gguf_path}",
        "--reward.judge.n_threads=1",
        f"--reward.embed.model={minilm_onnx_dir}",
    ]


def _env() -> dict[str, str]:
    # One thread per process: two processes share the two cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"{shlex.join(cmd)} did not finish in {TIMEOUT}s (a hang?)\n{(e.stderr or b'')[-3000:]!r}"
        )
    assert r.returncode == 0, f"{shlex.join(cmd)}\n{r.stderr[-4000:]}"
    return r


def _driver(trace: Path, args: list[str], overrides: list[str]) -> list[dict]:
    _run(
        [
            *_torchrun("--nproc-per-node", "2"),
            str(HERE / "mp_driver.py"),
            str(trace),
            *args,
            "--",
            *overrides,
        ]
    )
    return [json.loads((trace / f"rank{r}.json").read_text()) for r in (0, 1)]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_outputs(out: Path, steps: int, dapo: bool = False) -> list[dict]:
    """The outputs of one process: one adapter, one metrics file with one row per step, one chart."""
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "reward_components.png").stat().st_size > 1000
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["metrics.jsonl"]
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    for r in rows:
        assert r["num_processes"] == 2
        for k in ("overall", "format", "accuracy_llm", "accuracy_embed", "modality"):
            assert f"reward/{k}" in r
        assert 0.0 <= r["monitor/degenerate_groups"] <= 1.0
        if dapo:
            assert "dynamic/refill_rounds" in r
    return rows


def _check_equivalence(traces: list[dict], reward_cfg=None) -> int:
    """Every scoring round: the gathered rewards are the processes' own rewards in rank order (and what the
    single-process reward gives for those completions), and each process's advantages are its slice of the
    single-process group advantages of that batch. Returns the number of rounds checked."""
    from medix_r1.advantages import group_stats

    r0, r1 = (t["rounds"] for t in traces)
    assert len(r0) == len(r1) > 0  # the same number of scoring rounds: the processes stayed in step
    reward = None
    if reward_cfg is not None:
        from medix_r1.rewards.composite import CompositeReward

        reward = CompositeReward(reward_cfg)
    for a, b in zip(r0, r1):
        n = len(a["local_rewards"])
        glob = np.array(a["local_rewards"] + b["local_rewards"], dtype=np.float64)
        np.testing.assert_array_equal(np.array(a["gathered_rewards"]), glob)
        np.testing.assert_array_equal(np.array(b["gathered_rewards"]), glob)
        if reward is not None:
            again = [s["overall"] for s in reward.score(a["texts"] + b["texts"], a["truths"] + b["truths"])]
            again_arr = np.array([np.nan if v is None else v for v in again], dtype=np.float32)
            np.testing.assert_allclose(again_arr, glob.astype(np.float32), atol=1e-6)
        st = group_stats(glob, group_size=a["group_size"], scale=a["scale"])
        np.testing.assert_allclose(a["advantages"], st.advantages[:n], atol=1e-6)
        np.testing.assert_allclose(b["advantages"], st.advantages[n : 2 * n], atol=1e-6)
    return len(r0)


# -- fast: the accelerate configs --plan writes --------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["zero3", "fsdp"])
def test_plan_accelerate_config_parses(strategy, tmp_path):
    """The config file in the N-GPU plan loads with accelerate's own loader; its keys are launch options."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType
    from medix_r1.train.config import load_config
    from medix_r1.train.plan import make_plan

    plan = make_plan(load_config(None, []), "run.yaml", 6, strategy)
    lines = plan.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("cat > accelerate_"))
    name = lines[start].split()[2]
    body = lines[start + 1 : lines.index("EOF", start)]
    path = tmp_path / name
    path.write_text("\n".join(body) + "\n")
    cfg = load_config_from_file(str(path))
    assert cfg.num_processes == 4
    assert cfg.distributed_type == (
        DistributedType.DEEPSPEED if strategy == "zero3" else DistributedType.FSDP
    )
    launch = next(line for line in lines if "accelerate launch --config_file" in line)
    assert f"--config_file {name} -m medix_r1.cli train --config run.yaml" in launch
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(path), "-m", "medix_r1.cli", "train"])
    args, _, _ = _validate_launch_command(args)
    known = set(vars(parser.parse_args(["x"])))
    section = cfg.deepspeed_config if strategy == "zero3" else cfg.fsdp_config
    assert section
    unknown = [k for k in section if k not in known and f"fsdp_{k}" not in known]
    assert not unknown, f"not accelerate launch options: {unknown}"
    if strategy == "zero3":
        assert args.use_deepspeed and args.zero_stage == 3
    else:
        assert args.use_fsdp and str(args.fsdp_version) == "2"


def test_accelerate_cpu_launch_is_refused_with_the_torchrun_command(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts one process: refused at once with one line giving
    the torchrun command, instead of training on one process."""
    run_file = tmp_path / "run.yaml"
    run_file.write_text("train:\n  max_steps: 1\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
    cmd += ["-m", "medix_r1.cli", "train", "--config", str(run_file)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode != 0
    [line] = [x for x in r.stderr.splitlines() if x.startswith("medix: error:")]
    assert f"torchrun --nproc-per-node N -m medix_r1.cli train --config {run_file}" in line
    assert not (tmp_path / "runs").exists()


def test_no_launcher_of_our_own():
    """No /proc command-line parsing and no rank spawner in the package (torch's launcher does that)."""
    import medix_r1

    root = Path(medix_r1.__file__).parent
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert "cmdline" not in text, f
        assert "MEDIX_SPAWNED_RANK" not in text, f


# -- slow: two processes -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def judge_server(gguf_path):
    """One `medix judge serve` on the real GGUF for both training processes."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "medix_r1.cli",
        "judge",
        "serve",
        "--model",
        str(gguf_path),
        "--port",
        str(port),
    ]
    cmd += ["--n-ctx", "1024", "--n-threads", "1", "--name", "judge"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, f"judge server exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "judge server did not become healthy"
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.2)
        yield base + "/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_plan_cpu_command_trains_grpo(gguf_path, minilm_onnx_dir, tiny_data, judge_server, tmp_path):
    """The CPU rehearsal line `medix train --plan --gpus 4` prints, run as printed (plus tiny-run overrides):
    GRPO on two processes, the judge served once for both; the outputs are those of one process."""
    from medix_r1.train.config import load_config
    from medix_r1.train.plan import make_plan

    out = tmp_path / "grpo"
    plan = make_plan(load_config(None, []), str(tmp_path / "run.yaml"), 4)
    line = next(x for x in plan.splitlines() if "torchrun --nproc-per-node" in x)
    cmd = shlex.split(line.lstrip("# "))
    assert cmd[:6] == ["torchrun", "--nproc-per-node", "2", "-m", "medix_r1.cli", "train"]
    assert "--reward.judge.url=http://127.0.0.1:8001/v1" in cmd
    (tmp_path / "run.yaml").write_text("algo:\n  name: grpo\n")
    overrides = _common(gguf_path, minilm_onnx_dir, tiny_data, out, "grpo")
    overrides = [o for o in overrides if not o.startswith("--reward.judge.")]
    overrides.append(f"--reward.judge.url={judge_server}")  # a free port instead of the plan's 8001
    _run([*_torchrun(), *cmd[1:], *overrides])
    rows = _check_outputs(out, 2)
    assert any(r["reward/accuracy_llm"] is not None for r in rows) or all(
        r["reward/format"] is not None for r in rows
    )


@pytest.mark.slow
def test_two_processes_dr_grpo_groups_straddle_processes(gguf_path, minilm_onnx_dir, tiny_data, tmp_path):
    """3 rows per process, groups of 2: one group has a row on each process. Each process's advantages are
    its slice of the single-process advantages of the gathered batch, whose rewards the single-process reward
    reproduces from the same completions."""
    from medix_r1.train.config import load_config

    out = tmp_path / "dr"
    overrides = _common(gguf_path, minilm_onnx_dir, tiny_data, out, "dr_grpo")
    traces = _driver(tmp_path / "trace", ["--per-device-batch", "3"], overrides)
    assert [len(r["local_rewards"]) for r in traces[0]["rounds"]] == [3, 3]
    assert _check_equivalence(traces, load_config(None, overrides).reward) == 2
    _check_outputs(out, 2)


@pytest.mark.slow
def test_two_processes_dapo_lockstep(gguf_path, minilm_onnx_dir, tiny_data, tmp_path):
    """Only process 1 sees a zero-variance group (rigged rewards, step 1): both processes drop that group and
    run the same two refill rounds; process 1 trains on the refilled group, process 0 on its first one."""
    out = tmp_path / "dapo"
    overrides = _common(gguf_path, minilm_onnx_dir, tiny_data, out, "dapo")
    overrides.append("--algo.dynamic_max_rounds=2")
    traces = _driver(tmp_path / "trace", ["--rig-dapo"], overrides)
    s0, s1 = (t["steps"] for t in traces)
    assert len(s0) == len(s1) == 2
    first0, first1 = s0[0], s1[0]
    assert first0["rounds"] == first1["rounds"] == 2
    assert first0["masks"] == first1["masks"]
    assert first0["masks"][0] == [True, True, False, False]  # the group on process 1 is dropped
    assert first0["masks"][2][2:] == [True, True]
    assert first0["short"] == first1["short"] == [0, 0]
    assert all(x != 0 for x in first1["advantages"])  # the refilled group carries a learning signal
    assert s0[1]["rounds"] == s1[1]["rounds"] and s0[1]["masks"] == s1[1]["masks"]
    _check_equivalence(traces)
    rows = _check_outputs(out, 2, dapo=True)
    assert rows[0]["dynamic/refill_rounds"] == 2


def _ranked_processes(out: Path) -> list[int]:
    """Processes whose command line names this run's output directory."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(out).encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_two_processes_gspo_killed_then_resumed(gguf_path, minilm_onnx_dir, tiny_data, tmp_path):
    """SIGKILL to the whole process group after the first checkpoint; `--resume` finishes the run with no step
    lost or repeated."""
    out = tmp_path / "gspo"
    run_file = tmp_path / "run.yaml"
    run_file.write_text("algo:\n  name: gspo\n")
    cmd = [
        *_torchrun("--nproc-per-node", "2"),
        "-m",
        "medix_r1.cli",
        "train",
        "--config",
        str(run_file),
    ]
    cmd += _common(gguf_path, minilm_onnx_dir, tiny_data, out, "gspo")
    log = tmp_path / "first.log"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=_env(), stdout=err, stderr=err, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (out / "checkpoint-1" / "trainer_state.json").exists():
            assert proc.poll() is None, (
                f"training exited before its first checkpoint:\n{log.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both training processes
        proc.wait()
    gone = time.monotonic() + 30
    while _ranked_processes(out):  # nothing trains on as an orphan
        assert time.monotonic() < gone, "a training process outlived the kill of its process group"
        time.sleep(0.2)
    from medix_r1.train.trainer import last_checkpoint

    ck = last_checkpoint(out)
    assert ck is not None and ck.name == "checkpoint-1"
    _run([*cmd, "--resume"])
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    _check_outputs(out, 2)


# -- a failure on one process stops every process with one error ---------------------------------------------

FLAKY = """import os

calls = [0]


def flaky(completions, ground_truths, **kw):
    calls[0] += 1
    if os.environ.get("RANK") == "1" and calls[0] >= 2:
        raise ValueError("rigged failure in a custom component")
    return [0.5] * len(completions)
"""


def _run_failing(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` expecting it to fail, within TIMEOUT: a hang fails the test."""
    try:
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{shlex.join(cmd)} hung for {TIMEOUT}s after a failure on one process\n{e.stderr!r}")
    assert r.returncode != 0, r.stderr[-3000:]
    return r


def _check_stopped_after_step_1(out: Path) -> None:
    """The run's outputs survive the stop: step 1's metrics row and checkpoint, nothing of a step 2."""
    assert [r["step"] for r in _rows(out / "metrics.jsonl")] == [1]
    assert json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["global_step"] == 1
    assert not (out / "checkpoint-2").exists()


@pytest.mark.slow
def test_a_custom_component_raising_on_one_process_stops_every_process(gguf_path, tiny_data, tmp_path):
    """`medix train` under torchrun, a custom component that raises on process 1 from its second call: both
    processes stop (no hang in the rewards gather) with the same one-line error naming the component and the
    process; step 1's checkpoint, metrics and logged completions (of both processes) are intact."""
    comp = tmp_path / "flaky.py"
    comp.write_text(FLAKY)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"reward:\n  extra:\n    - function: {comp}:flaky\n      weight: 0.2\n")
    out = tmp_path / "run"
    overrides = [o for o in _common(gguf_path, None, tiny_data, out, "grpo") if "reward." not in o]
    overrides.append("--train.log_completions=1")
    cmd = [*_torchrun("--nproc-per-node", "2", "--tee", "3"), "-m", "medix_r1.cli", "train"]
    r = _run_failing([*cmd, "--config", str(run_file), *overrides])
    lines = {}
    for line in r.stdout.splitlines() + r.stderr.splitlines():
        rank, sep, text = line.partition("]:")
        if sep and text.startswith("medix: error:"):
            lines.setdefault(rank.lstrip("["), []).append(text)
    assert sorted(lines) == ["default0", "default1"], r.stderr[-3000:]
    assert lines["default0"] == lines["default1"] and len(lines["default0"]) == 1
    err = lines["default0"][0]
    assert f"{comp}:flaky raised ValueError: rigged failure in a custom component" in err
    assert "process 1 of 2" in err and "process 0 of 2" not in err
    assert "the reward failed at step 2" in err and "--resume" in err
    _check_stopped_after_step_1(out)
    # train.log_completions=1: step 1's completions of both processes, with the custom component's column
    done = _rows(out / "completions.jsonl")
    assert [(r["step"], r["process"]) for r in done] == [(1, 0), (1, 0), (1, 1), (1, 1)]
    assert all(r["flaky"] == 0.5 and isinstance(r["completion"], str) for r in done)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["embed", "judge"])
def test_an_embedder_error_or_judge_outage_on_one_process_stops_every_process(
    what, gguf_path, minilm_onnx_dir, tiny_data, tmp_path
):
    """The embedder raising on process 1 (a RewardStepError on both, naming process 1 and the error), or the
    judge failing there (retried in step, then the outage error on both): no hang, step 1 kept."""
    out = tmp_path / "run"
    overrides = _common(gguf_path, minilm_onnx_dir, tiny_data, out, "grpo")
    if what == "embed":
        overrides = [o for o in overrides if not o.startswith("--reward.judge.")]
    overrides += ["--train.judge_retries=1", "--train.judge_retry_wait=0.1"]
    trace = tmp_path / "trace"
    cmd = [*_torchrun("--nproc-per-node", "2"), str(HERE / "mp_driver.py"), str(trace)]
    _run_failing([*cmd, "--fail", f"{what}:1:2", "--", *overrides])
    errs = [json.loads((trace / f"rank{r}.json").read_text())["error"] for r in (0, 1)]
    assert errs[0] == errs[1], errs
    if what == "embed":
        assert errs[0]["type"] == "RewardStepError"
        assert "process 1 of 2: RuntimeError: rigged: the ONNX session failed" in errs[0]["message"]
        assert "process 0 of 2" not in errs[0]["message"]
    else:
        assert errs[0]["type"] == "JudgeOutageError"
        assert "the judge failed 2 times in a row at step 1" in errs[0]["message"]
    _check_stopped_after_step_1(out)
