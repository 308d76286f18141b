"""The vision-language training path on CPU: a tiny VLM assembled offline (SmolLM2-135M text weights and a
small random SigLIP tower, see support/tinyvlm.py) trained for two GRPO steps on real images (pydicom's CT
and MR samples, as DICOM and as the bundled PNGs), and `medix data check` on that image dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import medix_r1.eval
import pytest
from medix_r1.cli import main

EVAL_IMAGES = Path(medix_r1.eval.__file__).parent / "data" / "images"  # the bundled demo_vlm images


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> Path:
    """Four rows in the authors' schema on real images: the CT and MR DICOM files and their PNG renderings."""
    from pydicom.data import get_testdata_file

    d = tmp_path_factory.mktemp("vlm_data")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), d / name.lower())
    for name in ("ct_small.png", "mr_small.png"):
        shutil.copy(EVAL_IMAGES / name, d / name)
    return _write_jsonl(
        d / "train.jsonl",
        [
            {
                "image": ["ct_small.dcm"],
                "problem": "Which imaging modality produced this image?",
                "solution": "<CT_SCAN> Computed tomography",
            },
            {
                "image": ["mr_small.dcm"],
                "problem": "Which imaging technique produced this image?",
                "solution": "<MRI_SCAN> Magnetic resonance imaging",
            },
            {
                "image": ["ct_small.png"],
                "problem": "Which bony structure lies in the centre of this image?",
                "solution": "<CT_SCAN> A vertebra",
            },
            {
                "image": ["mr_small.png"],
                "problem": "In which plane was this image acquired?",
                "solution": "<MRI_SCAN> Axial",
            },
        ],
    )


@pytest.fixture(scope="module")
def tiny_vlm(gguf_path: Path) -> Path:
    """Built once beside the test models (rebuilt when the recipe or the text weights change)."""
    from support.tinyvlm import build_tiny_vlm, default_family

    return build_tiny_vlm(gguf_path, gguf_path.parent / f"tiny-vlm-{default_family()}")


def test_data_check_accepts_images_and_reports_corrupt_ones(image_data: Path, tmp_path: Path, capsys):
    assert main(["data", "check", str(image_data)]) == 0
    assert "4 rows, 4 images: OK" in capsys.readouterr().out

    d = image_data.parent
    (tmp_path / "truncated.dcm").write_bytes((d / "ct_small.dcm").read_bytes()[:600])
    (tmp_path / "corrupt.png").write_bytes((d / "ct_small.png").read_bytes()[:100])
    rows = [json.loads(line) for line in image_data.read_text().splitlines()]
    rows = [{**r, "image": [str(d / r["image"][0])]} for r in rows]
    rows[1]["image"] = ["truncated.dcm"]
    rows[2]["image"] = ["corrupt.png"]
    bad = _write_jsonl(tmp_path / "bad.jsonl", rows)
    assert main(["data", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "row 2: image[0]: unreadable DICOM" in out
    assert "row 3: image[0]: unreadable image" in out and "corrupt.png" in out
    assert "row 1:" not in out and "row 4:" not in out
    assert "4 rows, 2 bad" in out

    # Training refuses the same rows, naming them, unless told to skip them.
    from medix_r1.train.config import load_config
    from medix_r1.train.data import DataError
    from medix_r1.train.trainer import prepare_rows

    with pytest.raises(DataError, match=r"(?s)2 problem\(s\) in 2 row\(s\).*row 2: image\[0\]"):
        prepare_rows(load_config(None, [f"--data.path={bad}"]), report=lambda s: None)
    said: list[str] = []
    kept, _ = prepare_rows(
        load_config(None, [f"--data.path={bad}", "--data.skip_bad=true"]), report=said.append
    )
    assert len(kept) == 2 and "skipping 2 bad row(s) of 4" in said[0]


@pytest.mark.slow
def test_tiny_vlm_loads_with_auto_classes_and_is_deterministic(
    tiny_vlm: Path, gguf_path: Path, tmp_path: Path
):
    import torch
    from medix_r1.media import is_vision_checkpoint, load_image
    from support.tinyvlm import build_tiny_vlm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(2)
    assert is_vision_checkpoint(tiny_vlm)
    proc = AutoProcessor.from_pretrained(str(tiny_vlm), local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_vlm), local_files_only=True)
    n_vision = sum(p.numel() for n, p in model.named_parameters() if "vision" in n)
    assert 0 < n_vision < 1_000_000  # a small random tower beside the 135M-parameter language model
    img = load_image(EVAL_IMAGES / "ct_small.png", tmp_path)
    msgs = [
        {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "Modality?"}]}
    ]
    inputs = proc.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    image_id = model.config.image_token_id
    assert int((inputs["input_ids"] == image_id).sum()) == 16 and "pixel_values" in inputs
    text = proc.tokenizer.decode(inputs["input_ids"][0])
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]

    # The same seed gives the same weights, byte for byte.
    again = build_tiny_vlm(gguf_path, tmp_path / "again")

    def digest(p: Path) -> str:
        return hashlib.sha256(b"".join(f.read_bytes() for f in sorted(p.glob("*.safetensors")))).hexdigest()

    assert digest(again) == digest(tiny_vlm)
    meta = json.loads((again / "medix_tiny_vlm.json").read_text())
    assert "randomly initialised" in meta["note"]


