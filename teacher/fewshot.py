"""The teacher's few-shot (ARC) self-edits: a prompt showing the task, and JSON parsed into the schema.

The teacher model sees a task's demonstrations (never its test outputs) and must answer with
one JSON object that validates as :class:`~protocol.fewshot.FewShotSelfEdit`. A completion that
is not such JSON (no object, bad JSON, a missing or unknown key, a value out of bounds) is
resampled, at most ``max_attempts`` samples in all for that slot; a slot that never validates
becomes a failed proposal (``self_edit`` None, with the last error), never an exception.

Where a backend has a structured-output mode (``complete_json``: vLLM's guided decoding, OpenAI's
``response_format`` JSON schema, an Anthropic tool whose input schema is the self-edit's), the
completions are asked for under :data:`SELF_EDIT_SCHEMA`; validation and the bounded resampling stay,
as the fallback for what the mode does not enforce. The transformers teacher has no such mode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from pydantic import ValidationError

from library.arc import pair_text
from protocol.canonical import short_id
from protocol.fewshot import ArcTask, FewShotProposal, FewShotSelfEdit
from protocol.fewshot_messages import FEWSHOT_FORMAT
from protocol.messages import SamplingConfig, SelfEdit
from teacher.backends import Completion, TeacherBackend

log = logging.getLogger(__name__)
Completions = list[list[Completion]]  # per prompt, its n completions
MAX_SHOWN_CHARS = 3000
"""Demonstrations shown to the teacher are cut to about this many characters."""
EXAMPLE_SELF_EDIT = FewShotSelfEdit(
    use_basic_augmentations=True,
    use_size_augmentations=False,
    use_chain_augmentations=False,
    use_repeat_augmentations=False,
    permute_colors=True,
    permute_examples=True,
    strategy="output_tokens",
    learning_rate=1e-4,
    num_train_epochs=2,
)
SELF_EDIT_SCHEMA: dict = FewShotSelfEdit.model_json_schema()
"""The JSON schema a self-edit must validate against: what a structured-output mode is given."""
PROMPT = """You are setting up test-time training for a small language model on a grid puzzle.
Each grid is written as rows of digits (one colour per digit). The model will be trained on
the puzzle's demonstrations and their augmented copies, then asked to solve a new input.

Demonstrations:
{demonstrations}
Choose the training configuration. Answer with one JSON object with exactly these keys:
"use_basic_augmentations" (true/false: rotations, flips, reflections, transpose, translation),
"use_size_augmentations" (true/false: doubled resolution, height or width),
"use_chain_augmentations" (true/false: a rotation or flip followed by a size change),
"use_repeat_augmentations" (true/false: grids tiled twice),
"permute_colors" (true/false), "permute_examples" (true/false),
"strategy" ("all_tokens" or "output_tokens"),
"learning_rate" (a number, e.g. 0.0001), "num_train_epochs" (an integer, e.g. 2).
Example: {example}
JSON:"""


def fewshot_prompt(task: ArcTask) -> str:
    """The instruction for ``task``: its demonstrations (cut to MAX_SHOWN_CHARS) and the JSON schema."""
    shown = ""
    for pair in task.train:
        text = pair_text(pair)
        if shown and len(shown) + len(text) > MAX_SHOWN_CHARS:
            shown += "(more demonstrations not shown)\n"
            break
        shown += text
    return PROMPT.format(demonstrations=shown, example=EXAMPLE_SELF_EDIT.model_dump_json())


def parse_self_edit(text: str) -> FewShotSelfEdit:
    """The first JSON object in ``text``, validated; ValueError says why it is not a self-edit."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the completion")
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    try:
        return FewShotSelfEdit.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the object"
        raise ValueError(f"{where}: {first['msg']} ({exc.error_count()} error(s))") from None


def completion_text(edit: FewShotSelfEdit) -> str:
    """The canonical completion for a self-edit: what the teacher is fine-tuned to write."""
    return edit.model_dump_json()


def as_self_edit(proposal: FewShotProposal) -> SelfEdit:
    """A valid proposal as the self-edit that crosses the wire: format 'fewshot', its canonical JSON as text."""
    if proposal.self_edit is None:
        raise ValueError(f"proposal {proposal.proposal_id} has no valid self-edit")
    return SelfEdit(
        self_edit_id=proposal.proposal_id,
        context_id=proposal.task_id,
        format=FEWSHOT_FORMAT,
        text=completion_text(proposal.self_edit),
        prompt=proposal.prompt,
        teacher_model=proposal.teacher_model,
        teacher_version=proposal.teacher_version,
    )


def sampler_for(backend: TeacherBackend, structured: bool) -> Callable[[list[str], int, SamplingConfig], Completions]:
    """``backend.complete``, or its structured-output mode under the self-edit's schema where it has one."""
    complete_json = getattr(backend, "complete_json", None) if structured else None
    if complete_json is None:
        return backend.complete
    return lambda prompts, n, sampling: complete_json(prompts, n, sampling, SELF_EDIT_SCHEMA)


def propose_fewshot(
    backend: TeacherBackend,
    tasks: list[ArcTask],
    n: int,
    sampling: SamplingConfig,
    teacher_version: str,
    max_attempts: int = 3,
    structured: bool = True,
) -> list[list[FewShotProposal]]:
    """``n`` proposals per task; each slot resampled until its JSON validates or ``max_attempts`` are spent.

    With ``structured``, a backend with a structured-output mode samples under the self-edit's schema.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    complete = sampler_for(backend, structured)
    prompts = [fewshot_prompt(task) for task in tasks]
    history: list[list[list[str]]] = [[[] for _ in range(n)] for _ in tasks]  # (task, slot, attempts)
    for attempt in range(max_attempts):
        pending = [[s for s in range(n) if not _valid_last(history[t][s])] for t in range(len(tasks))]
        wanted = [(t, slots) for t, slots in enumerate(pending) if slots]
        if not wanted:
            break
        seeded = sampling.model_copy(update={"seed": sampling.seed + attempt})
        for t, slots in wanted:  # one call per task: a backend samples n completions for one prompt together
            completions = complete([prompts[t]], len(slots), seeded)[0]
            for slot, completion in zip(slots, completions, strict=True):
                history[t][slot].append(completion.text)
    return [
        [_proposal(backend, task, prompts[t], history[t][s], s, teacher_version) for s in range(n)]
        for t, task in enumerate(tasks)
    ]


def _valid_last(attempts: list[str]) -> bool:
    if not attempts:
        return False
    try:
        parse_self_edit(attempts[-1])
    except ValueError:
        return False
    return True


def _proposal(
    backend: TeacherBackend, task: ArcTask, prompt: str, attempts: list[str], slot: int, teacher_version: str
) -> FewShotProposal:
    last = attempts[-1]
    proposal_id = short_id(task.task_id, teacher_version, last, str(slot))
    try:
        edit, error = parse_self_edit(last), None
    except ValueError as exc:
        edit, error = None, str(exc)
        log.warning("no valid self-edit for %s (slot %d) after %d samples: %s", task.task_id, slot, len(attempts), exc)
    return FewShotProposal(
        proposal_id=proposal_id,
        task_id=task.task_id,
        self_edit=edit,
        completions=attempts,
        error=error,
        prompt=prompt,
        teacher_model=backend.model_id,
        teacher_version=teacher_version,
    )
