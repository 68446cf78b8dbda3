"""Experiment tracking with MLflow: a Detectron2 ``EventWriter`` and the end-of-run logging.

:class:`MLflowWriter` sends what Detectron2's ``JSONWriter`` writes to ``metrics.json`` (same
keys, same iterations as MLflow steps, same median smoothing) to an MLflow run; the run gets the
config as params and as ``config.yaml`` when it is created. :func:`log_final_results` adds the
final metrics and the result files (final_metrics, report, plots) at the end.

The store is ``INSTSEG.MLFLOW.TRACKING_URI``, by default an SQLite file in OUTPUT_DIR
(``mlflow.db``, artifacts in ``mlflow_artifacts/``): MLflow 3 refuses new file stores
(``./mlruns``), and SQLite needs only ``sqlalchemy``/``alembic`` beside ``mlflow-skinny``. The run's
id is kept in ``OUTPUT_DIR/mlflow_run.json``, so ``--resume`` continues the same MLflow run (its
history then holds the repeated iterations twice, where metrics.json is trimmed).

mlflow is optional (``pip install 'instseg_d2[tracking]'``): it is imported only when enabled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.utils.events import EventWriter, get_event_storage

from ..config import config_keys
from ..utils.atomic import atomic_write
from ..utils.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "MLflowRun",
    "MLflowWriter",
    "default_tracking_uri",
    "ensure_experiment",
    "log_final_results",
]

RUN_FILE = "mlflow_run.json"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlflow_artifacts"
# MLflow's limits per log_batch call.
_MAX_PARAMS, _MAX_METRICS = 100, 1000
# Characters MLflow accepts in a metric name; others (from a class name) become "_".
_INVALID_NAME = re.compile(r"[^\w\-. :/]")


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "INSTSEG.MLFLOW.ENABLED needs mlflow: pip install 'instseg_d2[tracking]' "
            "(mlflow-skinny with SQLite support)"
        ) from None
    return mlflow


def default_tracking_uri(output_dir: str | os.PathLike) -> str:
    """The embedded store of a run: ``sqlite:///<OUTPUT_DIR>/mlflow.db``."""
    return f"sqlite:///{Path(output_dir).resolve() / DB_FILE}"


def _artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside an SQLite store (MLflow's default is ./mlartifacts of the working
    directory); a server or other store decides for itself."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / ARTIFACTS_DIR).as_uri()
    return None


def metric_name(key: str) -> str:
    """A metrics.json key as an MLflow metric name (unchanged unless a class name needs it)."""
    return _INVALID_NAME.sub("_", key)


def ensure_experiment(tracking_uri: str, name: str, client=None) -> str:
    """The id of experiment ``name`` in the store, created (with the store) if missing."""
    _mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = client or MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=_artifact_location(tracking_uri))
    except MlflowException as exc:
        raise ConfigError(
            f"INSTSEG.MLFLOW.TRACKING_URI {tracking_uri}: MLflow cannot use it ({exc})"
        ) from None


