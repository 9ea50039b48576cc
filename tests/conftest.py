"""Shared fixtures: a tiny random model built once per session; the open-file limit and its peak use."""

from __future__ import annotations

import os
import resource

import pytest

from tests.tiny_model import build_tiny_model

# The suite runs real Ray runtimes, vLLM engines, HTTP and ZeroMQ servers from this one process; a CI
# machine whose soft limit is 1024 ran out of descriptors near the end of the suite (EMFILE from ZeroMQ,
# stop 29), while here it peaks under 100. The soft limit is raised as far as the hard limit allows, and
# the peak is printed at the end, so that a leak shows in the log rather than as a timed-out peer.
_WANTED_OPEN_FILES = 65536
_peak = {"fds": 0, "test": ""}


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def pytest_configure(config: pytest.Config) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if (n := _open_files()) > _peak["fds"]:
        _peak.update(fds=n, test=item.nodeid)


def pytest_terminal_summary(terminalreporter) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    terminalreporter.write_line(f"open files: peak {_peak['fds']} after {_peak['test']} (soft limit {soft})")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny randomly initialised Llama saved as a local model folder."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
