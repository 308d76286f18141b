"""Embedding reward: ONNX export, fastembed loading offline, cosine accuracy (real all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from medix_r1.embed import (
    EmbedConfig,
    FastEmbedEmbedder,
    SentenceTransformerEmbedder,
    embedding_accuracy,
    make_embedder,
    read_manifest,
)
from medix_r1.errors import MissingModelError

pytestmark = pytest.mark.slow


class CountingEmbedder:
    """Wraps a real embedder and records what it was asked to embed."""

    def __init__(self, inner):
        self.inner, self.calls, self.name = inner, [], "counting"

    def embed(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def fe(minilm_onnx_dir):
    return FastEmbedEmbedder(minilm_onnx_dir, batch_size=8)


def _torch_reference(hf_dir, texts):
    """sentence-transformers' recipe (mean pooling over the mask, L2) in plain transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(hf_dir), local_files_only=True).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    v = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(v, dim=1).numpy()


def test_export_manifest_and_files(minilm_onnx_dir):
    m = read_manifest(minilm_onnx_dir)
    assert m["pooling"] == "mean" and m["dim"] == 384 and m["max_length"] == 256
    assert m["inputs"][:2] == ["input_ids", "attention_mask"]
    for name in ("model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json", "vocab.txt"):
        assert (minilm_onnx_dir / name).is_file()
    assert json.loads((minilm_onnx_dir / "tokenizer_config.json").read_text())["model_max_length"] == 256


