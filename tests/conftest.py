"""Shared fixtures: a tiny random model built once per session."""

from __future__ import annotations

import pytest

from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny randomly initialised Llama saved as a local model folder."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
