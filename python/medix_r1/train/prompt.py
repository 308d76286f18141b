"""The MediX-R1 training prompt: a format instruction (modality tag, reasoning block, answer block) in chat
form.

Text models get the instruction as the system message. Vision models get it at the start of the user turn with
the image placeholders right before the question, as in the paper.
"""

from __future__ import annotations

from typing import Any

from medix_r1._native import MODALITY_TAGS

__all__ = ["build_prompt", "compact_instruction", "format_instruction"]


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


def compact_instruction(reasoning_tag: str = "think") -> str:
    """The same three-part format in about half the tokens (no worked example of its own): for runs where the
    prompt's length dominates the step time, e.g. ``medix demo`` on a CPU, whose few-shot turns show the
    shape."""
    r = reasoning_tag
    return (
        f"Reply only as <TAG><{r}>one short sentence of reasoning</{r}><answer>short answer</answer>, where "
        f"TAG is the imaging modality, one of: {' '.join(MODALITY_TAGS)}."
    )


# Worked examples shown as earlier chat turns (``data.few_shot``): tiny policies copy a demonstrated shape far
# more readily than they follow a description of it.
_SHOTS = (
    (
        "A chest radiograph shows a rounded opacity with an air-fluid level in the right upper lobe of "
        "a patient "
        "with fever and foul sputum. What is the diagnosis?",
        "<X_RAY><{r}>A cavity with an air-fluid level and foul sputum suggests an infected cavity.</{r}>"
        "<answer>Lung abscess</answer>",
    ),
    (
        "An abdominal CT shows a pancreas with peripancreatic fat stranding in a patient with "
        "epigastric pain and "
        "raised lipase. What is the diagnosis?",
        "<CT_SCAN><{r}>Pain, raised lipase and peripancreatic inflammation fit pancreatic inflammation.</{r}>"
        "<answer>Acute pancreatitis</answer>",
    ),
)


def build_prompt(
    problem: str,
    n_images: int = 0,
    *,
    vision: bool = False,
    reasoning_tag: str = "think",
    system_prompt: str = "",
    few_shot: int = 0,
) -> list[dict[str, Any]]:
    """Chat messages for one item. For vision models the content is structured, with one image placeholder per
    image (TRL fills them with the row's ``images``). ``few_shot`` worked examples precede the question."""
    instruction = system_prompt or format_instruction(reasoning_tag)
    shots: list[dict[str, Any]] = []
    for q, a in _SHOTS[:few_shot]:
        q_msg: Any = q if not vision else [{"type": "text", "text": q}]
        a_msg: Any = (
            a.format(r=reasoning_tag) if not vision else [{"type": "text", "text": a.format(r=reasoning_tag)}]
        )
        shots += [{"role": "user", "content": q_msg}, {"role": "assistant", "content": a_msg}]
    if not vision:
        return [{"role": "system", "content": instruction}, *shots, {"role": "user", "content": problem}]
    content: list[dict[str, Any]] = [{"type": "text", "text": instruction + "\n\n"}]
    content += [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": problem})
    if shots:  # the instruction goes first, so it opens the first shot rather than the question
        shots[0] = {
            "role": "user",
            "content": [{"type": "text", "text": instruction + "\n\n"}, *shots[0]["content"]],
        }
        content = content[1:]
    return [*shots, {"role": "user", "content": content}]
