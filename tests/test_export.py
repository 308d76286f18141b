"""`medix export` on a real (tiny) run: the SmolLM2-135M policy trained one GRPO step on CPU, its adapter's
B matrices then set to random values so that the merge moves the logits visibly (a one-step adapter is
nearly zero). Merged checkpoint vs adapter-on-base logits; GGUF (llama.cpp's own converter from the
llama-cpp-python sdist, quantized by llama_model_quantize) vs the merged checkpoint's greedy answers;
the LoRA GGUF on a base GGUF; export.json; resume and refusal; the CLI with no network (`unshare -rn`);
`medix serve` (plain and streamed chat over HTTP) and `medix eval run --model F.gguf`."""

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
    """The adapter as a llama.cpp LoRA GGUF on the base converted to GGUF answers like the merged GGUF."""
    from medix_r1.export import resolve_source
    from medix_r1.export.llama import find_llama_source, run_converter
    from medix_r1.llm import LlamaCppChat

    rec = _export(run=run_dir, out=tmp_path / "lora", fmt="gguf-lora", converter=llama_sdist)
    lora = tmp_path / "lora" / rec["files"][0]["name"]
    assert rec["files"][0]["role"] == "lora" and lora.name == "medix-demo-lora-f16.gguf"
    src = resolve_source(run_dir, None, None)
    base_gguf = tmp_path / "base-f32.gguf"
    run_converter(
        find_llama_source(llama_sdist).hf_converter,
        [str(src.base), "--outfile", str(base_gguf), "--outtype", "f32"],
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


def test_serve_answers_plain_and_streamed(run_dir, llama_sdist, tmp_path):
    """The OpenAI wire format (the `openai` package is not in the pinned stack, so raw HTTP): a chat reply,
    and the same request streamed as chat.completion.chunk events ending in [DONE] whose text is the same."""
    from medix_r1.export.serve import serve_policy

    rec = _export(run=run_dir, out=tmp_path / "q8", fmt="gguf", quant="q8_0", converter=llama_sdist)
    srv = serve_policy(tmp_path / "q8" / rec["files"][0]["name"], block=False, port=0, n_ctx=512, n_threads=2,
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


def test_eval_run_scores_the_export(run_dir, llama_sdist, gguf_path, tmp_path):
    rec = _export(run=run_dir, out=tmp_path / "q8", fmt="gguf", quant="q8_0", converter=llama_sdist)
    model = tmp_path / "q8" / rec["files"][0]["name"]
    r = subprocess.run(
        [sys.executable, "-m", "medix_r1.cli", "eval", "run", "--model", str(tmp_path / "q8"), "--judge",
         str(gguf_path), "--tasks", "demo", "--limit", "2", "--max-new-tokens", "16", "--out",
         str(tmp_path / "ev"),
         "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "ev" / "demo" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["model"].endswith(model.name) for row in rows)


def test_bundle_carries_the_export_and_doctor_checks_it(run_dir, llama_sdist, tmp_path):
    """`medix bundle create --policy EXPORT_DIR` copies the folder and points the policy at its GGUF; the
    doctor's model check verifies export.json's hashes; a flipped byte is named."""
    from medix_r1.bundle.create import _add_model
    from medix_r1.bundle.models import describe_model
    from medix_r1.doctor import _model_check

    _export(run=run_dir, out=tmp_path / "q8", fmt="gguf", quant="q8_0", converter=llama_sdist)
    info = describe_model(tmp_path / "q8", "policy", load=True)
    assert info["kind"] == "gguf" and "match export.json's SHA-256s" in info["detail"]
    entry = _add_model(tmp_path / "bundle", "policy", str(tmp_path / "q8"), {})
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
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)$")
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
