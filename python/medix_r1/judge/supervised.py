"""The local llama.cpp judge in a child process the caller supervises, so that a native crash of the judge
(SIGSEGV, SIGABRT, the kernel's OOM killer) is a judge outage and not the end of a training run.

:class:`SupervisedJudge` keeps the exact-match short-circuit, de-duplication and the verdict cache in the
calling process and sends the unique pairs to a worker process that holds one :class:`LocalJudge` for its
whole life (so llama.cpp's KV-cache prefix reuse works as in-process). The worker evaluates them in the order
LocalJudge does and streams one verdict per pair back; each is cached as it arrives, so a worker that dies
mid-batch loses nothing already judged. P(YES) crosses the pipe as the same float: verdicts are bit-identical
to the in-process judge's for the same model and settings.

A worker that dies is replaced by a fresh one and the rest of the batch goes on (at most ``respawns`` times
per batch; a pair that was being judged when the worker died twice is left unscorable with the reason). When
the budget is spent the remaining pairs are unscorable, with the signal named; the composite reward turns that
into :class:`~medix_r1.errors.JudgeFailedError`, which the trainer retries (a fresh process each time) and
then stops on with a checkpoint and the resume command.

``MEDIX_JUDGE_PID_FILE=path`` makes every worker start write the worker's pid there (for monitoring and the
tests); ``MEDIX_TEST_JUDGE_CRASH=start|request`` makes each worker kill itself with SIGSEGV when it starts
or when it gets a request (tests only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from medix_r1 import errors
from medix_r1.errors import BackendError, MedixError
from medix_r1.judge.core import CachingJudge, JudgeConfig, Verdict, checked_pair

__all__ = ["PID_FILE_ENV", "SupervisedJudge", "WorkerDied", "describe_exit", "worker_env"]

log = logging.getLogger("medix_r1.judge")

PID_FILE_ENV = "MEDIX_JUDGE_PID_FILE"
CRASH_ENV = "MEDIX_TEST_JUDGE_CRASH"


class WorkerDied(Exception):
    """The judge worker process ended (or stopped answering and was killed); ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe_exit(returncode: int | None) -> str:
    """``-11`` -> ``"SIGSEGV (signal 11)"``; a SIGKILL notes the OOM killer; ``3`` -> ``"exit status 3"``."""
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        text = f"{name} (signal {-returncode})"
        if -returncode == signal.SIGKILL:
            text += ", e.g. the kernel's OOM killer when memory runs out"
        return text
    return f"exit status {returncode}"


