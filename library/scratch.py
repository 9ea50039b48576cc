"""This process's scratch folder under the system temp dir, which a crash cannot leak for long.

Freshly trained adapters wait there until the artifact store takes them (16 MB
or more a batch). The process holds a ``flock`` on its folder for its life; the
kernel drops it when the process dies, and the next process to make a scratch
folder removes every unlocked one (and the ``seal-adapter-*`` folders that
earlier versions left directly in the temp dir).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

from protocol.artifacts import abandoned, lock_folder

SCRATCH_PREFIX = "seal-scratch-"
LEGACY_PREFIXES = ("seal-adapter-", "seal-teacher-", "seal-arc-adapter-")
"""Where trained adapters went before there were scratch folders: straight into the temp dir."""

_guard = threading.Lock()
_held: tuple[Path, int] | None = None  # this process's folder and the fd that holds its lock


def scratch_folder() -> Path:
    """This process's scratch folder, made (after sweeping those of dead processes) on first use."""
    global _held
    with _guard:
        if _held is not None and _held[0].is_dir():
            return _held[0]
        if _held is not None:  # removed under our feet: make another
            os.close(_held[1])
        sweep(Path(tempfile.gettempdir()))
        folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        _held = (folder, lock_folder(folder))
        atexit.register(shutil.rmtree, folder, True)
        return folder


def sweep(parent: Path) -> list[Path]:
    """Remove the scratch folders under ``parent`` whose process is gone; returns them."""
    removed = []
    for prefix in (SCRATCH_PREFIX, *LEGACY_PREFIXES):
        removed += _sweep_prefix(parent, prefix)
    return removed


def _sweep_prefix(parent: Path, prefix: str) -> list[Path]:
    removed = []
    for folder in parent.glob(prefix + "*"):
        if folder.is_dir() and abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
