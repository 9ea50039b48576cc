"""An adapter folder as bytes and back: how adapters travel between a role process and its Ray workers.

Workers never read or write the artifact store: the role reads a stored (hash-checked) adapter and
sends its files, and a worker sends back the files of what it trained, which the role stores.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from library.scratch import scratch_folder

AdapterFiles = dict[str, bytes]
"""A peft adapter folder's files: name -> content (flat: peft folders have no subfolders)."""


def pack_folder(folder: Path) -> AdapterFiles:
    """Every file of ``folder``, by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def unpack_folder(files: AdapterFiles, prefix: str = "adapter-") -> Path:
    """``files`` written into a fresh folder of this process's scratch folder; the caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_folder()))
    try:
        for name, content in files.items():
            if Path(name).name != name:
                raise ValueError(f"adapter file name {name!r} is not a plain file name")
            (folder / name).write_bytes(content)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


@contextmanager
def unpacked(adapters: Mapping[str, AdapterFiles]) -> Iterator[dict[str, Path]]:
    """Each adapter's files in a scratch folder for the block (name -> folder), removed after it."""
    folders: dict[str, Path] = {}
    try:
        for name, files in adapters.items():
            folders[name] = unpack_folder(files)
        yield folders
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
