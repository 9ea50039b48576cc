"""compose.yaml describes the same deployment the CLI offers: services, commands and ports agree, and each
role holds only its own keys and writes only its own volumes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from apps.cli import build_parser, main
from apps.cli_config import build_config
from protocol.security import ALLOWED_CALLERS, client_security, server_security
from protocol.signing import SIGNING_KEY, VERIFY_KEY, load_signing_key, load_verify_key
from student.config import StudentConfig
from student.serve_config import ServeConfig
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
    assert set(services) == set(ROLE_OF_SERVICE) | {"vllm", "serve", "ray-head", "ray-worker"}
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
    store = str(vars(student)["cfg:store"])
    assert vars(auditor)["cfg:store"] == store
    assert _volume_of(services["auditor"], store) == (_volume_of(services["student"], store)[0], True), "read-only"


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


def _mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """Mount target -> (source, read-only) for a service's SOURCE:TARGET[:MODE] volumes (SOURCE may hold ':')."""
    mounts = {}
    for volume in service.get("volumes", []):
        spec, _, mode = volume.rpartition(":") if volume.endswith((":ro", ":rw")) else (volume, "", "rw")
        source, _, target = spec.rpartition(":")
        mounts[target] = (source, mode == "ro")
    return mounts


def _volume_of(service: dict, path: str) -> tuple[str, bool]:
    """The mount holding ``path`` in a service (the longest target that contains it)."""
    targets = [t for t in _mounts(service) if path == t or path.startswith(t.rstrip("/") + "/")]
    assert targets, f"{path} is on no volume: it would not survive the container"
    return _mounts(service)[max(targets, key=len)]


def test_each_role_mounts_only_its_own_key_folder(services):
    for name, role in ROLE_OF_SERVICE.items():
        keys = str(_args(services[name]).keys)
        key_mounts = [(s, ro) for s, ro in _mounts(services[name]).values() if "SEAL_KEYS" in s or "keys" in s]
        assert key_mounts == [(_volume_of(services[name], keys)[0], True)], f"{name}: one key mount, read-only"
        assert key_mounts[0][0].endswith(f"/{role}"), f"{name} must mount keys/{role}/, not the whole key folder"


def test_the_teacher_cannot_write_the_ledger_the_registry_or_what_the_others_load(services):
    """The teacher shares no writable volume with the student or the auditor (store, registry, ledger, model cache)."""
    ledger = _volume_of(services["auditor"], str(vars(_args(services["auditor"]))["cfg:ledger"]))
    registry = _volume_of(services["student"], str(vars(_args(services["student"]))["cfg:store"]) + "/served")
    assert not ledger[1] and not registry[1], "the auditor writes the ledger, the student the registry"
    trusted = {s for name in ("student", "auditor") for s, _ in _mounts(services[name]).values()}
    for name in ("teacher", "teacher-vllm"):
        writable = {s for s, ro in _mounts(services[name]).values() if not ro}
        assert not writable & trusted, f"{name} can write {writable & trusted}"
    assert _volume_of(services["auditor"], "/root/.cache/seal") != _volume_of(services["student"], "/root/.cache/seal")


def test_keys_init_gives_each_role_a_folder_with_only_what_it_needs(tmp_path):
    keys = tmp_path / "keys"
    assert main(["keys", "init", "--keys", str(keys)]) == 0
    folders = {role: keys / role for role in ("teacher", "student", "auditor", "cli")}
    secrets = {role: sorted(p.name for p in f.iterdir() if p.suffix == ".key_secret") for role, f in folders.items()}
    assert secrets == {role: [f"{role}.key_secret"] for role in folders}, "no role holds another's secret key"
    holders = {name: [r for r, f in folders.items() if (f / name).exists()] for name in (SIGNING_KEY, VERIFY_KEY)}
    assert holders == {SIGNING_KEY: ["auditor"], VERIFY_KEY: ["student", "cli"]}
    # each role's folder alone is enough for every link it has, and for signing or checking verdicts
    for server, callers in ALLOWED_CALLERS.items():
        server_security(folders[server], server)
        for caller in callers:
            client = client_security(folders[caller], caller, server)
            assert client.keys == client_security(keys, caller, server).keys, "the same keys as the full folder"
    load_signing_key(folders["auditor"])
    assert load_verify_key(folders["student"]) == load_verify_key(keys)
    before = {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    assert main(["keys", "init", "--keys", str(keys)]) == 0
    assert {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before, "keys init keeps what is there"


def test_serve_reads_the_students_store_and_model_read_only_on_published_loopback(services):
    serve, student = services["serve"], services["student"]
    args, student_args = _args(serve), _args(student)
    assert args.command == "serve"
    config = build_config(ServeConfig, args)
    assert config.model == build_config(StudentConfig, student_args).model, "the adapters' base model"
    store = str(config.store)
    assert store == str(vars(student_args)["cfg:store"])
    assert _volume_of(serve, store) == (_volume_of(student, store)[0], True), "the student's store, read-only"
    assert str(config.port) in [str(p) for p in serve["expose"]]
    assert all(p.startswith("127.0.0.1:") for p in serve["ports"]), "published on the host's loopback only"
    keys = str(config.api_keys_file.parent)
    assert _volume_of(serve, keys)[1] and _volume_of(serve, keys)[0].endswith("/serve")