class MLflowRun:
    """One MLflow run of an OUTPUT_DIR: created, or continued from ``mlflow_run.json``."""

    def __init__(self, cfg: CfgNode, *, resume: bool):
        """``resume``: continue the run recorded in OUTPUT_DIR (if it is in the same store),
        else start a new one. A new run gets the config as params and ``config.yaml``."""
        mlflow = _mlflow()
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.tracking_uri = cfg.INSTSEG.MLFLOW.TRACKING_URI or default_tracking_uri(self.output_dir)
        self._entities = mlflow.entities
        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            recorded = self._recorded_run_id() if resume else None
            if recorded:
                self.run_id = recorded
                self.client.update_run(self.run_id, status="RUNNING")
                logger.info("MLflow: continuing run %s in %s", self.run_id, self.tracking_uri)
            else:
                self.run_id = self._create(cfg)
        except MlflowException as exc:
            raise ConfigError(
                f"INSTSEG.MLFLOW.TRACKING_URI {self.tracking_uri}: MLflow cannot use it ({exc})"
            ) from None

    def _recorded_run_id(self) -> str | None:
        path = self.output_dir / RUN_FILE
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(recorded, dict) or recorded.get("tracking_uri") != self.tracking_uri:
            return None
        return recorded.get("run_id")

    def _create(self, cfg: CfgNode) -> str:
        experiment_id = ensure_experiment(
            self.tracking_uri, cfg.INSTSEG.MLFLOW.EXPERIMENT_NAME, self.client
        )
        run_name = cfg.INSTSEG.MLFLOW.RUN_NAME or self.output_dir.resolve().name
        run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.output_dir / RUN_FILE,
            json.dumps({"tracking_uri": self.tracking_uri, "run_id": run_id}, indent=1) + "\n",
        )
        params = [self._entities.Param(key, str(_value(cfg, key))) for key in config_keys(cfg)]
        for start in range(0, len(params), _MAX_PARAMS):
            self.client.log_batch(run_id, params=params[start : start + _MAX_PARAMS])
        self.client.log_text(run_id, cfg.dump(), "config.yaml")
        logger.info("MLflow: run %s (%s) in %s", run_name, run_id, self.tracking_uri)
        return run_id

    def log_metrics(self, values: Iterable[tuple[str, float, int]]) -> None:
        """``(key, value, step)`` triples, NaN included (MLflow stores it)."""
        now = int(time.time() * 1000)
        metrics = [
            self._entities.Metric(metric_name(k), float(v), now, int(s)) for k, v, s in values
        ]
        for start in range(0, len(metrics), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + _MAX_METRICS])

    def log_artifacts(self, paths: Iterable[str | os.PathLike], folder: str | None = None) -> None:
        for path in paths:
            if Path(path).is_file():
                self.client.log_artifact(self.run_id, os.fspath(path), folder)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _value(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


class MLflowWriter(EventWriter):
    """``EventWriter`` logging every scalar that ``JSONWriter`` writes, at the same iterations.

    The MLflow run is opened by :meth:`start` (the Trainer calls it once it knows whether it
    resumes) or at the first write.
    """

    def __init__(self, cfg: CfgNode, window_size: int = 20):
        """``window_size``: JSONWriter's median smoothing window (Detectron2's default 20)."""
        _mlflow()  # fail at start-up, not at the first write, when mlflow is missing
        self._cfg = cfg
        self._window_size = window_size
        self._last_write = -1
        self.run: MLflowRun | None = None
        # How close() ends the MLflow run; the Trainer sets FAILED when the loss diverged.
        self.end_status = "FINISHED"

    def start(self, resume: bool) -> None:
        if self.run is None:
            self.run = MLflowRun(self._cfg, resume=resume)

    def write(self) -> None:
        self.start(resume=False)
        storage = get_event_storage()
        to_save: dict[int, dict[str, float]] = defaultdict(dict)
        # JSONWriter.write's selection: the scalars not written yet, keyed by their iteration.
        for key, (value, iteration) in storage.latest_with_smoothing_hint(
            self._window_size
        ).items():
            if iteration <= self._last_write:
                continue
            to_save[iteration][key] = value
        if to_save:
            self._last_write = max(to_save)
        self.run.log_metrics(
            (key, value, iteration)
            for iteration, scalars in to_save.items()
            for key, value in scalars.items()
        )

    def close(self) -> None:
        if self.run is not None:
            self.run.end(self.end_status)


def log_final_results(
    cfg: CfgNode, summary: Mapping, artifacts: Iterable[str | os.PathLike], plots=()
) -> None:
    """Log final_metrics.json's numbers (``final/<task>/<metric>`` of the first test set, and
    ``final/<task>/<metric>_ci95_low``/``_high``) and the result files into the OUTPUT_DIR's
    run (a new run if training logged none, e.g. ``--eval-only``); then end the run."""
    run = MLflowRun(cfg, resume=True)
    values = []
    for task, metrics in summary.items():
        if not isinstance(metrics, dict) or task in ("datasets", "bootstrap"):
            continue
        for metric, value in metrics.items():
            if isinstance(value, int | float):
                values.append((f"final/{task}/{metric}", value))
            elif isinstance(value, list) and len(value) == 2:
                base = f"final/{task.removesuffix('_ci95')}/{metric}_ci95"
                values += [(f"{base}_low", value[0]), (f"{base}_high", value[1])]
    step = summary.get("iteration") or 0
    run.log_metrics((k, v, step) for k, v in values)
    run.log_artifacts(artifacts)
    run.log_artifacts(plots, "plots")
    run.end("FINISHED")
