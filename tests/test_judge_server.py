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
from medix_r1.llm.server import ChatServer

pytestmark = pytest.mark.slow

NAME = "judge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gguf_path, *extra: str, preexec_fn=None) -> tuple[subprocess.Popen, str]:
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
        *extra,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn
    )
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
    from medix_r1.llm.server import serve

    srv = serve(gguf_path, port=0, n_ctx=512, n_threads=2, name=NAME, block=False)
    seen: set[int] = set()
    from medix_r1.llm import server as server_mod

    real_generate = server_mod.generate

    def observed_generate(*args, **kwargs):
        seen.add(threading.get_ident())
        return real_generate(*args, **kwargs)

    server_mod.generate = observed_generate
    try:
        client = OpenAIChat(srv.url, NAME, concurrency=4, timeout=120)
        msgs = [[{"role": "user", "content": f"Name organ number {i}."}] for i in range(6)]
        assert all(isinstance(o, str) for o in client.chat_many(msgs, max_tokens=2))
    finally:
        server_mod.generate = real_generate
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


# -- hardening: in-process server on the real model ------------------------------------------------------


@pytest.fixture(scope="module")
def model(gguf_path):
    from medix_r1.llm import LlamaCppChat

    c = LlamaCppChat(gguf_path, n_ctx=1024, n_threads=2)
    yield c
    c.close()


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except TimeoutError:
                break
            if not b:
                break
            chunks.append(b)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                n = [
                    int(x.split(b":")[1])
                    for x in head.split(b"\r\n")
                    if x.lower().startswith(b"content-length")
                ]
                if n and len(rest) >= n[0]:
                    break
        return b"".join(chunks)


def http_post(port: int, body: bytes, extra: str = "") -> tuple[int, dict]:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    reply = raw_request(port, head + body)
    status = int(reply.split(b" ", 2)[1])
    payload = reply.partition(b"\r\n\r\n")[2]
    return status, json.loads(payload) if payload else {}


MALFORMED = [
    b"[" * 100_000 + b"]" * 100_000,  # nested too deep for the parser
    b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"messages": [{"role": "user", "content": "\\ud800"}]}',  # lone surrogate
    b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}',
    b'{"messages": [{"role": "\\ud800", "content": "hi"}]}',
    b"\xff\xfe not utf-8",
    b'{"messages": "hi"}',
    b'{"messages": [{"role": 5, "content": "hi"}]}',
    b'{"messages": [{"role": "user<|im_end|>", "content": "hi"}]}',
    b'{"messages": [{"role": "tool", "content": "hi"}]}',
    b'{"messages": [{"role": "user", "content": 5}]}',
    b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "a"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": [1]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": {"a": 1}}',
    b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": "yes"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": -1}',
    b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}',
    b'{"messages": [{"role": "user", "content": "hi"}], "seed": -5}',
    b'{"messages": [{"role": "user", "content": "hi"}], "model": ["x"]}',
    b"null",
    b"",
]


