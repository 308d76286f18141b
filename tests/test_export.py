"""`medix export` on a real (tiny) run: the SmolLM2-135M policy trained one GRPO step on CPU, its adapter's
B matrices then set to random values so that the merge moves the logits visibly (a one-step adapter is
nearly zero). Merged checkpoint vs adapter-on-base logits; GGUF (llama.cpp's own converter from the
llama-cpp-python sdist, quantized by llama_model_quantize) vs the merged checkpoint's greedy answers;
the LoRA GGUF on a base GGUF; export.json; resume and refusal; the CLI with no network (`unshare -rn`);
`medix serve` (plain and streamed chat, raw HTTP and the official `openai` client; `--lora`), `medix judge
serve` with the `openai` client, and `medix eval run --model F.gguf`."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What organ does pneumonia affect?",
    "Name the bone in the upper arm.",
    "Which vitamin deficiency causes scurvy?",
    "What does an ECG measure?",
    "What is the normal human body temperature in Celsius?",
    "Which blood cells carry oxygen?",
]
NEW_TOKENS = 24


@pytest.fixture(scope="session")
def llama_sdist() -> Path:
    from conftest import HOW, MODELS

    found = sorted(MODELS.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        pytest.fail(
            f"llama-cpp-python sdist (llama.cpp's converters) missing in {MODELS}; {HOW}", pytrace=False
        )
    return found[-1]


@pytest.fixture(scope="module")
def run_dir(gguf_path, tmp_path_factory):
    import torch
    from medix_r1.train.config import load_config
    from medix_r1.train.data import demo_dataset_path
    from medix_r1.train.trainer import run_training

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("export-run")
    data = root / "tiny.jsonl"
    data.write_text("".join(demo_dataset_path().read_text().splitlines(keepends=True)[:4]))
    out = root / "medix-demo"
    cfg = load_config(
        None,
        [
            f"--model.path={gguf_path}",
            f"--data.path={data}",
            "--algo.name=grpo",
            "--algo.beta=0.0",
            "--algo.num_generations=2",
            "--algo.max_completion_length=8",
            f"--train.output_dir={out}",
            "--train.max_steps=1",
            "--train.prompts_per_step=1",
            "--train.threads=2",
            "--train.device=cpu",
            "--train.save_steps=1",
            "--train.chart=false",
        ],
    )
    res = run_training(cfg, echo=None)
    assert (res["adapter"] / "adapter_config.json").is_file()
    from safetensors.torch import load_file, save_file

    f = res["adapter"] / "adapter_model.safetensors"
    sd = load_file(str(f))
    g = torch.Generator().manual_seed(0)
    for k, v in sd.items():
        if "lora_B" in k:
            sd[k] = torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.02
    save_file(sd, str(f))
    return out


def _export(**kw):
    from medix_r1.export import export

    return export(log=lambda s: None, **kw)


def _hf_greedy(model, tok, question: str) -> str:
    import torch

    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _gguf_greedy(chat, question: str) -> str:
    return chat.chat([{"role": "user", "content": question}], max_tokens=NEW_TOKENS, temperature=0.0).strip()


@pytest.fixture(scope="module")
def merged_dir(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "m"
    _export(run=run_dir, out=out, fmt="merged", dtype="float16")
    return out


@pytest.fixture(scope="module")
def q8_dir(run_dir, llama_sdist, tmp_path_factory) -> Path:
    """The run exported once as a q8_0 GGUF, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("q8") / "q8"
    _export(run=run_dir, out=out, fmt="gguf", quant="q8_0", converter=llama_sdist)
    return out


