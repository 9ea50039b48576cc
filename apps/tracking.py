"""Experiment tracking: a seal run folder mirrored into MLflow (the optional ``mlflow`` extra).

``seal mlflow sync --uri sqlite:///mlflow.db --run-dir runs/restem``, or ``seal train-teacher --mlflow URI``
(which syncs when the rounds end); ``seal adapt`` and the benches call :func:`mirror_run` the same way.

seal's own records stay the authority: this module only reads them (the run folder's ``results.jsonl``
files, ``teacher/versions.json``, the ledger, the student's registry under ``STORE/served/``) and
mirrors them, so no role process depends on MLflow. What lands in MLflow, in one run per run folder
(found again by its ``seal.run_dir`` tag, so a sync can be repeated: it adds only what is new):

- parameters: every role's settings from ``config/ROLE.yaml``, flattened (``auditor.metric``);
- per round (step r): candidates, accepted, vetoed, mean and max reward, mean gain on each score,
  mean retention drop; per candidate (step = its index in the run): reward, retention drop, accepted,
  vetoes; per teacher version (step = the round that made it): examples and last M-step loss;
- artifacts: the results and report files, the ledger, ``teacher/versions.json`` and each version's
  artifact, the role configs (never the key folder);
- promoted adapters, as versions of one registered model (each with its adapter id and verdict entry
  as tags, its weights logged under ``adapters/ID``); alias ``champion`` on the top of the served stack
  (removed when the base model is served), ``shadow`` on the candidate of a ``seal serve --shadow`` log.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from library.jsonl import read_jsonl
from library.ledger import read_entries
from protocol.artifacts import ArtifactStore

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

RUN_TAG = "seal.run_dir"
ADAPTER_TAG = "seal.adapter_id"
REPORT_SUFFIXES = (".md", ".json", ".jsonl", ".png", ".csv")
SKIPPED_FOLDERS = ("keys", "store", "config", "teacher")  # secrets; adapters (logged when promoted); logged apart


class TrackingConfig(BaseModel):
    """Where a run folder is mirrored to in MLflow."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="MLflow tracking URI (sqlite:///mlflow.db, a folder, or an http server).")
    experiment: str = Field("seal", description="MLflow experiment that holds the runs.")
    model_name: str = Field("seal-student", description="Registered model whose versions are promoted adapters.")
    store: Path | None = Field(None, description="Adapter store holding served/ (default: RUN_DIR/store).")
    shadow_log: Path | None = Field(None, description="A `seal serve --shadow-log` file: its candidate is `shadow`.")
    artifact_location: str | None = Field(
        None, description="Artifact root of a new experiment (default for sqlite: DB-artifacts beside the file)."
    )


class TrackingUnavailable(Exception):
    """The mlflow extra is not installed (``pip install 'seal[mlflow]'``)."""


def mirror_run(config: TrackingConfig, run_dir: Path) -> str:
    """Mirror ``run_dir`` into MLflow; returns the MLflow run id. Repeatable: only new records are added."""
    client = _client(config.uri)
    run_dir = run_dir.resolve()
    run_id = _run_for(client, config, run_dir)
    _log_params(client, run_id, run_dir)
    _log_metrics(client, run_id, round_metrics(run_dir), candidate_metrics(run_dir), version_metrics(run_dir))
    _log_artifacts(client, run_id, run_dir)
    _mirror_registry(client, config, run_id, config.store or run_dir / "store")
    client.set_terminated(run_id)
    return run_id


# --------------------------------------------------------------------------- reading seal's records


def round_files(run_dir: Path) -> list[tuple[int, Path]]:
    """(round, results.jsonl) in round order: ``round-N/results.jsonl`` (ReST^EM), else the pass's own (round 0)."""
    rounds = sorted((int(p.parent.name.split("-", 1)[1]), p) for p in run_dir.glob("round-*/results.jsonl"))
    return rounds or ([(0, run_dir / "results.jsonl")] if (run_dir / "results.jsonl").exists() else [])


def round_metrics(run_dir: Path) -> list[tuple[str, float, int]]:
    """(key, value, step = round) for each round's verdicts."""
    out = []
    for r, path in round_files(run_dir):
        records = read_jsonl(path)
        verdicts = [v for rec in records for v in rec.get("verdicts", [])]
        vetoed = sum(len(rec.get("vetoed", [])) for rec in records) + sum(bool(v.get("vetoes")) for v in verdicts)
        rewards = [v["reward"] for v in verdicts]
        values = {
            "round/candidates": len(verdicts),
            "round/accepted": sum(v["accepted"] for v in verdicts),
            "round/vetoed": vetoed,
            "round/mean_reward": _mean(rewards),
            "round/max_reward": max(rewards, default=0.0),
            "round/mean_retention_drop": _mean([v["retention_drop"] for v in verdicts]),
        }
        for score in ("loglik", "f1", "exact_match"):
            values[f"round/mean_gain_{score}"] = _mean([v["candidate"][score] - v["base"][score] for v in verdicts])
        out += [(key, float(value), r) for key, value in values.items()]
    return out


def candidate_metrics(run_dir: Path) -> list[tuple[str, float, int]]:
    """(key, value, step = the candidate's index in the run) for every verdict, in round and file order."""
    verdicts = [v for _, path in round_files(run_dir) for rec in read_jsonl(path) for v in rec.get("verdicts", [])]
    out = []
    for i, v in enumerate(verdicts):
        out += [
            ("candidate/reward", float(v["reward"]), i),
            ("candidate/retention_drop", float(v["retention_drop"]), i),
            ("candidate/accepted", float(v["accepted"]), i),
            ("candidate/vetoes", float(len(v.get("vetoes", []))), i),
        ]
    return out


def teacher_versions(run_dir: Path) -> list[dict[str, Any]]:
    """The run's teacher versions as ``teacher/versions.json`` books them ([] for a single pass)."""
    path = run_dir / "teacher" / "versions.json"
    return json.loads(path.read_text()) if path.exists() else []


def version_metrics(run_dir: Path) -> list[tuple[str, float, int]]:
    """(key, value, step = the round that made the version) for every version but v0."""
    out = []
    for version in teacher_versions(run_dir):
        if version["round"] < 0:
            continue
        out.append(("teacher/examples", float(version["examples"]), version["round"]))
        if version.get("losses"):
            out.append(("teacher/final_loss", float(version["losses"][-1]), version["round"]))
    return out


def registry_view(served: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The promotions in the registry's history (oldest first) and the stack served now (bottom first)."""
    history = served / "history.jsonl"
    promotions = [e for e in read_entries(history) if e["kind"] == "promote"] if history.exists() else []
    state = served / "state.json"
    stack = json.loads(state.read_text())["stack"] if state.exists() else []
    return promotions, stack


# --------------------------------------------------------------------------- writing to MLflow


def _client(uri: str) -> MlflowClient:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingUnavailable("experiment tracking needs mlflow: pip install 'seal[mlflow]'") from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _run_for(client: MlflowClient, config: TrackingConfig, run_dir: Path) -> str:
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        experiment_id = client.create_experiment(config.experiment, _artifact_location(config))
    else:
        experiment_id = experiment.experiment_id
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run_dir}'", max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=run_dir.name, tags={RUN_TAG: str(run_dir)}).info.run_id


def _artifact_location(config: TrackingConfig) -> str | None:
    if config.artifact_location or not config.uri.startswith("sqlite:///"):
        return config.artifact_location
    db = Path(config.uri.removeprefix("sqlite:///"))
    return (db.parent / f"{db.stem}-artifacts").resolve().as_uri()


def _log_params(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    from mlflow.entities import Param

    logged = client.get_run(run_id).data.params
    params = {}
    for path in sorted((run_dir / "config").glob("*.yaml")):
        params |= _flatten(yaml.safe_load(path.read_text()) or {}, f"{path.stem}.")
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in logged]
    for start in range(0, len(new), 100):  # MLflow takes at most 100 parameters per batch
        client.log_batch(run_id, params=new[start : start + 100])


def _log_metrics(client: MlflowClient, run_id: str, *groups: list[tuple[str, float, int]]) -> None:
    """Metrics at steps not logged yet (a repeated sync adds nothing twice)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [row for group in groups for row in group]
    seen: dict[str, set[int]] = {}
    for key in {k for k, _, _ in rows}:
        seen[key] = {m.step for m in client.get_metric_history(run_id, key)}
    new = [Metric(k, v, now, s) for k, v, s in rows if s not in seen[k]]
    for start in range(0, len(new), 1000):
        client.log_batch(run_id, metrics=new[start : start + 1000])


def _log_artifacts(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        if path.is_file() and path.suffix in REPORT_SUFFIXES and relative.parts[0] not in SKIPPED_FOLDERS:
            client.log_artifact(run_id, str(path), str(relative.parent) if relative.parent.parts else None)
    for path in sorted((run_dir / "config").glob("*.yaml")):
        client.log_artifact(run_id, str(path), "config")
    if not (run_dir / "teacher" / "versions.json").exists():
        return
    from teacher.versions import VersionBook  # imports torch: only where a run has teacher versions

    book = VersionBook(run_dir)
    client.log_artifact(run_id, str(book.path), "teacher")
    for version in book.versions:
        artifact = book.artifact_path(version)  # found by its content hash, as the teacher finds it
        if artifact is not None and artifact.is_dir():
            client.log_artifacts(run_id, str(artifact), f"teacher/{version.version}")
        elif artifact is not None and artifact.is_file():
            client.log_artifact(run_id, str(artifact), f"teacher/{version.version}")


def _mirror_registry(client: MlflowClient, config: TrackingConfig, run_id: str, store: Path) -> None:
    """One model version per promoted adapter; aliases set as the registry's served stack and shadow say."""
    promotions, stack = registry_view(store / "served")
    if not promotions:
        return
    _ensure_registered_model(client, config.model_name)
    versions = {
        mv.tags.get(ADAPTER_TAG): mv.version for mv in client.search_model_versions(f"name = '{config.model_name}'")
    }
    for entry in promotions:
        record = entry["record"]
        adapter = record["after"][-1]
        if adapter in versions:
            continue
        client.log_artifacts(run_id, str(ArtifactStore(store, writer=False).path(adapter)), f"adapters/{adapter}")
        source = f"{client.get_run(run_id).info.artifact_uri}/adapters/{adapter}"
        tags = {ADAPTER_TAG: adapter, "seal.verdict_entry": record["verdict"]["ledger_entry"],
                "seal.registry_entry": entry["hash"]}  # fmt: skip
        versions[adapter] = client.create_model_version(config.model_name, source, run_id, tags=tags).version
    _set_alias(client, config.model_name, "champion", versions.get(stack[-1]) if stack else None)
    shadow = _shadow_candidate(config.shadow_log)
    _set_alias(client, config.model_name, "shadow", versions.get(shadow) if shadow else None)
    for adapter, version in versions.items():
        client.set_model_version_tag(config.model_name, version, "seal.served", str(adapter in stack).lower())


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Adapters promoted by seal (its registry is the authority).")


def _set_alias(client: MlflowClient, name: str, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``, or remove it (nothing served, no shadow candidate)."""
    from mlflow.exceptions import MlflowException

    if version is not None:
        client.set_registered_model_alias(name, alias, version)
        return
    with contextlib.suppress(MlflowException):  # it was not set
        client.delete_registered_model_alias(name, alias)


def _shadow_candidate(shadow_log: Path | None) -> str | None:
    if shadow_log is None:
        return None
    records = read_jsonl(shadow_log)
    return records[-1]["candidate"] if records else None


def _flatten(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
