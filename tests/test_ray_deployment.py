"""Deploying the roles' workers on Ray: the launchers pass --workers on, compose runs a Ray head and GPU worker
nodes that the student and auditor join as clients, and at one worker nothing imports Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from apps.cli import build_parser
from apps.cli_config import build_config
from apps.demo import LaunchConfig, role_configs
from auditor.config import AuditorConfig
from library.ray_pool import shards
from student.config import StudentConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_student_joins_the_ray_head_as_a_client_and_the_auditor_never_does(services):
    head = services["ray-head"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    client_port = _flag(head, "--ray-client-server-port")
    assert client_port in services["ray-head"]["expose"]
    assert _flag(head, "--num-gpus") == "0"  # the head schedules no model work
    config = build_config(StudentConfig, build_parser().parse_args(services["student"]["command"][1:]))
    address = urlparse(config.ray_address)
    assert (address.scheme, address.hostname, str(address.port)) == ("ray", "ray-head", client_port)
    assert config.workers >= 2 and "ray-head" in services["student"]["depends_on"]
    # The auditor holds τ: on the student's cluster, the student could run code beside its actors and read it.
    auditor = build_config(AuditorConfig, build_parser().parse_args(services["auditor"]["command"][1:]))
    assert auditor.ray_address is None and auditor.workers == 1
    assert "ray-head" not in services["auditor"]["depends_on"] and "environment" not in services["auditor"]


def test_ray_workers_join_the_head_with_a_gpu_each_and_hold_no_keys_store_or_ledger(services):
    worker = services["ray-worker"]
    head_port = _flag(services["ray-head"]["command"], "--port")
    assert _flag(worker["command"], "--address") == f"ray-head:{head_port}"
    assert head_port in services["ray-head"]["expose"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["count"] == 1 and "gpu" in devices[0]["capabilities"]
    mounts = " ".join(worker.get("volumes", []))
    assert "keys" not in mounts.lower() and "store" not in mounts and "ledger" not in mounts


def test_the_image_installs_the_ray_extra():
    assert 'ray = ["ray[client]>=' in (ROOT / "pyproject.toml").read_text()  # Python 3.10 has no tomllib
    assert '".[ray]"' in (ROOT / "Dockerfile").read_text()


def test_every_ray_node_and_client_authenticates_with_one_token(services):
    for name in ("ray-head", "ray-worker", "student"):
        environment = services[name]["environment"]
        assert environment["RAY_AUTH_MODE"] == "token", f"{name}: Ray's token auth must be on"
        assert environment["RAY_AUTH_TOKEN"].startswith("${SEAL_RAY_TOKEN:?"), f"{name}: the token is required"


def test_the_launchers_give_the_student_and_the_auditor_their_workers(tmp_path):
    args = build_parser().parse_args(["train-teacher", "--data", "d.json", "--workers", "2", "--threads", "1"])
    assert (args.workers, args.ray_address) == (2, None)
    configs = role_configs(LaunchConfig(run_dir=tmp_path, workers=2, ray_address="ray://head:10001", threads=1))
    for config in (configs.student, configs.auditor):
        assert (config.workers, config.ray_address, config.threads_per_worker) == (2, "ray://head:10001", 1)
    assert role_configs(LaunchConfig(run_dir=tmp_path)).student.workers == 1


def test_one_worker_never_imports_ray():
    code = (
        "import sys; import apps.cli, student.workers, auditor.workers, student.service, auditor.service; "
        "sys.exit('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr or "ray was imported"


def test_shards_depend_on_the_count_and_the_parts_only():
    assert shards(5, 2) == [range(0, 3), range(3, 5)]
    assert shards(2, 4) == [range(0, 1), range(1, 2)]  # never an empty shard
    assert shards(0, 2) == []
    assert [len(part) for part in shards(20, 3)] == [7, 7, 6]