def test_converted_policy_has_a_plain_byte_level_tokenizer(run_dir, gguf_path, tmp_path):
    """train/convert.py's checkpoint of the GGUF policy (a fresh one, and the cached one the run trained on)
    carries a byte-level BPE tokenizer without SentencePiece byte fallback (which llama.cpp's converter
    misreads), and it tokenizes and decodes exactly as llama.cpp does with the GGUF's own vocabulary."""
    import llama_cpp
    from medix_r1.export import resolve_source
    from medix_r1.train.convert import gguf_to_checkpoint
    from transformers import AutoTokenizer

    fresh = gguf_to_checkpoint(gguf_path, tmp_path / "ckpt")
    for ckpt in (fresh, resolve_source(run_dir, None, None).base):
        t = json.loads((ckpt / "tokenizer.json").read_text(encoding="utf-8"))
        assert t["model"]["type"] == "BPE" and not t["model"].get("byte_fallback")
        assert t["decoder"]["type"] == "ByteLevel"
    tok = AutoTokenizer.from_pretrained(str(fresh))
    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    for text in ["Fièvre à 38,5 °C — 肺炎? ", "x-ray\n\tCT  MRI", "emoji 🫁 and \u2581 and <0x41>"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == llm.tokenize(text.encode(), add_bos=False, special=False), text
        assert tok.decode(ids) == text


def test_merged_checkpoint_equals_adapter_on_base(run_dir, tmp_path):
    """float32 merge vs the unmerged PeftModel: max |logit difference| <= 1e-3 (the merge only reorders
    floating-point additions); export.json names the inputs and hashes every file."""
    import torch
    from medix_r1.export import file_sha256, resolve_source
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged32"
    rec = _export(run=run_dir, out=out, fmt="merged", dtype="float32")
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert json.loads((out / "export.json").read_text()) == rec
    assert rec["format"] == "merged" and rec["source"]["run"] == str(run_dir.resolve())
    names = {f["name"] for f in rec["files"]}
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names)
    for f in rec["files"]:
        assert (out / f["name"]).stat().st_size == f["size"] and file_sha256(out / f["name"]) == f["sha256"]
    assert rec["versions"]["transformers"] and rec["versions"]["peft"]
    src = resolve_source(run_dir, None, None)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template
    ids = tok.apply_chat_template(
        [{"role": "user", "content": QUESTIONS[0]}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(str(src.base), dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(**ids).logits
        peft = PeftModel.from_pretrained(base, str(src.adapter)).eval()
        want = peft(**ids).logits
        got = merged(**ids).logits
    diff = (got - want).abs().max().item()
    moved = (want - base_logits).abs().max().item()
    print(
        f"merged vs adapter-on-base: max |dlogit| {diff:.2e}; the adapter moves logits by up to {moved:.2f}"
    )
    assert moved > 0.1  # the adapter matters, so equality means something
    assert diff <= 1e-3


def test_gguf_f16_and_q8_answer_like_the_merged_checkpoint(run_dir, merged_dir, llama_sdist, tmp_path):
    import torch
    from medix_r1.llm import LlamaCppChat
    from transformers import AutoModelForCausalLM, AutoTokenizer

    f16 = _export(
        run=run_dir, out=tmp_path / "f16", fmt="gguf", quant="f16", dtype="float16", converter=llama_sdist
    )
    q8 = _export(
        run=run_dir, out=tmp_path / "q8", fmt="gguf", quant="q8_0", dtype="float16", converter=llama_sdist
    )
    for rec, out, quant in ((f16, tmp_path / "f16", "f16"), (q8, tmp_path / "q8", "q8_0")):
        assert [f["name"] for f in rec["files"]] == [f"medix-demo-{quant}.gguf"]
        assert sorted(p.name for p in out.iterdir()) == ["export.json", f"medix-demo-{quant}.gguf"]
        assert rec["converter"]["origin"] == str(llama_sdist) and rec["converter"]["sha256"]
    assert q8["total_size"] < f16["total_size"]
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    want = [_hf_greedy(model, tok, q) for q in QUESTIONS]
    got: dict[str, list[str]] = {}
    for quant in ("f16", "q8_0"):
        d = tmp_path / ("f16" if quant == "f16" else "q8")
        chat = LlamaCppChat(d / f"medix-demo-{quant}.gguf", n_ctx=512, n_threads=2)
        got[quant] = [_gguf_greedy(chat, q) for q in QUESTIONS]
        del chat
    same = {q: sum(a == b for a, b in zip(want, got[q])) for q in got}
    print(
        f"greedy answers equal to the merged checkpoint's: f16 {same['f16']}/{len(QUESTIONS)}, "
        f"q8_0 {same['q8_0']}/{len(QUESTIONS)}"
    )
    for w, a in zip(want, got["f16"]):
        print(f"  HF {w!r}\n  f16 {a!r}")
    assert all(got["q8_0"]) and all(got["f16"])
    assert same["f16"] >= len(QUESTIONS) - 1


def test_gguf_lora_on_a_base_gguf(run_dir, llama_sdist, tmp_path):
    """The adapter as a llama.cpp LoRA GGUF on the base converted to GGUF answers like the merged GGUF, both
    loaded directly and served by `medix serve --lora`."""
    from medix_r1.export import resolve_source
    from medix_r1.export.llama import find_llama_source, run_converter
    from medix_r1.llm import LlamaCppChat

    rec = _export(run=run_dir, out=tmp_path / "lora", fmt="gguf-lora", converter=llama_sdist)
    lora = tmp_path / "lora" / rec["files"][0]["name"]
    assert rec["files"][0]["role"] == "lora" and lora.name == "medix-demo-lora-f16.gguf"
    src = resolve_source(run_dir, None, None)
    base_dir = tmp_path / "base"
    shutil.copytree(src.base, base_dir)
    base_gguf = tmp_path / "base-f32.gguf"
    run_converter(
        find_llama_source(llama_sdist).hf_converter,
        [str(base_dir), "--outfile", str(base_gguf), "--outtype", "f32"],
        "base",
    )
    merged = _export(
        run=run_dir, out=tmp_path / "m32", fmt="gguf", quant="f32", dtype="float32", converter=llama_sdist
    )
    a = LlamaCppChat(base_gguf, n_ctx=512, n_threads=2, lora_path=lora)
    b = LlamaCppChat(tmp_path / "m32" / merged["files"][0]["name"], n_ctx=512, n_threads=2)
    plain = LlamaCppChat(base_gguf, n_ctx=512, n_threads=2)
    qs = QUESTIONS[:3]
    with_lora = [_gguf_greedy(a, q) for q in qs]
    merged_ans = [_gguf_greedy(b, q) for q in qs]
    base_ans = [_gguf_greedy(plain, q) for q in qs]
    print("lora:", with_lora, "\nmerged:", merged_ans, "\nbase:", base_ans)
    assert sum(x == y for x, y in zip(with_lora, merged_ans)) >= len(qs) - 1
    assert with_lora != base_ans
    del a, b, plain
    # The same through `medix serve --model BASE.gguf --lora LORA.gguf` and the official client.
    srv = _CliServer(
        ["serve", "--model", str(base_gguf), "--lora", str(lora), "--n-ctx", "512", "--n-threads", "2"], {}
    )
    try:
        client = _openai_client(srv.url, "unused")
        served = [
            (
                client.chat.completions.create(
                    model=base_gguf.stem,
                    messages=[{"role": "user", "content": q}],
                    max_tokens=NEW_TOKENS,
                    temperature=0,
                )
                .choices[0]
                .message.content
                or ""
            ).strip()
            for q in qs
        ]
    finally:
        srv.close()
    assert any("+ LoRA" in line for line in srv.log)
    print("medix serve --lora:", served)
    assert sum(x == y for x, y in zip(served, merged_ans)) >= len(qs) - 1
    assert [x == y for x, y in zip(served, base_ans)] != [True] * len(qs)


def test_rerun_resumes_and_refuses_another_export(run_dir, llama_sdist, tmp_path):
    from medix_r1.errors import ResumeMismatchError

    out = tmp_path / "out"
    (out / ".work").mkdir(parents=True)
    (out / "medix-demo-q8_0.gguf.part").write_bytes(b"half a file from a killed run")
    (out / ".work" / "x.gguf.part").write_bytes(b"half")
    rec = _export(run=run_dir, out=out, fmt="gguf", quant="q8_0", converter=llama_sdist)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "medix-demo-q8_0.gguf"]
    again = _export(run=run_dir, out=out, fmt="gguf", quant="q8_0", converter=llama_sdist)
    assert again == rec  # nothing redone
    with pytest.raises(ResumeMismatchError, match="another export"):
        _export(run=run_dir, out=out, fmt="gguf", quant="q4_0", converter=llama_sdist)
    (out / "export.json").unlink()
    with pytest.raises(ResumeMismatchError, match="not empty"):
        _export(run=run_dir, out=out, fmt="merged")


def test_kill_mid_export_then_rerun(run_dir, llama_sdist, tmp_path):
    """SIGKILL once the merge is done (the converter running): no final name holds a half file; the rerun
    reuses the merged checkpoint and finishes."""
    import signal
    import time

    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "medix_r1.cli", "export", "--run", str(run_dir), "--out", str(out),
           "--format", "gguf", "--quant", "q4_0", "--converter", str(llama_sdist)]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (out / ".work" / "merged").is_dir() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "export.json").exists()
    assert not any(out.glob("*.gguf"))  # only .part names (or nothing) for unfinished files
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "reusing the merged checkpoint" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "medix-demo-q4_0.gguf"]


