"""The MediX-R1 training prompt: a format instruction (modality tag, reasoning block, answer block) in chat form.

Text models get the instruction as the system message. Vision models get it at the start of the user turn with
the image placeholders right before the question, as in the paper.
"""

from __future__ import annotations

from typing import Any

from medix_r1._native import MODALITY_TAGS

__all__ = ["build_prompt", "format_instruction"]


def format_instruction(reasoning_tag: str = "think") -> str:
    """The built-in instruction telling the policy what to write, with a worked example of the shape."""
    tags = ", ".join(f"<{t}>" for t in MODALITY_TAGS)
    r = reasoning_tag
    return (
        "You are a medical assistant that reasons before answering. Reply in exactly three parts and nothing "
        "else:\n"
        f"1. the imaging modality as one tag from this list: {tags} (only the tag);\n"
        f"2. your medical reasoning inside <{r}> </{r}>;\n"
        "3. the final answer, a short phrase, inside <answer> </answer>.\n"
        "Write no text outside these tags. Example:\n"
        f"<X_RAY><{r}>The lobar opacity with air bronchograms and fever point to infection.</{r}>"
        "<answer>Pneumonia</answer>"
    )


def build_prompt(
    problem: str, n_images: int = 0, *, vision: bool = False, reasoning_tag: str = "think", system_prompt: str = ""
) -> list[dict[str, Any]]:
    """Chat messages for one item. For vision models the content is structured, with one image placeholder per
    image (TRL fills them with the row's ``images``)."""
    instruction = system_prompt or format_instruction(reasoning_tag)
    if not vision:
        return [{"role": "system", "content": instruction}, {"role": "user", "content": problem}]
    content: list[dict[str, Any]] = [{"type": "text", "text": instruction + "\n\n"}]
    content += [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": problem})
    return [{"role": "user", "content": content}]
