"""compose.yaml describes the same deployment the CLI offers: services, commands and ports agree."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from apps.cli import build_parser
from apps.cli_config import build_config
from teacher.backend_spec import parse_spec
from teacher.config import TeacherConfig

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _args(service: dict):
    command = service["command"]
    assert command[0] == "seal"
    return build_parser().parse_args(command[1:])


ROLE_OF_SERVICE = {"teacher": "teacher", "student": "student", "auditor": "auditor", "teacher-vllm": "teacher"}


def test_every_role_is_a_service_running_its_subcommand(services):
    assert set(services) == set(ROLE_OF_SERVICE) | {"vllm"}
    for name, role in ROLE_OF_SERVICE.items():
        assert _args(services[name]).command == role


def test_bound_ports_are_exposed(services):
    for name in ("student", "auditor"):
        port = str(urlparse(_args(services[name]).bind).port)
        assert port in [str(p) for p in services[name]["expose"]]


def test_peers_are_addressed_by_service_name_and_bound_port(services):
    student_port = urlparse(_args(services["student"]).bind).port
    auditor_port = urlparse(_args(services["auditor"]).bind).port
    teacher = _args(services["teacher"])
    for endpoint, host, port in [
        (_args(services["auditor"]).student, "student", student_port),
        (teacher.student, "student", student_port),
        (teacher.auditor, "auditor", auditor_port),
    ]:
        parsed = urlparse(endpoint)
        assert (parsed.hostname, parsed.port) == (host, port)


def test_student_and_auditor_share_the_store(services):
    student, auditor = _args(services["student"]), _args(services["auditor"])
    assert vars(student)["cfg:store"] == vars(auditor)["cfg:store"]


def test_student_reserves_an_nvidia_gpu(services):
    devices = services["student"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_vllm_service_is_optional_and_serves_what_its_teacher_asks_for(services):
    vllm, teacher = services["vllm"], services["teacher-vllm"]
    assert vllm["profiles"] == ["vllm"] and teacher["profiles"] == ["vllm"], "the default deployment stays as it was"
    assert "profiles" not in services["teacher"]
    config = build_config(TeacherConfig, _args(teacher))
    spec = parse_spec(config.model)
    assert spec.kind == "openai" and spec.model == _option(vllm["command"], "--served-model-name")
    url = urlparse(config.base_url)
    port = _option(vllm["command"], "--port")
    assert (url.hostname, str(url.port), url.path) == ("vllm", port, "/v1")
    assert port in [str(p) for p in vllm["expose"]]
    assert "vllm" in teacher["depends_on"]
    assert "--enable-lora" in vllm["command"], "teacher versions are served as LoRA adapters"


def test_vllm_service_reserves_an_nvidia_gpu(services):
    devices = services["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_every_role_authenticates_with_the_mounted_key_folder(services):
    for name in ROLE_OF_SERVICE:
        args = _args(services[name])
        assert not args.insecure and args.keys is not None, f"{name} must use CURVE keys"
        mounts = {volume.rsplit(":", 2)[1]: volume for volume in services[name]["volumes"]}  # SOURCE:TARGET[:MODE]
        assert str(args.keys) in mounts, f"{name}: --keys {args.keys} is not a mounted folder"
        assert mounts[str(args.keys)].endswith(":ro"), "roles only read their keys"