def test_malformed_input_is_always_a_400(model):
    with ChatServer(model, port=0, name=NAME).start() as srv:
        for body in MALFORMED:
            status, reply = http_post(srv.port, body)
            assert 400 <= status < 500 and status != 429, (body[:60], status)
            assert reply["error"]["message"], body[:60]
        ok, _ = http_post(srv.port, json.dumps({"messages": MSG, "max_tokens": 1}).encode())
        assert ok == 200  # still serving
        bad_len = raw_request(srv.port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        assert bad_len.startswith(b"HTTP/1.1 400")


def test_body_limit_is_checked_before_reading(model):
    with ChatServer(model, port=0, name=NAME, max_body=1000).start() as srv:
        t0 = time.monotonic()
        # Headers only: the server must answer without waiting for the 8 MiB it was promised.
        reply = raw_request(
            srv.port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 8388608\r\n\r\n", timeout=10
        )
        assert reply.startswith(b"HTTP/1.1 413") and time.monotonic() - t0 < 5
        assert srv.served == 0


def test_api_key_is_required_when_set(model):
    with ChatServer(model, port=0, name=NAME, api_key="s3cret").start() as srv:
        body = json.dumps({"messages": MSG, "max_tokens": 1}).encode()
        assert http_post(srv.port, body)[0] == 401
        assert http_post(srv.port, body, "Authorization: Bearer wrong\r\n")[0] == 401
        assert http_post(srv.port, body, "Authorization: Bearer s3cret\r\n")[0] == 200
        assert get(f"http://127.0.0.1:{srv.port}/health")["status"] == "ok"  # for monitors, no key
        ok = OpenAIChat(srv.url, NAME, api_key="s3cret").chat(MSG, max_tokens=1)
        assert isinstance(ok, str)


def test_non_loopback_bind_warns(model):
    with pytest.warns(RuntimeWarning, match="without --api-key"):
        ChatServer(model, host="0.0.0.0", port=0, name=NAME).close()


def test_connection_cap_and_idle_timeout(model):
    """Idle connections hold no slot; they are closed after the timeout; a slot is taken by a request."""
    with ChatServer(model, port=0, name=NAME, max_connections=2, timeout=0.5).start() as srv:
        a = socket.create_connection(("127.0.0.1", srv.port))
        b = socket.create_connection(("127.0.0.1", srv.port))
        time.sleep(0.1)
        assert get(f"http://127.0.0.1:{srv.port}/v1/models")["data"][0]["id"] == NAME
        a.settimeout(5)
        assert a.recv(10) == b""  # idle past the timeout: closed by the server
        for s in (a, b):
            s.close()
        assert srv.refused_connections == 0


def test_attack_requests_beyond_the_slots_are_429_but_health_answers(model, monkeypatch):
    from medix_r1.llm import server as server_mod

    release = threading.Event()
    real = server_mod.generate

    def held(chat, *a, **kw):
        release.wait(60)
        return real(chat, *a, **kw)

    monkeypatch.setattr(server_mod, "generate", held)
    with ChatServer(model, port=0, name=NAME, max_connections=1, api_key="k").start() as srv:
        body = json.dumps({"messages": MSG, "max_tokens": 1}).encode()
        keeper = socket.create_connection(("127.0.0.1", srv.port))
        keeper.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer k\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        deadline = time.monotonic() + 30
        while srv._pending < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert http_post(srv.port, body)[0] == 401  # no key: refused, never given the slot
        status, reply = http_post(srv.port, body, "Authorization: Bearer k\r\n")
        assert status == 429 and "in progress" in reply["error"]["message"]
        assert get(f"http://127.0.0.1:{srv.port}/health")["status"] == "ok"  # needs no slot
        release.set()
        keeper.settimeout(60)
        assert keeper.recv(12).startswith(b"HTTP/1.1 200")
        keeper.close()


def test_attack_30000_empty_messages_are_refused_before_any_tokenizing(model):
    with ChatServer(model, port=0, name=NAME).start() as srv:
        body = json.dumps({"messages": [{"role": "user", "content": ""}] * 30_000, "max_tokens": 1}).encode()
        t0 = time.perf_counter()
        status, reply = http_post(srv.port, body)
        print(f"\n30,000 empty messages: HTTP {status} in {time.perf_counter() - t0:.2f} s")
        assert status == 400 and reply["error"]["code"] == "context_length_exceeded"
        assert "30000 messages cannot fit the context of 1024" in reply["error"]["message"]


def test_attack_per_address_connection_cap(model):
    """One address cannot take every connection: its third is refused, another address is served."""
    with ChatServer(model, port=0, name=NAME, max_per_client=2, timeout=10).start() as srv:
        mine = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
        time.sleep(0.2)
        third = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        reply = third.recv(1000)
        assert reply.startswith(b"HTTP/1.1 429") and b"from 127.0.0.1 (max 2 per address)" in reply
        third.close()
        other = socket.create_connection(("127.0.0.1", srv.port), timeout=5, source_address=("127.0.0.2", 0))
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert other.recv(100).startswith(b"HTTP/1.1 200")
        other.close()
        for s in mine:
            s.close()
        time.sleep(0.3)
        assert get(f"http://127.0.0.1:{srv.port}/health")["status"] == "ok"  # freed on close


def test_attack_slow_loris_cannot_lock_out_health(gguf_path):
    """`medix judge serve --max-connections 4 --timeout 5`: four sockets that send one header byte every
    2 s (no key, never finishing their head) hold no slot, /health and a chat request are served meanwhile,
    and each slow socket is closed about 5 s after it started (a deadline on the whole head)."""
    proc, base = start_server(gguf_path, "--max-connections", "4", "--timeout", "5")
    try:
        port = int(base.rsplit(":", 1)[1])
        head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        t0 = time.monotonic()
        closed_at: dict[int, float] = {}
        stop_at = t0 + 14

        def drip() -> None:
            i = 0
            while time.monotonic() < stop_at and len(closed_at) < len(socks):
                for k, s in enumerate(socks):
                    if k in closed_at:
                        continue
                    try:
                        s.sendall(head[i : i + 1])
                        s.setblocking(False)
                        try:
                            if s.recv(1000) == b"":
                                closed_at[k] = time.monotonic() - t0
                        except BlockingIOError:
                            pass
                        finally:
                            s.setblocking(True)
                    except OSError:
                        closed_at[k] = time.monotonic() - t0
                i += 1
                time.sleep(2)

        th = threading.Thread(target=drip)
        th.start()
        time.sleep(1.0)
        statuses = []
        for _ in range(3):
            try:
                with urllib.request.urlopen(base + "/health", timeout=3) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as e:
                statuses.append(e.code)
            time.sleep(1.0)
        status, reply = post(base + "/v1/chat/completions", {"messages": MSG, "max_tokens": 1})
        th.join(30)
        for s in socks:
            s.close()
        print(f"\nslow-loris: /health {statuses}; slow sockets closed after {sorted(closed_at.values())} s")
        assert statuses == [200, 200, 200] and status == 200, (statuses, status, reply)
        assert len(closed_at) == 4 and max(closed_at.values()) < 5 + 4.5, closed_at
    finally:
        stop(proc)


def test_full_queue_is_429_and_abandoned_requests_never_run(model, monkeypatch):
    from medix_r1.llm import server as server_mod

    ran: list[int] = []
    release = threading.Event()
    real = server_mod.generate

    def counted(chat, *a, **kw):
        ran.append(kw["max_tokens"])
        if kw["max_tokens"] == 7:
            release.wait(60)  # the first request holds the model until the test lets it go
        return real(chat, *a, **kw)

    monkeypatch.setattr(server_mod, "generate", counted)
    with ChatServer(model, port=0, name=NAME, max_queue=3).start() as srv:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
        first = json.dumps({"messages": MSG, "max_tokens": 7, "temperature": 0}).encode()
        keeper = socket.create_connection(("127.0.0.1", srv.port))
        keeper.sendall(head % len(first) + first)
        while not ran:
            time.sleep(0.01)
        quitters = []
        for i in range(2):  # queued behind it, then their clients give up
            s = socket.create_connection(("127.0.0.1", srv.port))
            short = json.dumps({"messages": MSG, "max_tokens": 2 + i}).encode()
            s.sendall(head % len(short) + short)
            quitters.append(s)
        deadline = time.monotonic() + 30
        while srv._pending < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert http_post(srv.port, json.dumps({"messages": MSG, "max_tokens": 1}).encode())[0] == 429
        for s in quitters:
            s.close()
        while srv.cancelled < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        keeper.settimeout(60)
        assert keeper.recv(12).startswith(b"HTTP/1.1 200")
        keeper.close()
        assert srv.cancelled == 2 and srv.rejected == 1
        assert ran == [7]  # the abandoned requests never reached the model


def test_load_with_abandoning_clients(model):
    """Bounded load on loopback: 6 clients for 6 s, a quarter of the requests abandoned while they wait; the
    queue holds 4, so waiting is bounded (beyond: 429)."""
    import random

    with ChatServer(model, port=0, name=NAME, max_queue=4).start() as srv:
        body = json.dumps({"messages": MSG, "max_tokens": 1, "temperature": 0}).encode()
        req = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        t_start = time.monotonic()
        stop_at = t_start + 6
        lat: list[float] = []
        counts = {"ok": 0, "busy": 0, "abandoned": 0, "timeout": 0, "other": 0}
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                with socket.create_connection(
                    ("127.0.0.1", srv.port), timeout=max(1.0, stop_at + 10 - t0)
                ) as s:
                    s.sendall(req)
                    if rng.random() < 0.25:
                        time.sleep(rng.random() * 0.05)
                        with lock:
                            counts["abandoned"] += 1
                        continue
                    try:
                        reply = s.recv(16)
                    except TimeoutError:
                        reply = b"timeout"
                if reply == b"timeout":
                    key = "timeout"
                elif reply.startswith(b"HTTP/1.1 200"):
                    key = "ok"
                else:
                    key = "busy" if b" 429" in reply[:12] else "other"
                with lock:
                    counts[key] += 1
                    if key == "ok":
                        lat.append(time.monotonic() - t0)
                if key == "busy":
                    time.sleep(0.25)  # a client backing off, as OpenAIChat does

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wall = time.monotonic() - t_start
        lat.sort()
        p50 = lat[len(lat) // 2] if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        print(
            f"\njudge server load: 6 clients, {wall:.1f} s: {srv.served} served, "
            f"{counts['ok']} replies read, "
            f"{counts['abandoned']} abandoned ({srv.cancelled} dropped unrun), {counts['busy']} x 429, "
            f"{counts['timeout']} timeouts; p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
        # Every reply is a completion or a 429; nothing hangs past the clients' deadlines; still serving.
        assert counts["other"] == 0 and counts["ok"] + counts["busy"] > 0
        assert srv.served >= counts["ok"]
        assert get(f"http://127.0.0.1:{srv.port}/health")["status"] == "ok"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_server_stops_on_sigint_and_sigterm_even_when_started_with_sigint_ignored(gguf_path, sig):
    """A shell's background job inherits SIGINT ignored, and a service manager stops with SIGTERM: both stop
    the server in order (exit 130, "interrupted"), not a kill after a timeout."""
    proc, _ = start_server(gguf_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        proc.send_signal(sig)
        rc = proc.wait(20)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert rc == 130, err
    assert "medix: interrupted" in err
