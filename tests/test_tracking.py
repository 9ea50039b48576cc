"""MLflow mirrors a seal run folder: a real local tracking store (SQLite), read back with MlflowClient.

The run folder is made of seal's own records: two rounds of results, a teacher version, the ledger, and the
student's registry with two signed promotions and a rollback; aliases follow the registry, and a repeated sync
adds nothing twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.torch import save_file

from apps.cli import main
from apps.tracking import TrackingConfig, mirror_run
from library.jsonl import append_jsonl
from library.ledger import Ledger
from protocol.artifacts import ArtifactStore
from protocol.messages import Veto
from protocol.signing import sign_verdict
from student.registry import Registry
from teacher.versions import TeacherVersion
from tests.examples import CONTEXT, SELF_EDIT, VERDICT

mlflow = pytest.importorskip("mlflow")


def _verdict(adapter: str, reward: float, accepted: bool, vetoed: bool = False):
    vetoes = [Veto(reviewer="reviewer", reason="a false fact")] if vetoed else []
    return VERDICT.model_copy(update={"adapter_id": adapter, "reward": reward, "accepted": accepted, "vetoes": vetoes})


def _adapters(store: Path, n: int) -> list[str]:
    """``n`` real (tiny) adapters in the run's store: what the student writes, by content hash."""
    ids = []
    for i in range(n):
        folder = store.parent / f"made-{i}"
        folder.mkdir(parents=True)
        save_file({"w": torch.full((2, 2), float(i))}, folder / "adapter_model.safetensors")
        (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "i": i}))
        ids.append(ArtifactStore(store).put_adapter(folder, "tiny", {}).adapter_id)
    return ids


def _run_folder(root: Path, key: Ed25519PrivateKey) -> tuple[Path, str, str]:
    run = root / "restem"
    a, b = _adapters(run / "store", 2)
    (run / "config").mkdir(parents=True)
    (run / "config" / "auditor.yaml").write_text(yaml.safe_dump({"metric": "loglik", "min_gain": 0.0}))
    (run / "config" / "teacher.yaml").write_text(yaml.safe_dump({"k": 2, "restem": {"rounds": 2}}))
    (run / "keys").mkdir()
    (run / "keys" / "auditor.sign").write_text("SECRET-SIGNING-KEY")
    rounds = [[_verdict(a, 0.4, True), _verdict("c3" * 32, -0.1, False, vetoed=True)], [_verdict(b, 0.9, True)]]
    for r, verdicts in enumerate(rounds):
        record = {"context": CONTEXT.model_dump(), "self_edits": [SELF_EDIT.model_dump()],
                  "verdicts": [v.model_dump() for v in verdicts], "vetoed": []}  # fmt: skip
        (run / f"round-{r}").mkdir()
        append_jsonl(run / f"round-{r}" / "results.jsonl", record)
    (run / "teacher" / "exemplars").mkdir(parents=True)
    (run / "teacher" / "exemplars" / ("e" * 64 + ".json")).write_text("[]")
    version = TeacherVersion("v1", 0, "exemplars", "bank.json", "e" * 64, "f" * 64, 1, (1.2, 0.7))
    (run / "teacher" / "versions.json").write_text(json.dumps([asdict(version)]))
    (run / "results.md").write_text("| round | reward |\n")
    ledger = Ledger(run / "ledger.jsonl")
    ledger.append("verdict", {"adapter_id": a})
    ledger.close()
    registry = Registry(run / "store" / "served", key.public_key())
    for adapter in (a, b):  # each judged on top of what was served before it
        verdict = _verdict(adapter, 0.5, True).model_copy(update={"on_top_of": registry.state.stack})
        registry.promote(adapter, sign_verdict(verdict, key))
    return run, a, b


def test_a_run_folder_is_mirrored_with_metrics_artifacts_and_promoted_adapters(tmp_path):
    key = Ed25519PrivateKey.generate()
    run, A, B = _run_folder(tmp_path, key)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    shadow_log = tmp_path / "shadow.jsonl"
    append_jsonl(shadow_log, {"candidate": A, "prompt": "p"})
    config = TrackingConfig(uri=uri, shadow_log=shadow_log)
    run_id = mirror_run(config, run)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri, registry_uri=uri)
    data = client.get_run(run_id).data
    assert data.params["auditor.metric"] == "loglik" and data.params["teacher.restem.rounds"] == "2"
    history = {m.step: m.value for m in client.get_metric_history(run_id, "round/mean_reward")}
    assert history == {0: pytest.approx(0.15), 1: pytest.approx(0.9)}
    assert [m.value for m in client.get_metric_history(run_id, "round/vetoed")] == [1.0, 0.0]
    assert len(client.get_metric_history(run_id, "candidate/reward")) == 3
    assert client.get_metric_history(run_id, "teacher/final_loss")[0].value == pytest.approx(0.7)

    listed = {f.path for f in client.list_artifacts(run_id)} | {
        f.path for folder in ("round-0", "teacher", "config") for f in client.list_artifacts(run_id, folder)
    }
    assert {"ledger.jsonl", "results.md", "round-0/results.jsonl", "teacher/versions.json", "teacher/v1",
            "config/auditor.yaml"} <= listed  # fmt: skip
    assert not any(p.startswith("keys") for p in listed)

    versions = {mv.tags["seal.adapter_id"]: mv.version for mv in client.search_model_versions("name = 'seal-student'")}
    assert set(versions) == {A, B}
    assert client.get_model_version_by_alias("seal-student", "champion").version == versions[B]
    assert client.get_model_version_by_alias("seal-student", "shadow").version == versions[A]
    assert client.get_model_version("seal-student", versions[B]).tags["seal.served"] == "true"

    # Roll back in seal's registry, sync again: the alias follows, nothing is logged twice.
    Registry(run / "store" / "served", key.public_key()).rollback()
    assert main(["mlflow", "sync", "--run-dir", str(run), "--uri", uri]) == 0
    assert client.get_model_version_by_alias("seal-student", "champion").version == versions[A]
    assert client.get_model_version("seal-student", versions[B]).tags["seal.served"] == "false"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("seal-student", "shadow")  # this sync named no shadow log
    assert len(client.get_metric_history(run_id, "candidate/reward")) == 3
    assert len(client.search_model_versions("name = 'seal-student'")) == 2
    Registry(run / "store" / "served", key.public_key()).rollback(to="base")
    mirror_run(TrackingConfig(uri=uri), run)
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("seal-student", "champion")  # the base model is served