def test_cli_export_offline_and_errors(run_dir, llama_sdist, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"]).returncode != 0:
        pytest.fail("unshare -rn is needed to prove the export runs without network", pytrace=False)
    out = tmp_path / "offline"
    r = subprocess.run(
        ["unshare", "-rn", sys.executable, "-m", "medix_r1.cli", "export", "--run", str(run_dir), "--out",
         str(out), "--format", "gguf", "--quant", "q8_0", "--converter", str(llama_sdist)],
        capture_output=True, text=True, env={**os.environ, "MEDIX_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "medix-demo-q8_0.gguf" in r.stdout and (out / "export.json").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "medix_r1.cli", "export", "--run", str(tmp_path / "nope"), "--out",
         str(tmp_path / "x")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--run" in bad.stderr
    nocv = subprocess.run(
        [sys.executable, "-m", "medix_r1.cli", "export", "--run", str(run_dir), "--out", str(tmp_path / "y")],
        capture_output=True, text=True,
        env={**os.environ, "MEDIX_TEST_MODELS": str(tmp_path / "empty"), "MEDIX_LLAMA_CPP_SOURCE": ""},
    )  # fmt: skip
    assert nocv.returncode == 2 and "convert_hf_to_gguf.py" in nocv.stderr and "--converter" in nocv.stderr


def _post(port: int, body: dict, key: str | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    c.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def test_serve_answers_plain_and_streamed(q8_dir):
    """The OpenAI wire format byte by byte (raw HTTP; the official client is in test_serve_openai_client):
    a chat reply, and the same request streamed as chat.completion.chunk events ending in [DONE] whose text
    is the same."""
    from medix_r1.export.serve import serve_policy

    srv = serve_policy(q8_dir / "medix-demo-q8_0.gguf", block=False, port=0, n_ctx=512, n_threads=2,
                       api_key="k")  # fmt: skip
    try:
        body = {"messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 20, "temperature": 0}
        status, _ = _post(srv.port, body)
        assert status == 401
        status, data = _post(srv.port, body, "k")
        assert status == 200, data
        reply = json.loads(data)
        text = reply["choices"][0]["message"]["content"]
        assert text and reply["model"] == "medix-demo-q8_0"
        status, data = _post(
            srv.port, {**body, "stream": True, "stream_options": {"include_usage": True}}, "k"
        )
        assert status == 200
        events = [e[len("data: ") :] for e in data.decode().split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert streamed == text
        assert chunks[-1]["usage"]["completion_tokens"] == reply["usage"]["completion_tokens"]
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] in ("stop", "length")
        status, data = _post(srv.port, {**body, "stream": True, "max_tokens": 10**9}, "k")
        assert status == 400
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("GET", "/v1/models", headers={"Authorization": "Bearer k"})
        assert json.loads(c.getresponse().read())["data"][0]["id"] == "medix-demo-q8_0"
    finally:
        srv.close()


class _CliServer:
    """`medix serve` / `medix judge serve` as a user starts it: a child process on a free port; ``url`` from
    the line it prints once listening."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        import re
        import threading
        import time

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medix_r1.cli", *argv, "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        self.log: list[str] = []
        found = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                if re.search(r" at (http://\S+/v1) ", line):
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 300
        while not found.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"{argv[0]} did not start:\n{''.join(self.log)[-2000:]}", pytrace=False)
        m = next(
            re.search(r" at (http://\S+/v1) ", x) for x in self.log if re.search(r" at (http://\S+/v1) ", x)
        )
        assert m is not None
        self.url = m.group(1)

    def close(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # as Ctrl-C: the server closes its socket and model
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def served_policy(q8_dir):
    """`medix serve --model <export>/medix-demo-q8_0.gguf`, the API key from $MEDIX_SERVE_API_KEY."""
    srv = _CliServer(
        ["serve", "--model", str(q8_dir / "medix-demo-q8_0.gguf"), "--n-ctx", "512", "--n-threads", "2"],
        {"MEDIX_SERVE_API_KEY": "policy-key"},
    )
    yield srv
    srv.close()


def _openai_client(url: str, key: str):
    import openai

    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def test_serve_with_the_official_openai_client(served_policy):
    """The `openai` package (the client most applications use) against `medix serve`: models.list(), a chat
    completion, the same request streamed (chunks, usage chunk, [DONE]) with the same text, and the
    server's refusals raised as the client's own error classes."""
    import openai

    client = _openai_client(served_policy.url, "policy-key")
    assert [m.id for m in client.models.list()] == ["medix-demo-q8_0"]
    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    reply = client.chat.completions.create(
        model="medix-demo-q8_0", messages=msgs, max_tokens=20, temperature=0
    )
    assert reply.object == "chat.completion" and reply.model == "medix-demo-q8_0"
    text = reply.choices[0].message.content
    assert text and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="medix-demo-q8_0",
            messages=msgs,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    )
    with client.chat.completions.create(  # without usage; the client stops at [DONE]
        model="medix-demo-q8_0", messages=msgs, max_tokens=4, temperature=0, stream=True
    ) as stream:
        plain = list(stream)
    assert all(c.usage is None and c.choices for c in plain)
    with client.chat.completions.create(  # a client that leaves mid-stream: the server stops and serves on
        model="medix-demo-q8_0", messages=msgs, max_tokens=400, temperature=0, stream=True
    ) as stream:
        next(iter(stream))
    again = client.chat.completions.create(
        model="medix-demo-q8_0", messages=msgs, max_tokens=20, temperature=0
    )
    assert again.choices[0].message.content == text
    with pytest.raises(openai.AuthenticationError):
        _openai_client(served_policy.url, "wrong").models.list()
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=msgs, stream=True)
    with pytest.raises(openai.BadRequestError, match="max_tokens") as e:
        client.chat.completions.create(model="medix-demo-q8_0", messages=msgs, max_tokens=10**9)
    assert e.value.param == "max_tokens"


def test_judge_serve_with_the_official_openai_client(gguf_path):
    """`medix judge serve` is OpenAI-compatible too: models.list(), a completion with logprobs (what a
    remote judge asks for), and streaming refused with a 400 the client raises."""
    import openai

    srv = _CliServer(
        ["judge", "serve", "--model", str(gguf_path), "--n-ctx", "512", "--n-threads", "2"],
        {"MEDIX_JUDGE_API_KEY": "judge-key"},
    )
    try:
        client = _openai_client(srv.url, "judge-key")
        name = gguf_path.stem
        assert [m.id for m in client.models.list()] == [name]
        r = client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "Answer yes or no: is the heart an organ?"}],
            max_tokens=3,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
        assert r.choices[0].message.content and r.usage is not None and r.usage.completion_tokens <= 3
        assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content
        for t in r.choices[0].logprobs.content:
            assert len(t.top_logprobs) == 2 and t.logprob <= 0 and t.top_logprobs[0].logprob >= t.logprob
        with pytest.raises(openai.BadRequestError, match="stream"):
            client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], stream=True
            )
    finally:
        srv.close()


def test_eval_run_scores_the_export(q8_dir, gguf_path, tmp_path):
    model = q8_dir / "medix-demo-q8_0.gguf"
    r = subprocess.run(
        [sys.executable, "-m", "medix_r1.cli", "eval", "run", "--model", str(q8_dir), "--judge",
         str(gguf_path), "--tasks", "demo", "--limit", "2", "--max-new-tokens", "16", "--out",
         str(tmp_path / "ev"),
         "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "ev" / "demo" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["model"].endswith(model.name) for row in rows)


def test_bundle_carries_the_export_and_doctor_checks_it(q8_dir, tmp_path):
    """`medix bundle create --policy EXPORT_DIR` copies the folder and points the policy at its GGUF; the
    doctor's model check verifies export.json's hashes; a flipped byte is named."""
    from medix_r1.bundle.create import _add_model
    from medix_r1.bundle.models import describe_model
    from medix_r1.doctor import _model_check

    info = describe_model(q8_dir, "policy", load=True)
    assert info["kind"] == "gguf" and "match export.json's SHA-256s" in info["detail"]
    entry = _add_model(tmp_path / "bundle", "policy", str(q8_dir), {})
    assert entry["path"] == "models/policy/q8/medix-demo-q8_0.gguf"
    assert (tmp_path / "bundle" / "models" / "policy" / "q8" / "export.json").is_file()
    carried = tmp_path / "bundle" / entry["path"]
    assert _model_check("policy", carried).ok
    with open(carried, "r+b") as f:
        f.seek(carried.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    check = _model_check("policy", carried)
    assert not check.ok and "SHA-256" in check.detail and carried.name in check.detail


def test_vision_export(gguf_path, llama_sdist, tmp_path):
    """The tiny vision-language model of the tests (random vision tower) with a LoRA on its language model:
    the merged checkpoint loads as an image-text model with its processor; the GGUF export either writes
    the model + mmproj (loaded by llama.cpp, the text path answers) or says in one line that llama.cpp's
    converter cannot."""
    import torch
    from medix_r1.export import ConverterError
    from peft import LoraConfig, get_peft_model
    from support.tinyvlm import build_tiny_vlm, default_family
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = build_tiny_vlm(gguf_path, gguf_path.parent / f"tiny-vlm-{default_family()}")
    model = AutoModelForImageTextToText.from_pretrained(str(base), dtype=torch.float32)
    text_only = r".*(?:language_model|text_model|model\.layers).*\.(?:q_proj|v_proj)$"  # as the trainer
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=text_only)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    adapter = tmp_path / "adapter"
    pm.save_pretrained(str(adapter))
    AutoProcessor.from_pretrained(str(base)).save_pretrained(str(adapter))
    rec = _export(adapter=adapter, base=base, out=tmp_path / "vm", fmt="merged")
    assert rec["source"]["vision"] is True
    AutoModelForImageTextToText.from_pretrained(str(tmp_path / "vm"))
    assert AutoProcessor.from_pretrained(str(tmp_path / "vm")).chat_template
    try:
        rec = _export(
            adapter=adapter, base=base, out=tmp_path / "vg", fmt="gguf", quant="f16", converter=llama_sdist
        )
    except ConverterError as e:
        print(f"vision GGUF export ({default_family()}): {e}")
        assert "\n" not in str(e) and ("architecture" in str(e) or "vision projector" in str(e))
        return
    roles = {f["role"]: tmp_path / "vg" / f["name"] for f in rec["files"]}
    assert set(roles) == {"model", "mmproj"} and roles["mmproj"].name.startswith("mmproj-")
    from medix_r1.llm import LlamaCppChat

    chat = LlamaCppChat(roles["model"], n_ctx=512, n_threads=2, clip_model_path=roles["mmproj"])
    assert chat.supports_images
    print("vision GGUF, text path:", _gguf_greedy(chat, QUESTIONS[0]))
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    from medix_r1.export.serve import serve_policy

    srv = serve_policy(roles["model"], mmproj=roles["mmproj"], block=False, port=0, n_ctx=1024, n_threads=2)
    try:
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": uri}},
                        {"type": "text", "text": "What is in this image?"},
                    ],
                }
            ],
            "max_tokens": 12,
            "temperature": 0,
        }
        status, data = _post(srv.port, body)
        assert status == 200, data
        print(
            "vision GGUF, image+text through medix serve:",
            json.loads(data)["choices"][0]["message"]["content"],
        )
    finally:
        srv.close()


def test_bundle_fetches_the_llama_sdist_offline_and_checks_its_hash(llama_sdist, tmp_path, monkeypatch):
    """The converter source `medix bundle create` carries (tools/), fetched as on a connected machine but
    from a local PEP 503 index over HTTP (and from a --find-links folder): checked against the SHA-256
    medix pins for the version; a tampered file on the index is refused with one clear error and leaves
    nothing in tools/."""
    import functools
    import http.server
    import threading

    from medix_r1.bundle.create import _add_llama_sdist
    from medix_r1.bundle.manifest import BundleError
    from medix_r1.export import file_sha256
    from medix_r1.export.llama import SDIST_SHA256

    version = llama_sdist.name.removeprefix("llama_cpp_python-").removesuffix(".tar.gz")
    assert SDIST_SHA256.get(version) == file_sha256(llama_sdist), "pin the test sdist's version"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"llama_cpp_python-{version}-cp311-cp311-linux_x86_64.whl").write_bytes(b"")

    def index(root: Path, data: Path) -> None:  # a simple index whose link carries the index's hash
        (root / "simple" / "llama-cpp-python").mkdir(parents=True)
        (root / "files").mkdir()
        os.symlink(data, root / "files" / llama_sdist.name)
        (root / "simple" / "llama-cpp-python" / "index.html").write_text(
            f'<a href="../../files/{llama_sdist.name}#sha256={file_sha256(data)}">{llama_sdist.name}</a>'
        )

    good, bad = tmp_path / "good", tmp_path / "bad"
    index(good, llama_sdist)
    tampered = tmp_path / "tampered.tar.gz"
    tampered.write_bytes(llama_sdist.read_bytes()[:-1] + b"\0")
    index(bad, tampered)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    for b in ("b1", "b2", "b3", "b4"):
        (tmp_path / b).mkdir()  # the bundle folder
    try:
        monkeypatch.setenv("PIP_INDEX_URL", f"{base}/good/simple")
        got = _add_llama_sdist(tmp_path / "b1" / "tools", wheels, None)
        assert got.name == llama_sdist.name and file_sha256(got) == SDIST_SHA256[version]
        assert sorted(p.name for p in got.parent.iterdir()) == [llama_sdist.name]
        monkeypatch.setenv("PIP_INDEX_URL", f"{base}/bad/simple")
        with pytest.raises(BundleError, match="SHA-256") as e:
            _add_llama_sdist(tmp_path / "b2" / "tools", wheels, None)
        msg = str(e.value)
        print("refused:", msg)
        assert "\n" not in msg and SDIST_SHA256[version] in msg and f"/bad/files/{llama_sdist.name}" in msg
        assert "--llama-sdist" in msg and not any((tmp_path / "b2" / "tools").iterdir())
        # --find-links folder first (no index at all: the bad one is never asked)
        links = tmp_path / "links"
        links.mkdir()
        os.symlink(llama_sdist, links / llama_sdist.name)
        got = _add_llama_sdist(tmp_path / "b3" / "tools", wheels, None, [str(links)])
        assert file_sha256(got) == SDIST_SHA256[version]
        os.unlink(links / llama_sdist.name)
        os.symlink(tampered, links / llama_sdist.name)
        with pytest.raises(BundleError, match="medix pins"):
            _add_llama_sdist(tmp_path / "b4" / "tools", wheels, None, [f"file://{links}"])
    finally:
        httpd.shutdown()
        httpd.server_close()
