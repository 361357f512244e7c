"""Prompt templates T1–T5 and FT/CoT target formatting.

The ALERT paper evaluates every task under five templates but does not publish their wording;
ours are built from NIV2's fields (the Tk-Instruct layout: "Definition:", "Input:", "Output:",
demonstrations separated by a blank line). With `D` the task definition, `(x_i, y_i, e_i)` the
first two positive examples (input, output, explanation) and `x` the instance input:

    T1  definition only                   "Definition: D\\n\\nInput: x\\nOutput:"
    T2  definition + two examples         "Definition: D\\n\\n"
                                          "Input: x_1\\nOutput: y_1\\n\\n"
                                          "Input: x_2\\nOutput: y_2\\n\\n"
                                          "Input: x\\nOutput:"
    T3  two examples, no definition       T2 without the "Definition: D\\n\\n" block
    T4  definition + explained examples   T2 with "\\nExplanation: e_i" after each "Output: y_i"
                                          (NIV2 writes explanations to justify the output, so they
                                          follow it)
    T5  plain question/answer             "Question: x\\nAnswer:"

A task with fewer than two demonstrations shows the ones it has. Prompts end right after the
colon; targets carry no leading space and are joined to their prompt with
`PROMPT_TARGET_SEPARATOR`, so the same rule holds for training and evaluation.

Targets: FT is the answer alone; CoT is `<rationale> The answer is <answer>.`. The answer is
`example.answer`, falling back to `references[0]`. `extract_answer` inverts the CoT form, so a
generation is scored on the answer it states. Finetuning prompts use T5 (`FINETUNE_TEMPLATE`).

Prompting modes (OPT-R's zero-shot / few-shot / few-shot with explanations, `eval.prompting`): few-shot
prompts insert solved instances of the same task right before the evaluated one, in the template's own
instance format ("Input: …\nOutput: y" or, for T5, "Question: …\nAnswer: y"); with explanations `y` is the
CoT target `<rationale> The answer is <answer>.` (the bare answer statement when the shot has no rationale).
Zero-shot adds nothing: a template's own NIV2 demonstrations (T2–T4) are part of the template.
"""
from __future__ import annotations

from typing import Literal, Sequence

from alert_jax.data.example import Demonstration, Example, Task
from alert_jax.errors import AlertJaxError

TEMPLATES: tuple[str, ...] = ("T1", "T2", "T3", "T4", "T5")
FINETUNE_TEMPLATE = "T5"
PROMPT_TARGET_SEPARATOR = " "
ANSWER_CUE = "The answer is"
NUM_DEMONSTRATIONS = 2


class TemplateError(AlertJaxError):
    """An unknown template or target variant was requested."""


def _demonstration_block(demo: Demonstration, with_explanation: bool) -> str:
    block = f"Input: {demo.input}\nOutput: {demo.output}"
    if with_explanation:
        block += f"\nExplanation: {demo.explanation}"
    return block


def _instance_block(template: str, example: Example) -> str:
    """The evaluated (or shown) instance in the template's format, ending right after the colon."""
    return f"Question: {example.input}\nAnswer:" if template == "T5" else f"Input: {example.input}\nOutput:"


def render_prompt(template: str, task: Task, example: Example, shots: Sequence[Example] = (),
                  explained: bool = False) -> str:
    """The prompt for `example` under `template` (one of `TEMPLATES`), after the solved `shots` (few-shot
    prompting; their outputs are CoT targets when `explained`)."""
    if template not in TEMPLATES:
        raise TemplateError(f"unknown template {template!r}; expected one of {', '.join(TEMPLATES)}")
    blocks = [] if template in ("T3", "T5") else [f"Definition: {task.definition}"]
    if template in ("T2", "T3", "T4"):
        demos = task.demonstrations[:NUM_DEMONSTRATIONS]
        blocks += [_demonstration_block(d, with_explanation=template == "T4") for d in demos]
    blocks += [f"{_instance_block(template, shot)}{PROMPT_TARGET_SEPARATOR}"
               f"{format_target(shot, 'cot') if explained else answer_of(shot)}" for shot in shots]
    blocks.append(_instance_block(template, example))
    return "\n\n".join(blocks)


def answer_of(example: Example) -> str:
    """The example's short answer: `answer` if set, else the first reference."""
    if example.answer is not None:
        return example.answer.strip()
    if not example.references:
        raise TemplateError(f"example {example.id or example.input[:40]!r} has no answer or references")
    return example.references[0].strip()


def format_target(example: Example, variant: Literal["ft", "cot"]) -> str:
    """The training target: the answer (FT) or `<rationale> The answer is <answer>.` (CoT).

    An example without a rationale gets the bare `The answer is <answer>.` under CoT, so the
    CoT model's dev-set perplexity can be measured on NIV2 tasks, which carry no rationales.
    """
    answer = answer_of(example)
    if variant == "ft":
        return answer
    if variant != "cot":
        raise TemplateError(f"unknown target variant {variant!r}; expected 'ft' or 'cot'")
    stated = f"{ANSWER_CUE} {answer}."
    rationale = (example.rationale or "").strip()
    return f"{rationale} {stated}" if rationale else stated


def extract_answer(generation: str) -> str:
    """The answer a generation states: text after the last "The answer is", minus one final period.

    Without the cue (FT models), the whole stripped generation is the answer.
    """
    text = generation.strip()
    if ANSWER_CUE in text:
        text = text.rsplit(ANSWER_CUE, 1)[1].strip()
        if text.endswith("."):
            text = text[:-1]
    return text


def task_pairs(tasks: Sequence[Task], variant: str) -> list[tuple[str, str]]:
    """(prompt, target) for every instance, prompts in the finetuning template: the text a run trains on."""
    return [(render_prompt(FINETUNE_TEMPLATE, task, ex), format_target(ex, variant))
            for task in tasks for ex in task.examples]
