"""`medix judge serve` in a subprocess on the real tiny model: the OpenAI API, errors, RemoteJudge against it,
concurrency, and a server killed (SIGKILL) in the middle of a batch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from medix_r1.cli import main as cli_main
from medix_r1.judge import LocalJudge, RemoteJudge
from medix_r1.llm import OpenAIChat

pytestmark = pytest.mark.slow

NAME = "judge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gguf_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
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
        "--n-ctx",
        "1024",
        "--n-threads",
        "2",
        "--name",
        NAME,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if json.load(r)["status"] == "ok":
                    return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("server did not become healthy")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        stream.close()


@pytest.fixture(scope="module")
def server(gguf_path):
    proc, base = start_server(gguf_path)
    yield base
    stop(proc)
    assert proc.returncode in (0, 130, -signal.SIGINT)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def post(url: str, data: bytes | dict) -> tuple[int, dict]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    req = urllib.request.Request(url, data=raw, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


MSG = [{"role": "user", "content": "Is aspirin an antiplatelet drug? Answer YES or NO."}]


def test_health_and_models(server):
    assert get(server + "/health") == {"status": "ok", "model": NAME}
    models = get(server + "/v1/models")
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [NAME]


def test_chat_completion_without_logprobs(server):
    status, body = post(
        server + "/v1/chat/completions", {"model": NAME, "messages": MSG, "max_tokens": 5, "temperature": 0}
    )
    assert status == 200 and body["object"] == "chat.completion" and body["model"] == NAME
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["logprobs"] is None and choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 5 and body["usage"]["prompt_tokens"] > 0


def test_chat_completion_with_logprobs(server):
    req = {
        "model": NAME,
        "messages": MSG,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 10,
    }
    status, body = post(server + "/v1/chat/completions", req)
    assert status == 200
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 1
    tops = content[0]["top_logprobs"]
    assert len(tops) == 10
    lps = [t["logprob"] for t in tops]
    assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
    assert content[0]["token"] == tops[0]["token"] == body["choices"][0]["message"]["content"]
    # Deterministic at temperature 0; the server needs no logits_all for this.
    assert (
        post(server + "/v1/chat/completions", req)[1]["choices"][0]["logprobs"]
        == body["choices"][0]["logprobs"]
    )


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({"model": NAME}, 400, "messages"),
        ({"model": NAME, "messages": [{"content": "hi"}]}, 400, "role"),
        ({"model": NAME, "messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": NAME, "messages": MSG, "temperature": "hot"}, 400, "temperature"),
        ({"model": NAME, "messages": MSG, "logprobs": True, "top_logprobs": 99}, 400, "top_logprobs"),
        ({"model": NAME, "messages": MSG, "stream": True}, 400, "streaming"),
        ({"model": "other", "messages": MSG}, 404, "not served here"),
        (
            {"model": NAME, "messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 4},
            400,
            "exceeds the context",
        ),
    ],
)
def test_bad_requests(server, payload, status, fragment):
    got, body = post(server + "/v1/chat/completions", payload)
    assert got == status
    assert fragment in body["error"]["message"] and body["error"]["type"]


def test_unknown_endpoint(server):
    with pytest.raises(urllib.error.HTTPError) as e:
        get(server + "/v1/nothing")
    assert e.value.code == 404


def test_remote_judge_agrees_with_local_judge(server, gguf_path):
    pairs = [
        ("pneumonia in the right lower lobe", "Right lower lobe pneumonia"),
        ("no acute abnormality", "Pneumothorax"),
        ("osteosarcoma", "Osteosarcoma of the distal femur"),
        ("normal chest radiograph", "Pneumothorax"),
        ("B", "Metformin"),
        ("myocardial infarction", "Heart attack"),
    ]
    local = LocalJudge(gguf_path, n_ctx=1024, n_threads=2)
    try:
        lv = local.judge(pairs)
    finally:
        local.close()
    remote = RemoteJudge(server + "/v1", NAME, concurrency=4, timeout=60)
    rv = remote.judge(pairs)
    assert all(v.source == "judge" and v.p_yes is not None for v in rv)
    for a, b in zip(lv, rv):
        # The server sees the whole prompt as text and reports the top 10 tokens only: P(YES) differs a bit.
        if abs(a.p_yes - 0.5) > 0.1:
            assert a.match == b.match
        assert b.p_yes == pytest.approx(a.p_yes, abs=0.1)
    assert [v.source for v in remote.judge(pairs)] == ["cache"] * len(pairs)


def test_concurrent_connections(server):
    client = OpenAIChat(server + "/v1", NAME, concurrency=8, timeout=120)
    msgs = [[{"role": "user", "content": f"Name organ number {i}."}] for i in range(12)]
    out = client.chat_many(msgs, max_tokens=4)
    assert all(isinstance(o, str) for o in out)
    # Health answers while decodes queue on the model lock.
    with ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(client.chat, m, max_tokens=16) for m in msgs[:3]]
        assert get(server + "/health")["status"] == "ok"
        assert all(isinstance(f.result(), str) for f in busy)


def test_all_decoding_runs_on_one_model_thread(gguf_path):
    # One llama.cpp OpenMP thread team for the server's life, not one per connection.
    from medix_r1.judge.server import serve

    srv = serve(gguf_path, port=0, n_ctx=512, n_threads=2, name=NAME, block=False)
    seen: set[int] = set()
    real = srv.chat.generate

    def observed(*args, **kwargs):
        seen.add(threading.get_ident())
        return real(*args, **kwargs)

    srv.chat.generate = observed
    try:
        client = OpenAIChat(srv.url, NAME, concurrency=4, timeout=120)
        msgs = [[{"role": "user", "content": f"Name organ number {i}."}] for i in range(6)]
        assert all(isinstance(o, str) for o in client.chat_many(msgs, max_tokens=2))
    finally:
        srv.close()
    assert len(seen) == 1 and threading.get_ident() not in seen


def test_server_killed_mid_batch(gguf_path):
    proc, base = start_server(gguf_path)
    try:
        url = base + "/v1"
        judge = RemoteJudge(url, NAME, concurrency=2, timeout=20, max_retries=1)
        judge.client.backoff = 0.05
        pairs = [(f"answer number {i}", f"Ground truth {i % 7}") for i in range(150)]
        result: list = []
        t = threading.Thread(target=lambda: result.extend(judge.judge(pairs)))
        t.start()
        deadline = time.monotonic() + 120
        while len(judge.cache) < 5 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        assert len(judge.cache) >= 5, "the server judged nothing before the deadline"
        os.kill(proc.pid, signal.SIGKILL)
        t.join(120)
        assert not t.is_alive()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stop(proc)
    assert len(result) == len(pairs)
    decided = [(p, v) for p, v in zip(pairs, result) if v.match is not None]
    failed = [v for v in result if v.match is None]
    assert len(decided) >= 5 and failed, "the kill should land mid-batch"
    assert all(v.source == "judge" for _, v in decided)
    for v in failed:
        assert f"127.0.0.1:{base.rsplit(':', 1)[1]}/v1/chat/completions" in v.error
        assert v.p_yes is None
    # Every verdict obtained before the kill is kept; nothing unscorable was cached.
    assert len(judge.cache) == len(decided) and all(p in judge.cache for p, _ in decided)
    again = judge.judge(pairs)
    for p, v in zip(pairs, again):
        if p in judge.cache:
            assert v.source == "cache" and v.match is not None
        else:
            assert v.match is None and base.split("//")[1] in v.error


def test_cli_errors_are_user_errors(tmp_path, capsys):
    assert cli_main(["judge", "serve", "--model", str(tmp_path / "missing.gguf"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "missing.gguf" in err and "never downloads" in err
    assert cli_main(["judge", "serve", "--model", "x.gguf", "--port", "70000"]) == 2
    assert cli_main(["judge"]) == 2  # the group without a subcommand prints its help
