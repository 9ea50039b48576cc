"""Killed or failed trainings leave no half-written adapters: not in the store, not in the temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from library import scratch
from library.models import load_model
from protocol import artifacts
from protocol.artifacts import ArtifactStore, lock_folder
from protocol.messages import TrainConfig
from student import batched
from student.batched import train_adapters
from tests.test_student import _job

ROOT = Path(__file__).resolve().parents[1]
LONG_AGO = 1_000_000_000  # 2001: well past any grace period


def _aged(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
    os.utime(folder, (LONG_AGO, LONG_AGO))
    return folder


def test_opening_the_store_removes_abandoned_incoming_folders_only(tmp_path):
    adapters = tmp_path / "store" / "adapters"
    dead = _aged(adapters / ".incoming-dead")
    busy = _aged(adapters / ".incoming-busy")
    fresh = adapters / ".incoming-fresh"
    fresh.mkdir()
    lock = lock_folder(busy)  # a writer in another process, still copying
    try:
        ArtifactStore(tmp_path / "store")
    finally:
        os.close(lock)
    assert not dead.exists()
    assert busy.is_dir() and fresh.is_dir(), "a locked or brand-new folder may be a write under way"


def test_an_interrupted_put_leaves_no_incoming_folder(tmp_path, monkeypatch):
    source = tmp_path / "adapter"
    source.mkdir()
    for name in artifacts.HASHED_FILES:
        (source / name).write_bytes(name.encode())
    store = ArtifactStore(tmp_path / "store")

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "_fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put_adapter(source, "tiny", {})
    assert list(store.adapters.iterdir()) == []


KILLED = """
from library.scratch import scratch_folder
folder = scratch_folder()
(folder / "adapter-x").mkdir()
print(folder, flush=True)
input()
"""


def test_the_scratch_folder_of_a_killed_process_is_removed_by_the_next(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    folder = Path(child.stdout.readline().strip())
    assert folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(scratch.SCRATCH_PREFIX)
    assert folder not in scratch.sweep(folder.parent), "its process still holds it"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert (folder / "adapter-x").is_dir(), "SIGKILL runs no cleanup"
    os.utime(folder, (LONG_AGO, LONG_AGO))
    legacy = _aged(tmp_path / "seal-adapter-old")
    assert folder in scratch.sweep(folder.parent)
    assert scratch.sweep(tmp_path) == [legacy]
    assert not folder.exists() and not legacy.exists()
    mine = scratch.scratch_folder()
    os.utime(mine, (LONG_AGO, LONG_AGO))
    assert mine not in scratch.sweep(mine.parent) and mine.is_dir(), "this process's own folder stays"


def test_a_failed_save_leaves_no_adapter_folder(tiny_model_dir, monkeypatch):
    model, tokenizer = load_model(tiny_model_dir)
    settings = TrainConfig(rank=2, alpha=4, epochs=1)
    jobs = [(_job(self_edit=f"Fact {n}."), settings) for n in range(3)]
    real_save_file, calls = batched.save_file, []

    def disk_full_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        real_save_file(*args, **kwargs)

    monkeypatch.setattr(batched, "save_file", disk_full_on_the_second)
    before = set(scratch.scratch_folder().iterdir())  # other tests of this process may have left theirs
    with pytest.raises(OSError, match="No space"):
        train_adapters(model, tokenizer, jobs, tiny_model_dir)
    assert set(scratch.scratch_folder().iterdir()) == before
    monkeypatch.undo()
    [result] = train_adapters(model, tokenizer, jobs[:1], tiny_model_dir)
    assert result.folder.parent == scratch.scratch_folder()
    shutil.rmtree(result.folder)


def test_the_teachers_and_few_shot_adapters_are_saved_in_the_scratch_folder_too(tiny_model_dir):
    """Every adapter the product saves before storing it waits in this process's scratch folder, never loose in /tmp."""
    from peft import get_peft_model

    from library.lora import lora_config, save_portable

    model, _ = load_model(tiny_model_dir)
    peft_model = get_peft_model(model, lora_config(2, 4, "all-linear", tiny_model_dir))
    folder = save_portable(peft_model, tiny_model_dir, "teacher-")
    try:
        assert folder.parent == scratch.scratch_folder() and (folder / "adapter_config.json").exists()
    finally:
        shutil.rmtree(folder)
    assert not list(Path(tempfile.gettempdir()).glob("seal-teacher-*")), "nothing saved loose in the temp dir"


def test_a_reader_of_the_store_changes_nothing(tmp_path):
    """The auditor and seal serve open the store read-only: no folder made, no sweep, even before the student."""
    assert not ArtifactStore(tmp_path / "store", writer=False).adapters.exists()
    writer = ArtifactStore(tmp_path / "store")
    stale = writer.adapters / (artifacts.INCOMING_PREFIX + "dead")
    stale.mkdir()
    os.utime(stale, (0, 0))
    ArtifactStore(tmp_path / "store", writer=False)
    assert stale.exists(), "only the writer sweeps"
