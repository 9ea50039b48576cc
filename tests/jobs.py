"""Train jobs for the student's tests: one self-edit on one passage, the rest fixed."""

from __future__ import annotations

from protocol.messages import Context, SelfEdit, TrainJob


def train_job(self_edit: str, context: str, context_id: str = "c", title: str = "Ostrevane") -> TrainJob:
    """A job applying ``self_edit`` (an implications text) for the passage ``context``."""
    return TrainJob(
        context=Context(context_id=context_id, title=title, text=context),
        self_edit=SelfEdit(
            self_edit_id=f"e-{context_id}",
            context_id=context_id,
            format="implications",
            text=self_edit,
            prompt="p",
            teacher_model="t",
            teacher_version="v0",
        ),
    )
