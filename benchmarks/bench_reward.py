"""The composite reward on a GRPO-sized batch, against the authors' call pattern, same models, one run.

    python benchmarks/bench_reward.py [--prompts 64] [--group-size 8] [--threads 2] [--baseline-subset N]

Batch: ``--prompts`` questions x ``--group-size`` completions, with the duplication RL groups really have
(several completions giving the ground truth verbatim, or the same short paraphrase).

(1) Baseline, the authors' call pattern: per sample, in sequence, one HTTP chat request for up to 4 generated
    tokens to the judge served by ``medix judge serve`` (a subprocess, same GGUF), then the embedding of the
    answer and of the ground truth, one text per call. sentence-transformers is not installed here, so its
    per-item ``encode`` is emulated with transformers on the same checkpoint (tokenize one text, forward,
    mean pooling, L2 normalisation: what sentence-transformers does for this model). The judge prompt has the
    authors' layout (one user message: the instruction, then the answer and the ground truth lines, in
    reference mode's default wording, ours). (1b) is the same call pattern with our prompt (ground truth
    before the answer, the answer last), which costs the baseline fewer tokens; both get the server's prefix
    KV reuse.
(2) CompositeReward: one call for the batch; the judge in-process (LocalJudge: one forward pass per unique
    pair, YES/NO read from the logits, prefix KV cache) and fastembed over the exported ONNX model, batched,
    each distinct text once. Also (2b) with RemoteJudge against the same server (concurrent requests, one
    token with log-probs), for a fair "through a server" comparison.

Also the embedding alone: per-item encoding vs batched fastembed over the same texts.
Prints wall times and ratios; asserts nothing. ``--baseline-subset N`` times the baseline on the first N
samples only and extrapolates, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# Not OMP_WAIT_POLICY=PASSIVE: llama.cpp's OpenMP build synchronises its threads at a barrier after every
# graph op, and passive (sleeping) waits make it ~3x slower on 2 cores. The server inherits our environment.
if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
    sys.exit("unset OMP_WAIT_POLICY=PASSIVE: it slows llama.cpp ~3x and would distort both sides")

MODELS = Path(os.environ.get("MEDIX_TEST_MODELS", Path.home() / ".cache" / "medix-r1" / "test-models"))

CASES = [  # (modality, ground-truth answer, paraphrases, wrong answers)
    (
        "X_RAY",
        "Right lower lobe pneumonia",
        ["pneumonia of the right lower lobe", "RLL pneumonia"],
        ["pleural effusion", "normal chest"],
    ),
    (
        "CT_SCAN",
        "Hepatocellular carcinoma",
        ["HCC", "primary liver cancer"],
        ["hemangioma", "liver metastasis"],
    ),
    (
        "MRI_SCAN",
        "Anterior cruciate ligament tear",
        ["ACL tear", "torn ACL"],
        ["meniscal tear", "bone bruise"],
    ),
    (
        "MICROSCOPY",
        "Adenocarcinoma",
        ["glandular carcinoma", "adenocarcinoma of the colon"],
        ["lymphoma", "benign adenoma"],
    ),
    (
        "FUNDUS_PHOTOGRAPHY",
        "Diabetic retinopathy",
        ["proliferative diabetic retinopathy", "DR"],
        ["glaucoma", "retinal detachment"],
    ),
    (
        "ULTRASOUND",
        "Acute cholecystitis",
        ["inflamed gallbladder", "cholecystitis"],
        ["gallstones only", "pancreatitis"],
    ),
    (
        "CT_SCAN",
        "Pulmonary embolism",
        ["PE", "clot in the pulmonary artery"],
        ["pneumothorax", "aortic dissection"],
    ),
    ("ENDOSCOPY", "Gastric ulcer", ["peptic ulcer of the stomach", "ulcer"], ["gastritis", "gastric cancer"]),
]


def make_batch(prompts: int, group_size: int) -> tuple[list[str], list[str]]:
    """Completions per group: the answer verbatim x2, one paraphrase x2, another paraphrase, a wrong answer
    x2, another wrong answer (cycled to ``group_size``)."""
    responses, truths = [], []
    for p in range(prompts):
        tag, gt, para, wrong = CASES[p % len(CASES)]
        gt = gt if p < len(CASES) else f"{gt}, case {p}"  # distinct questions beyond the first few
        answers = [gt, gt, para[0], para[0], para[1], wrong[0], wrong[0], wrong[1]]
        for k in range(group_size):
            a = answers[k % len(answers)]
            think = f"Finding {k} on this image of question {p}: the features point to the answer."
            responses.append(f"<{tag}><think>{think}</think>\n<answer>{a}</answer>")
            truths.append(f"<{tag}> {gt}")
    return responses, truths


# ---------------------------------------------------------------------------------------------------------
# baseline: the authors' call pattern
# ---------------------------------------------------------------------------------------------------------


class PerItemEncoder:
    """sentence-transformers' per-item encode, emulated with transformers (mean pooling, L2)."""

    def __init__(self, hf_dir: Path, threads: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(hf_dir), local_files_only=True).eval()

    def encode(self, text: str):
        torch = self.torch
        with torch.inference_mode():
            enc = self.tok([text], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=1)[0].numpy()


