"""A tiny vision-language model assembled offline from a small text model, for tests and demos.

The language model is a real small checkpoint (SmolLM2-135M-Instruct, converted from its GGUF); the vision
tower is a **randomly initialised** few-layer SigLIP encoder at a small image size with no image splitting, so
a CPU training step takes seconds. The model cannot actually see: its image features are noise that the
language model was never trained to read. It exists to exercise the vision-language plumbing end to end
(processor, image tokens, chat template, ``AutoModelForImageTextToText``, GRPO with images, evaluation on
image tasks).

Two architectures: ``idefics3`` (SmolVLM's, the paper's small backbone family) and ``llava`` (a SigLIP tower
and an MLP projector). transformers 5.17 marks Idefics3's PIL image processor as needing torchvision (its
module's docstrings mention ``TorchvisionBackend``, which the lazy-import scan reads as a requirement), so
``AutoProcessor`` cannot load an Idefics3 / SmolVLM checkpoint without torchvision installed;
``family="auto"`` builds Idefics3 when torchvision is importable and LLaVA otherwise.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from medix_r1._fsutil import atomic_dir
from medix_r1.errors import check_model_path

__all__ = ["CHAT_TEMPLATE", "FAMILIES", "build_tiny_vlm", "default_family"]

FAMILIES = ("idefics3", "llava")
_MARKER = "medix_tiny_vlm.json"
_FORMAT = 1  # bump when the assembly changes, so cached models are rebuilt

# ChatML, as the SmolLM2 text weights were instruction-tuned on (real SmolVLM checkpoints use
# "User:/Assistant:" turns instead), with structured content and one <image> placeholder per image part; the
# processor expands each placeholder into the image's token sequence.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif part['type'] == 'image' -%}{{ '<image>' }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Idefics3's image markup; the row/column tags are only used with image splitting but must exist as tokens.
_IDEFICS3_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *[f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)],
]


def default_family() -> str:
    """``idefics3`` where transformers can load its processor (torchvision installed), else ``llava``."""
    return "idefics3" if importlib.util.find_spec("torchvision") is not None else "llava"


def _text_checkpoint(src: Path) -> Path:
    how = "Pass a .gguf file or a transformers checkpoint directory"
    if src.suffix.lower() == ".gguf":
        from medix_r1.train.convert import gguf_to_checkpoint

        check_model_path(src, "text model (GGUF)", how)
        return gguf_to_checkpoint(src)
    return check_model_path(src, "text model", how, directory=True)


def _vision_config(image_size: int, patch_size: int, hidden: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def _idefics3(tok: Any, text_config: Any, vision: dict[str, Any], scale_factor: int) -> tuple[Any, Any]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3 import Idefics3Processor

    # From its own module: transformers' lazy package marks the PIL processor as needing torchvision.
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    size = vision["image_size"]
    config = Idefics3Config(
        text_config=text_config.to_dict(),
        vision_config=vision,
        scale_factor=scale_factor,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            do_image_splitting=False, size={"longest_edge": size}, max_image_size={"longest_edge": size}
        ),
        tokenizer=tok,
        image_seq_len=((size // vision["patch_size"]) // scale_factor) ** 2,
        chat_template=CHAT_TEMPLATE,
    )
    return Idefics3ForConditionalGeneration(config), processor


def _llava(tok: Any, text_config: Any, vision: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    size, patch = vision["image_size"], vision["patch_size"]
    config = LlavaConfig(
        text_config=text_config.to_dict(),
        vision_config={"model_type": "siglip_vision_model", **vision},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(size // patch) ** 2,
        vision_feature_select_strategy="full",  # SigLIP has no CLS token to drop
        vision_feature_layer=-1,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": size, "width": size}),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
    )
    return LlavaForConditionalGeneration(config), processor


def build_tiny_vlm(
    text_checkpoint_or_gguf: str | Path,
    out_dir: str | Path,
    *,
    family: str = "auto",
    image_size: int = 64,
    patch_size: int | None = None,
    vision_hidden_size: int = 64,
    vision_layers: int = 2,
    vision_heads: int = 2,
    scale_factor: int = 2,
    seed: int = 0,
) -> Path:
    """Assemble a vision-language model from a small Llama-family text model and a random SigLIP tower into
    ``out_dir`` (``config.json``, safetensors, processor with chat template); returns ``out_dir``.

    A ``.gguf`` is converted to a plain checkpoint first (cached, see :mod:`medix_r1.train.convert`). The
    result loads with ``AutoModelForImageTextToText`` and ``AutoProcessor`` (``local_files_only``).
    Deterministic for a given ``seed``; a second call with the same inputs reuses the directory. Each image
    becomes 16 tokens with the defaults (``patch_size`` 8 and a 2x pixel shuffle for Idefics3, ``patch_size``
    16 for LLaVA).
    """
    family = default_family() if family == "auto" else family
    if family not in FAMILIES:
        raise ValueError(f"family must be auto or one of {', '.join(FAMILIES)}, got {family!r}")
    patch = patch_size or (8 if family == "idefics3" else 16)
    grid = image_size // patch
    if image_size % patch:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch})")
    if family == "idefics3" and grid % scale_factor:
        raise ValueError(f"the patch grid ({grid}) must be a multiple of scale_factor ({scale_factor})")
    if vision_hidden_size % vision_heads:
        raise ValueError(f"vision_hidden_size ({vision_hidden_size}) must be a multiple of vision_heads")
    text_dir = _text_checkpoint(Path(text_checkpoint_or_gguf).expanduser())
    out = Path(out_dir).expanduser()
    vision = _vision_config(image_size, patch, vision_hidden_size, vision_layers, vision_heads)
    recipe = {
        "format": _FORMAT,
        "family": family,
        "text_model": str(text_dir),
        "text_weights_size": sum(p.stat().st_size for p in text_dir.glob("*.safetensors")),
        "vision": vision,
        "scale_factor": scale_factor if family == "idefics3" else None,
        "seed": seed,
    }
    marker = out / _MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("recipe") == recipe:
                return out
        except ValueError:
            pass

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(text_dir), local_files_only=True)
    tok.add_special_tokens(
        {"additional_special_tokens": _IDEFICS3_TOKENS if family == "idefics3" else ["<image>"]}
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    text = AutoModelForCausalLM.from_pretrained(str(text_dir), dtype=torch.float32, local_files_only=True)
    # The new special tokens need embedding rows (drawn around the mean embedding; never emitted).
    text.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    torch.manual_seed(seed)
    if family == "idefics3":
        model, processor = _idefics3(tok, text.config, vision, scale_factor)
        lm = model.model.text_model
    else:
        model, processor = _llava(tok, text.config, vision)
        lm = model.model.language_model
    lm.load_state_dict(text.model.state_dict(), strict=True)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    else:
        model.lm_head.load_state_dict(text.lm_head.state_dict())
    gen = text.generation_config
    gen.eos_token_id = tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    model.generation_config = gen
    model.eval()

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        note = "the vision tower is randomly initialised: this model cannot see; it exists to test plumbing"
        (tmp / _MARKER).write_text(json.dumps({"recipe": recipe, "note": note}, indent=1))
    return out
