"""Stage 1: greedy answers of the evaluated model for every sample, appended as they come and resumable.

Three kinds of policy: a local GGUF run in-process by llama.cpp (``--mmproj`` for a multimodal one), a local
transformers checkpoint (optionally with a LoRA adapter from training, via peft) and an OpenAI-compatible
server. The image (if any) and the question go in one user message, as in the paper.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medix_r1.errors import BackendError, check_model_path
from medix_r1.eval.io import append_row, check_meta, open_append, read_rows
from medix_r1.eval.tasks import Sample

__all__ = [
    "GGUFPolicy",
    "GenerateResult",
    "ImageNotSupportedError",
    "RemotePolicy",
    "TransformersPolicy",
    "generate_task",
    "open_policy",
]

_HOW_CKPT = "Pass a local .gguf file, a transformers checkpoint directory, or --url URL --model-name NAME"


class ImageNotSupportedError(ValueError):
    """A text-only model was asked to answer a task with images."""


@dataclass
class GenerateResult:
    task: str
    total: int
    done_before: int
    generated: int
    failed: int
    errors: list[str]


def image_data_uri(image: Any) -> str:
    """A ``data:image/png;base64,...`` URI of a sample's image (paths, bytes, DICOM and PIL images)."""
    from medix_r1.media import load_image

    img = load_image(image, Path.cwd())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(sample: Sample) -> list[dict]:
    """One user message: the image part first (when there is one), then the question."""
    if sample.image is None:
        return [{"role": "user", "content": sample.prompt}]
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_uri(sample.image)}},
                {"type": "text", "text": sample.prompt},
            ],
        }
    ]


class GGUFPolicy:
    """A local GGUF through llama.cpp (a :class:`~medix_r1.llm.LlamaCppChat`); images only with a multimodal
    projector (``mmproj``)."""

    concurrency = 1

    def __init__(self, chat: Any) -> None:
        self.chat = chat
        self.name = chat.file_name
        self.supports_images = chat.supports_images
        self.why_no_images = (
            f"{self.name} is a text-only GGUF here: pass its multimodal projector with --mmproj FILE "
            "(an mmproj-*.gguf) to answer image tasks"
        )

    def answer(self, samples: Sequence[Sample], max_new_tokens: int) -> list[str | Exception]:
        out: list[str | Exception] = []
        for s in samples:
            try:
                out.append(self.chat.chat(openai_messages(s), max_tokens=max_new_tokens, temperature=0.0))
            except (BackendError, ValueError) as e:
                out.append(e)
        return out


class RemotePolicy:
    """An OpenAI-compatible server; requests for several samples are in flight at once."""

    supports_images = True  # the server decides; a text-only one answers with an error for image items
    why_no_images = ""

    def __init__(self, chat: Any) -> None:
        self.chat = chat  # a medix_r1.llm.OpenAIChat
        self.name = chat.model
        self.concurrency = chat.concurrency

    def answer(self, samples: Sequence[Sample], max_new_tokens: int) -> list[str | Exception]:
        msgs = []
        bad: dict[int, Exception] = {}
        for i, s in enumerate(samples):
            try:
                msgs.append(openai_messages(s))
            except ValueError as e:
                bad[i] = e
                msgs.append([{"role": "user", "content": s.prompt}])
        replies = self.chat.chat_many(msgs, max_tokens=max_new_tokens, temperature=0.0)
        return [bad.get(i, r) for i, r in enumerate(replies)]