@pytest.mark.slow
def test_grpo_trains_on_images(tiny_vlm: Path, image_data: Path, gguf_path: Path, minilm_onnx_dir, tmp_path):
    import torch
    from medix_r1.train.config import load_config
    from medix_r1.train.grpo import MedixGRPOTrainer
    from medix_r1.train.trainer import run_training

    torch.set_num_threads(2)
    seen: list[dict] = []
    real = MedixGRPOTrainer._score_round

    def spy(self, inputs):
        out = real(self, inputs)
        seen.append({"keys": set(out[0]), "images": [len(x.get("images") or []) for x in inputs]})
        return out

    batches: list[dict] = []
    mp = pytest.MonkeyPatch()
    mp.setattr(MedixGRPOTrainer, "_score_round", spy)
    try:
        cfg = load_config(
            None,
            [
                f"--model.path={tiny_vlm}",
                f"--data.path={image_data}",
                "--algo.name=grpo",
                "--algo.num_generations=2",
                "--algo.max_completion_length=8",
                f"--train.output_dir={tmp_path / 'run'}",
                "--train.max_steps=2",
                "--train.prompts_per_step=1",
                "--train.threads=2",
                "--train.device=cpu",
                "--train.save_steps=1",
                f"--reward.judge.model={gguf_path}",
                "--reward.judge.n_threads=2",
                f"--reward.embed.model={minilm_onnx_dir}",
            ],
        )
        res = run_training(cfg, echo=None, on_batch=batches.append)
    finally:
        mp.undo()
    assert res["steps"] == 2
    assert (res["adapter"] / "adapter_config.json").is_file()
    from safetensors import safe_open

    with safe_open(str(res["adapter"] / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if "vision" in k]  # LoRA on the language model only
    assert (res["adapter"] / "processor_config.json").is_file()  # the processor travels with the adapter
    assert res["chart"] is not None and res["chart"].stat().st_size > 1000
    # Every generation round saw one image per completion and fed pixel values to the model.
    assert len(seen) == 2
    for s in seen:
        assert s["images"] == [1, 1] and "pixel_values" in s["keys"]
    rows = [json.loads(line) for line in res["metrics"].read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in ("overall", "format", "accuracy_llm", "accuracy_embed", "modality"):
            assert f"reward/{k}" in r
        assert "monitor/completion_length" in r and 0.0 <= r["monitor/degenerate_groups"] <= 1.0
    assert len(batches) == 2
    for b in batches:
        assert len(b["texts"]) == 2 and all({"format", "modality"} <= set(s) for s in b["scores"])