def test_fastembed_matches_torch(fe, minilm_hf_dir):
    texts = ["Right lower lobe pneumonia", "normal chest radiograph", "T2 hyperintense lesion in the liver"]
    got = fe.embed(texts)
    ref = _torch_reference(minilm_hf_dir, texts)
    assert got.dtype == np.float32 and got.shape == (3, 384)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_unit_norm_identity_and_ordering(fe):
    v = fe.embed(["pneumonia", "pneumonia", "lung infection", "fracture of the left femur"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[2]) > float(v[0] @ v[3])  # a paraphrase is closer than an unrelated finding
    assert fe.embed([]).shape == (0, 384)


def test_batch_equals_per_item(fe):
    texts = ["MRI", "acute appendicitis", "a much longer answer about bilateral hilar lymphadenopathy " * 3]
    batched = fe.embed(texts)
    single = np.stack([fe.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_accuracy_threshold_soft_and_exact_match(fe):
    answers = ["pneumonia", "lung infection", "fractured femur", "pneumonia"]
    gts = ["pneumonia", "pneumonia", "pneumonia", "Pneumonia"]
    soft = embedding_accuracy(fe, answers, gts, soft=True)
    assert soft[0] == 1.0
    assert 0.0 <= soft[2] < soft[1] < 1.0
    hard = embedding_accuracy(fe, answers, gts, threshold=0.8)
    assert set(hard.tolist()) <= {0.0, 1.0} and hard[0] == 1.0 and hard[2] == 0.0
    cut = float(soft[1])  # thresholding at a pair's own cosine counts it (>=)
    assert embedding_accuracy(fe, answers[1:2], gts[1:2], threshold=cut - 1e-6)[0] == 1.0
    assert embedding_accuracy(fe, answers[1:2], gts[1:2], threshold=min(cut + 1e-3, 1.0))[0] == 0.0


def test_accuracy_embeds_each_distinct_text_once(fe):
    spy = CountingEmbedder(fe)
    answers = ["pneumonia", "lung infection", "lung infection", "edema", "pneumonia"]
    gts = ["pneumonia", "pneumonia", "pneumonia", "pneumonia", "pulmonary edema"]
    embedding_accuracy(spy, answers, gts)
    assert len(spy.calls) == 1
    # the exact match (pair 0) is not embedded; every other distinct text exactly once
    assert sorted(spy.calls[0]) == sorted({"lung infection", "pneumonia", "edema", "pulmonary edema"})
    spy.calls.clear()
    assert embedding_accuracy(spy, ["a", "b"], ["a", "b"]).tolist() == [1.0, 1.0]
    assert spy.calls == []


def test_make_embedder_and_config(minilm_onnx_dir):
    e = make_embedder(EmbedConfig(model=str(minilm_onnx_dir), threads=1))
    assert isinstance(e, FastEmbedEmbedder) and e.dim == 384
    with pytest.raises(ValueError, match="backend"):
        EmbedConfig(backend="bogus")
    with pytest.raises(ValueError, match="threshold"):
        EmbedConfig(threshold=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        EmbedConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown"):
        EmbedConfig.from_dict({"modle": "x"})


def test_missing_and_unexported_dirs(tmp_path, minilm_hf_dir):
    with pytest.raises(MissingModelError, match="medix embed export"):
        FastEmbedEmbedder(tmp_path / "nope")
    with pytest.raises(MissingModelError, match="Hugging Face checkpoint"):
        FastEmbedEmbedder(minilm_hf_dir)


def test_sentence_transformers_missing_is_clear(minilm_hf_dir):
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install sentence-transformers"):
            SentenceTransformerEmbedder(minilm_hf_dir)
    else:
        v = SentenceTransformerEmbedder(minilm_hf_dir).embed(["pneumonia"])
        assert v.shape == (1, 384)


def test_load_is_offline_and_import_is_light(minilm_onnx_dir, tmp_path):
    # A fresh interpreter with the network unusable (proxy to a closed port) and no fastembed cache.
    code = (
        "import sys, medix_r1.embed as E\n"
        "assert 'fastembed' not in sys.modules and 'torch' not in sys.modules\n"
        f"e = E.FastEmbedEmbedder({str(minilm_onnx_dir)!r})\n"
        "print(e.embed(['x']).shape)\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "FASTEMBED_CACHE_PATH": str(tmp_path / "fe-cache"),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1, 384)" in out.stdout
    assert not (tmp_path / "fe-cache").exists()


def test_export_cli(minilm_hf_dir, tmp_path, capsys):
    from medix_r1.cli import main

    assert main(["embed", "export", "--from", str(tmp_path / "missing"), "--to", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err
    out = tmp_path / "onnx"
    assert main(["embed", "export", "--from", str(minilm_hf_dir), "--to", str(out)]) == 0
    assert "--embed-model" in capsys.readouterr().err
    assert read_manifest(out)["dim"] == 384
    assert not (tmp_path / "onnx.tmp-export").exists()


def _linked_export(src, dst, but):
    """An exported directory of links to ``src``'s files but ``but``, which the test then writes itself."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != but:
            (dst / f.name).symlink_to(f)
    return dst


def test_corrupt_export_is_a_one_line_error(minilm_onnx_dir, tmp_path, capsys):
    from medix_r1.cli import main
    from medix_r1.errors import DataError

    d = _linked_export(minilm_onnx_dir, tmp_path / "onnx", "model.onnx")
    (d / "model.onnx").write_bytes(b"this is not an ONNX model" * 40)
    with pytest.raises(DataError, match=r"model\.onnx.*not a valid ONNX model.*medix embed export") as e:
        FastEmbedEmbedder(d)
    assert e.value.path == str(d / "model.onnx")

    inp = tmp_path / "in.jsonl"
    inp.write_text('{"response": "<answer>a</answer>", "ground_truth": "a"}\n')
    out = tmp_path / "out.jsonl"
    args = ["reward", "score", "--input", str(inp), "--output", str(out), "--embed-model", str(d)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and str(d / "model.onnx") in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "manifest, says",
    [
        (b"\x00\x01garbage", "corrupt embedding manifest, not JSON"),
        (b"[1, 2]", "corrupt embedding manifest (not a JSON object)"),
        (b'{"pooling": "max", "model_file": "../../model.onnx"}', "dim must be a positive integer"),
    ],
)
def test_corrupt_manifest_is_a_one_line_error(minilm_onnx_dir, tmp_path, capsys, manifest, says):
    from medix_r1.cli import main
    from medix_r1.errors import DataError

    d = _linked_export(minilm_onnx_dir, tmp_path / "onnx", "medix_embed.json")
    (d / "medix_embed.json").write_bytes(manifest)
    with pytest.raises(DataError, match="medix embed export") as e:
        FastEmbedEmbedder(d)
    assert e.value.path == str(d / "medix_embed.json") and says in str(e.value)
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"response": "<answer>a</answer>", "ground_truth": "a"}\n')
    args = ["reward", "score", "--input", str(inp), "--output", str(tmp_path / "o.jsonl"), "--embed-model"]
    assert main([*args, str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "medix_embed.json" in err and says in err, err
    (d / "medix_embed.json").unlink()
    with pytest.raises(MissingModelError, match=r"no medix_embed\.json"):
        FastEmbedEmbedder(d)


def test_an_onnx_graph_of_another_shape_is_a_one_line_error(minilm_onnx_dir, tmp_path):
    import onnx
    from medix_r1.errors import DataError
    from onnx import TensorProto, helper

    d = _linked_export(minilm_onnx_dir, tmp_path / "onnx", "model.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 384])
    y = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [None, 384])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["last_hidden_state"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "model.onnx")
    e = FastEmbedEmbedder(d)  # it loads: only running it shows it is not the export
    with pytest.raises(DataError, match=r"does not run as its manifest describes.*medix embed export"):
        e.embed(["pneumonia"])