class TransformersPolicy:
    """A local transformers checkpoint (a language model, or a vision-language model with an image
    processor), optionally with a peft LoRA adapter; greedy ``generate`` one sample at a time."""

    concurrency = 1

    def __init__(
        self, path: str | Path, *, adapter: str | Path | None = None, n_threads: int | None = None
    ) -> None:
        from medix_r1.media import is_vision_checkpoint

        p = check_model_path(path, "evaluated model (transformers checkpoint)", _HOW_CKPT, directory=True)
        import torch
        import transformers

        if n_threads:
            torch.set_num_threads(n_threads)
        self.name = p.name + (f"+{Path(adapter).name}" if adapter else "")
        self.vision = is_vision_checkpoint(p)
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model: Any  # a transformers model or a PeftModel around one
        if self.vision:
            self.processor = transformers.AutoProcessor.from_pretrained(str(p))
            self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
            model = transformers.AutoModelForImageTextToText.from_pretrained(str(p), dtype=dtype)
        else:
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(p))
            model = transformers.AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype)
        if adapter:
            a = check_model_path(
                adapter, "LoRA adapter", "Pass the adapter directory saved by `medix train`", directory=True
            )
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(a))
        self.model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.supports_images = self.vision and getattr(self.processor, "image_processor", None) is not None
        self.why_no_images = (
            f"{self.name} is a text-only checkpoint (no vision tower in config.json or no image processor); "
            "evaluate image tasks with a vision-language checkpoint"
        )

    def _inputs(self, s: Sample) -> Any:
        if s.image is not None:
            from medix_r1.media import load_image

            msgs = [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": load_image(s.image, Path.cwd())},
                        {"type": "text", "text": s.prompt},
                    ],
                }
            ]
            assert self.processor is not None
            return self.processor.apply_chat_template(
                msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        msgs = [{"role": "user", "content": s.prompt}]
        if self.processor is not None:
            msgs = [{"role": "user", "content": [{"type": "text", "text": s.prompt}]}]
            return self.processor.apply_chat_template(
                msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        return self.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )

    def answer(self, samples: Sequence[Sample], max_new_tokens: int) -> list[str | Exception]:
        import torch

        out: list[str | Exception] = []
        for s in samples:
            try:
                inputs = self._inputs(s).to(self.model.device)
            except ValueError as e:
                out.append(e)
                continue
            with torch.inference_mode():
                ids = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
            new = ids[0, inputs["input_ids"].shape[1] :]
            out.append(self.tokenizer.decode(new, skip_special_tokens=True))
        return out


def open_policy(
    model: str | None = None,
    *,
    url: str | None = None,
    model_name: str | None = None,
    mmproj: str | None = None,
    adapter: str | None = None,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    concurrency: int | None = None,
    chat_format: str | None = None,
    api_key_env: str | None = None,
) -> Any:
    """The policy for ``model`` (a .gguf file or a checkpoint directory) or ``url`` + ``model_name``; GGUF and
    server policies run on the backend :func:`medix_r1.llm.open_backend` builds. Options left None take
    BackendConfig's declared defaults."""
    from medix_r1.llm import BackendConfig, open_backend

    given: dict[str, Any] = {
        k: v
        for k, v in dict(
            n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, concurrency=concurrency
        ).items()
        if v is not None
    }

    if url:
        if adapter or mmproj:
            raise ValueError("--adapter and --mmproj are for local models, not --url")
        name = model_name or model
        if not name:
            raise ValueError("--url needs --model-name (the model id on that server)")
        remote = {k: v for k, v in given.items() if k == "concurrency"}
        cfg = BackendConfig(url=url, name=name, timeout=600.0, api_key_env=api_key_env, **remote)
        return RemotePolicy(open_backend(cfg))
    if not model:
        raise ValueError("give --model (a .gguf file or a checkpoint directory) or --url with --model-name")
    if model.endswith(".gguf"):
        if adapter:
            raise ValueError("--adapter needs a transformers checkpoint; merge the LoRA before converting")
        local = {k: v for k, v in given.items() if k != "concurrency"}
        cfg = BackendConfig(
            model=model,
            **local,
            chat_format=chat_format,
            mmproj=None if mmproj is None else str(mmproj),
        )
        return GGUFPolicy(open_backend(cfg))
    if mmproj:
        raise ValueError("--mmproj goes with a .gguf model")
    p = Path(model).expanduser()
    if p.is_file():
        raise ValueError(f"{model}: not a .gguf file nor a checkpoint directory")
    return TransformersPolicy(p, adapter=adapter, n_threads=n_threads)


def _row(s: Sample, response: str, policy: Any, max_new_tokens: int) -> dict:
    return {
        "id": s.id,
        "task": s.task,
        "type": s.type,
        "question": s.question,
        "prompt": s.prompt,
        "choices": s.choices,
        "answer_label": s.answer_label,
        "reference": s.reference,
        "explanation": s.explanation,
        "image": s.image_ref,
        "response": response,
        "model": policy.name,
        "max_new_tokens": max_new_tokens,
    }


def generate_task(
    samples: Sequence[Sample],
    policy: Any,
    out_dir: str | Path,
    *,
    task: str,
    max_new_tokens: int = 2048,
    progress: bool = True,
) -> GenerateResult:
    """Answer every sample not yet in ``out_dir/<task>/generations.jsonl``, appending each answer as it
    comes. A sample the backend could not answer is not written (a rerun retries it) and is counted."""
    d = Path(out_dir) / task
    path = d / "generations.jsonl"
    if any(s.image is not None for s in samples) and not policy.supports_images:
        raise ImageNotSupportedError(f"task {task!r} has images, but {policy.why_no_images}")
    check_meta(d / "generate.json", {"model": policy.name, "max_new_tokens": max_new_tokens}, "answers")
    done = {r.get("id") for r in read_rows(path)}
    todo = [s for s in samples if s.id not in done]
    errors: list[str] = []
    generated = 0
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=len(samples), initial=len(samples) - len(todo), desc=f"generate {task}", file=sys.stderr
        )
    with open_append(path) as f:
        step = max(1, int(getattr(policy, "concurrency", 1)))
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            for s, r in zip(chunk, policy.answer(chunk, max_new_tokens)):
                if isinstance(r, Exception):
                    errors.append(f"{s.id}: {r}")
                    continue
                append_row(f, _row(s, r, policy, max_new_tokens))
                generated += 1
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return GenerateResult(task, len(samples), len(samples) - len(todo), generated, len(errors), errors)