def worker_env(config: JudgeConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the judge worker starts with: this process's, with medix_r1 importable, and
    ``extra`` (e.g. ``{"OMP_WAIT_POLICY": "PASSIVE"}``) on top. OpenMP reads its settings when llama.cpp's
    library loads, in the worker, so they must be decided here."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the medix_r1 package
    env["PYTHONPATH"] = os.pathsep.join(
        [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    # CPU-CHOICE (issue 17 item 5): threads and the OpenMP wait policy are chosen by medix_r1.llm.cpu's
    # prepare_runtime(), which LlamaCppChat calls before llama_cpp loads: in the worker, so the choice is
    # made there, for the cores free when the worker starts, and never touches the trainer's own threads.
    # Variables given here (``extra``) are set before that and win where prepare_runtime respects them.
    # The worker waits while its caller works (a trainer's generation and backward pass between two reward
    # batches): its OpenMP threads must sleep then, not spin on the cores the caller needs. Chosen when the
    # machine looked idle, ACTIVE made `medix demo` 1.7x slower (3 steps on 2 idle cores: 208 s wall, 399
    # CPU s, against 123 s and 144 CPU s with PASSIVE). The user's OMP_WAIT_POLICY still wins.
    if "OMP_WAIT_POLICY" not in env:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.update(extra or {})
    return env


_WORKER_MAIN = "from medix_r1.judge.supervised import main; main()"


class _Worker:
    """One judge worker process and our end of its socket."""

    def __init__(self, config: JudgeConfig, rule: str, env: dict[str, str], startup_timeout: float) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from medix_r1.judge.supervised import main; main()",
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stdout is the caller's (reports, JSON); llama.cpp logs to stderr
            )
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.pid = self.proc.pid
        self._finalizer = weakref.finalize(self, _reap, self.proc, self.conn)
        path = os.environ.get(PID_FILE_ENV)
        if path:
            tmp = f"{path}.tmp"
            Path(tmp).write_text(f"{self.pid}\n")
            os.replace(tmp, path)
        log.info("judge worker process %d started", self.pid)
        try:
            self.send(("init", config, rule))
            msg = self.recv(startup_timeout, "while loading the model")
        except WorkerDied:
            self.kill()
            raise
        if msg[0] == "error":
            self.close()
            raise msg[1]
        self.name: str = msg[1]

    def send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except OSError:  # the worker is gone (EPIPE, ECONNRESET)
            raise WorkerDied(self.death("before it got a request")) from None

    def recv(self, timeout: float, doing: str) -> tuple:
        try:
            if not self.conn.poll(timeout):
                self.kill()
                raise WorkerDied(
                    f"judge process {self.pid} gave no answer in {timeout:g} s {doing}; killed it"
                )
            return self.conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            raise WorkerDied(self.death(doing)) from None

    def death(self, doing: str) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        return f"judge process {self.pid} died {doing}: {describe_exit(code)}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("close",))
        self._finalizer()


def _reap(proc: subprocess.Popen, conn: Connection) -> None:
    conn.close()  # the worker sees end-of-file and exits
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SupervisedJudge(CachingJudge):
    """The in-process judge's verdicts from a supervised worker process (see the module docstring).

    ``config`` describes a local GGUF judge (``config.model``); ``env`` adds environment variables for the
    worker (read before llama.cpp loads there); ``respawns``: fresh workers per batch after a death;
    ``reply_timeout``: seconds without a verdict after which a worker is taken for hung and killed;
    ``startup_timeout``: seconds a worker may take to load the model. Starts the first worker now: a model
    that cannot load raises here (MissingModelError, BackendError), before anything is judged.
    """

    def __init__(
        self,
        config: JudgeConfig,
        *,
        rule: str = "strict",
        env: dict[str, str] | None = None,
        respawns: int = 2,
        reply_timeout: float = 300.0,
        startup_timeout: float = 600.0,
    ) -> None:
        if not config.model:
            raise BackendError("SupervisedJudge runs a local GGUF judge: config.model is not set")
        from medix_r1.llm import GGUF_HOW

        errors.check_model_path(config.model, "llama.cpp model", GGUF_HOW)  # fail here, not in a child
        if rule == "reference" and config.reference_prompt:
            from medix_r1.judge.reference import load_reference_prompt

            load_reference_prompt(config.reference_prompt)  # a bad template: its error here, not in a child
        super().__init__(config.cache_size)
        self.config = config
        self.rule = rule  # "reference": the authors' verdict rule (ReferenceJudge) in the worker
        self.env = worker_env(config, env)
        self.respawns = respawns
        self.reply_timeout = reply_timeout
        self.startup_timeout = startup_timeout
        self.starts = 0  # worker processes started
        self.deaths: list[str] = []  # how each worker that died went
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._sent: set[int] | None = None  # the pairs the live worker was asked for
        try:
            w = self._start()
        except WorkerDied as e:
            raise BackendError(f"{e.reason} (model {config.model})") from None
        self.name = w.name

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None between a death and the next start)."""
        return self._worker.pid if self._worker is not None else None

    def _start(self) -> _Worker:
        self.starts += 1
        self._worker = _Worker(self.config, self.rule, self.env, self.startup_timeout)
        return self._worker

    def _died(self, reason: str, budget_left: int) -> None:
        self._worker = None
        self.deaths.append(reason)
        if budget_left > 0:
            log.warning(
                "%s; starting a fresh judge process (%d more allowed for this batch)", reason, budget_left - 1
            )
        else:
            log.warning("%s; no fresh judge process left for this batch", reason)

    def _key(self, i: int, pair: Any) -> Verdict | tuple[str, str]:
        if self.rule == "reference":  # pairs exactly as given, as the in-process ReferenceJudge takes them
            return checked_pair(i, pair)
        return super()._key(i, pair)

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        # LocalJudge's order: sorted by ground truth, so a group shares the ground truth's KV cache.
        order = list(range(len(keys)))
        if self.rule == "strict":
            order.sort(key=lambda i: (keys[i][1], keys[i][0]))
        out: list[Verdict | None] = [None] * len(keys)
        strikes: dict[int, int] = {}
        budget = self.respawns
        with self._lock:
            while True:
                todo = [i for i in order if out[i] is None]
                if not todo:
                    break
                try:
                    self._run(keys, todo, out)
                    break
                except WorkerDied as e:
                    first = next((i for i in todo if out[i] is None), None)
                    if first is not None and self._worker_had(first):
                        strikes[first] = strikes.get(first, 0) + 1
                        if strikes[first] >= 2:  # this pair kills the judge: leave it, judge the rest
                            out[first] = Verdict(
                                None, error=f"the judge process died twice on this pair: {e.reason}"
                            )
                    self._died(e.reason, budget)
                    if budget <= 0:
                        for i in todo:
                            if out[i] is None:
                                out[i] = Verdict(None, error=e.reason)
                        break
                    budget -= 1
        return [v if v is not None else Verdict(None, error="internal: not judged") for v in out]

    def _worker_had(self, i: int) -> bool:
        return self._sent is not None and i in self._sent

    def _run(self, keys: list[tuple[str, str]], todo: list[int], out: list[Verdict | None]) -> None:
        """Judge ``keys[todo]`` on the live worker (starting one if needed), filling ``out`` as verdicts
        arrive."""
        self._sent = None
        w = self._worker
        if w is not None and not w.alive():
            raise WorkerDied(w.death("while idle"))
        if w is None:
            try:
                w = self._start()
            except (MedixError, OSError) as e:  # e.g. the model file went away, no memory to fork
                raise WorkerDied(f"a fresh judge process could not start: {e}") from None
        self._sent = set(todo)
        w.send(("judge", [keys[i] for i in todo]))
        while True:
            msg = w.recv(self.reply_timeout, "while judging")
            if msg[0] == "done":
                return
            if msg[0] == "bug":
                raise RuntimeError(f"judge process {w.pid}: {msg[1]}")
            _, j, match, p, err = msg
            i = todo[j]
            out[i] = v = Verdict(match, p, error=err, source="judge")
            self.cache.put(keys[i], v)  # only decided verdicts are kept

    def p_yes(self, predicted: str, ground_truth: str) -> float:
        """P(YES) among {YES, NO} for one pair (no cache, no short-circuit), as LocalJudge.p_yes; a dead
        worker is replaced once."""
        out: list[Verdict | None] = [None]
        with self._lock:
            for attempt in range(2):
                try:
                    self._run([(predicted, ground_truth)], [0], out)
                    break
                except WorkerDied as e:
                    self._died(e.reason, 1 - attempt)
                    if attempt:
                        raise BackendError(e.reason) from None
        v = out[0]
        assert v is not None
        if v.p_yes is None:
            raise BackendError(v.error or f"{self.name}: no verdict")
        return v.p_yes

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None


# ---------------------------------------------------------------------------------------------------------
# The worker process
# ---------------------------------------------------------------------------------------------------------


def _crash_if(when: str) -> None:
    if os.environ.get(CRASH_ENV) == when:
        os.kill(os.getpid(), signal.SIGSEGV)


def main() -> None:
    """Worker entry point: ``python -c "from medix_r1.judge.supervised import main; main()" FD``."""
    import faulthandler
    import traceback

    faulthandler.enable()  # a native crash prints the Python stack to stderr, then dies of its signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle; we exit on EOF
    conn = Connection(int(sys.argv[1]))
    try:
        msg = conn.recv()
    except EOFError:
        return
    _crash_if("start")
    try:
        from medix_r1.judge.core import LocalJudge
        from medix_r1.judge.reference import ReferenceJudge, load_reference_prompt
        from medix_r1.llm import LlamaCppChat, open_backend

        backend = open_backend(msg[1])
        if not isinstance(backend, LlamaCppChat):
            raise BackendError("the judge worker runs a local GGUF judge only")
        judge: LocalJudge | ReferenceJudge
        if msg[2] == "reference":  # with the user's prompt template, as make_judge does in-process
            path = getattr(msg[1], "reference_prompt", None)
            prompt = load_reference_prompt(path) if path else None
            judge = ReferenceJudge(backend, cache_size=0, prompt=prompt)
        else:
            judge = LocalJudge(backend, cache_size=0)
    except MedixError as e:
        conn.send(("error", e))
        return
    conn.send(("ready", judge.name, os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg[0] == "close":
            break
        _crash_if("request")
        try:
            for j, (pred, gt) in enumerate(msg[1]):
                if isinstance(judge, ReferenceJudge):
                    v = judge._judge_unique([(pred, gt)])[0]
                    conn.send(("v", j, v.match, v.p_yes, v.error))
                    continue
                try:
                    p = judge.p_yes(pred, gt)
                    conn.send(("v", j, p > 0.5, p, None))
                except BackendError as e:  # this pair cannot be judged (context overflow, decode failure)
                    conn.send(("v", j, None, None, str(e)))
            conn.send(("done",))
        except (BrokenPipeError, ConnectionResetError):
            break  # the supervisor is gone
        except Exception:  # a bug: report it with its traceback, stay up
            conn.send(("bug", traceback.format_exc()[-4000:]))
    judge.close()