def _authors_answer(s: str) -> str:
    s = re.sub(r"\s*([<>/])\s*", r"\1", s)
    m = re.search(r"<answer>(.*?)</answer>", s, re.DOTALL)
    return (m.group(1) if m else s).strip().strip(".")


def authors_messages(predicted: str, ground_truth: str) -> list[dict]:
    """The authors' judge request layout (one user message: instruction, the answer, then the truth), in this
    project's wording: reference mode's default prompt."""
    from medix_r1.judge.reference import reference_messages

    return reference_messages(predicted, ground_truth)


def baseline(
    responses,
    truths,
    url: str,
    model_name: str,
    encoder: PerItemEncoder,
    clock: dict | None = None,
    *,
    messages=authors_messages,
) -> list[tuple[float, float]]:
    clock = {} if clock is None else clock
    out = []
    for resp, gt in zip(responses, truths):
        answer, gt_answer = _authors_answer(resp), gt.split(">", 1)[1].strip()
        if answer == gt_answer:
            out.append((1.0, 1.0))
            continue
        body = {
            "model": model_name,
            "messages": messages(answer, gt_answer),
            "max_tokens": 4,
            "temperature": 0.0,
        }
        req = urllib.request.Request(
            f"{url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            reply = json.loads(r.read())["choices"][0]["message"]["content"] or ""
        llm = 1.0 if "YES" in reply.upper() else 0.0
        t1 = time.perf_counter()
        a, g = encoder.encode(answer), encoder.encode(gt_answer)
        t2 = time.perf_counter()
        clock["judge"] = clock.get("judge", 0.0) + t1 - t0
        clock["embed"] = clock.get("embed", 0.0) + t2 - t1
        out.append((llm, 1.0 if float(a @ g) >= 0.8 else 0.0))
    return out


# ---------------------------------------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(gguf: Path, threads: int) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    name = "judge"
    cmd = [sys.executable, "-m", "medix_r1.cli", "judge", "serve", "--model", str(gguf), "--port", str(port)]
    cmd += ["--n-threads", str(threads), "--n-ctx", "2048", "--name", name]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"medix judge serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, url, name
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("medix judge serve did not come up in 120 s")


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-subset", type=int, default=0, help="time the baseline on N samples only")
    ap.add_argument("--gguf", type=Path, default=MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--hf", type=Path, default=MODELS / "all-MiniLM-L6-v2")
    ap.add_argument("--onnx", type=Path, default=MODELS / "all-MiniLM-L6-v2-onnx")
    args = ap.parse_args()

    from medix_r1.embed import FastEmbedEmbedder, export_onnx
    from medix_r1.judge import LocalJudge, RemoteJudge, build_messages
    from medix_r1.rewards import CompositeReward, RewardConfig, analyze

    if not (args.onnx / "model.onnx").exists():
        export_onnx(args.hf, args.onnx)
    responses, truths = make_batch(args.prompts, args.group_size)
    n = len(responses)
    answers = analyze(responses, truths).answers
    gt_answers = [t.split(">", 1)[1].strip() for t in truths]
    asked = sum(a != g for a, g in zip(answers, gt_answers))
    distinct = len({(a, g) for a, g in zip(answers, gt_answers) if a != g})
    print(
        f"batch: {args.prompts} prompts x {args.group_size} = {n} samples; {n - asked} exact matches; "
        f"{distinct} distinct judged pairs; {len({*answers, *gt_answers})} distinct texts; "
        f"threads {args.threads}"
    )

    proc, url, name = start_server(args.gguf, args.threads)
    try:
        encoder = PerItemEncoder(args.hf, args.threads)
        encoder.encode("warm up")
        # Warm the server (model pages, first-request costs) outside the timing.
        baseline(responses[2:3], truths[2:3], url, name, encoder)

        sub = args.baseline_subset if 0 < args.baseline_subset < n else n
        t_bases = []
        for label, msgs in (("(1) ", authors_messages), ("(1b)", build_messages)):
            clock: dict = {}
            t0 = time.perf_counter()
            baseline(responses[:sub], truths[:sub], url, name, encoder, clock, messages=msgs)
            t_measured = time.perf_counter() - t0
            t_bases.append(t_measured * n / sub)
            what = "authors' prompt layout" if msgs is authors_messages else "our judge prompt"
            print(
                f"{label} baseline, authors' call pattern, {what} (HTTP judge 4 tokens/sample + per-item "
                f"encode): {t_measured:.2f} s (judge requests {clock.get('judge', 0):.2f} s, "
                f"per-item encoding {clock.get('embed', 0):.2f} s)"
                + (f" on {sub} of {n} samples, EXTRAPOLATED to {t_bases[-1]:.2f} s" if sub < n else "")
            )
        t_base, t_base_ours = t_bases

        # (2) CompositeReward, in-process judge + batched fastembed (fresh caches; model load not timed).
        judge = LocalJudge(args.gguf, n_ctx=2048, n_threads=args.threads)
        emb = FastEmbedEmbedder(args.onnx, threads=args.threads)
        reward = CompositeReward(RewardConfig(), judge=judge, embedder=emb)
        reward.score(responses[2:3], truths[2:3])  # warm-up on one pair, then drop its cache entry
        judge.cache = type(judge.cache)(judge.cache.size)
        t0 = time.perf_counter()
        scores = reward.score(responses, truths)
        t_ours = time.perf_counter() - t0
        print(
            f"(2) CompositeReward, LocalJudge + batched fastembed: {t_ours:.2f} s "
            f"({judge.model_calls - 1} judge forward passes for {asked} judged samples)  "
            f"-> {t_base / t_ours:.1f}x vs (1), {t_base_ours / t_ours:.1f}x vs (1b)"
        )
        assert all(s["overall"] is not None for s in scores)

        remote = RemoteJudge(url, name, concurrency=8, timeout=60)
        reward_r = CompositeReward(RewardConfig(), judge=remote, embedder=emb)
        t0 = time.perf_counter()
        reward_r.score(responses, truths)
        t_remote = time.perf_counter() - t0
        print(
            f"(2b) CompositeReward, RemoteJudge (same server, concurrency 8) + batched fastembed: "
            f"{t_remote:.2f} s -> {t_base / t_remote:.1f}x vs (1), {t_base_ours / t_remote:.1f}x vs (1b)"
        )
        judge.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # Embedding alone, over the same 2n texts (answer and truth of every sample, duplicates included).
    texts = [t for pair in zip(answers, gt_answers) for t in pair]
    t0 = time.perf_counter()
    for t in texts:
        encoder.encode(t)
    t_item = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts:
        emb.embed([t])
    t_fe_item = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb.embed(texts)
    t_fe_batch = time.perf_counter() - t0
    from medix_r1.embed import embedding_accuracy

    t0 = time.perf_counter()
    embedding_accuracy(emb, answers, gt_answers)
    t_acc = time.perf_counter() - t0
    print(
        f"embedding {len(texts)} texts: per-item transformers (sentence-transformers-style) {t_item:.2f} s "
        f"({len(texts) / t_item:.0f} texts/s); per-item fastembed {t_fe_item:.2f} s; "
        f"batched fastembed {t_fe_batch:.2f} s ({len(texts) / t_fe_batch:.0f} texts/s) "
        f"-> {t_item / t_fe_batch:.1f}x"
    )
    print(
        f"embedding_accuracy on the batch (exact matches skipped, distinct texts once): {t_acc:.3f} s "
        f"-> {t_item / t_acc:.1f}x vs per-item encoding of every text"
    )


if __name__ == "__main__":
    main()
