"""The MLflow EventWriter logs what Detectron2's JSONWriter writes to metrics.json (read back
with MLflow's own client), the config as params, and the final results; off by default."""

from __future__ import annotations

import json
import math
import sys

import pytest
from detectron2.utils.events import EventStorage, JSONWriter

from instseg_d2.config import get_instseg_cfg
from instseg_d2.engine.metrics_file import iter_metrics
from instseg_d2.engine.mlflow_writer import (
    RUN_FILE,
    MLflowRun,
    MLflowWriter,
    default_tracking_uri,
    log_final_results,
)
from instseg_d2.utils.errors import ConfigError

# MLflow's own use of SQLAlchemy, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")


def mlflow_client(uri: str):
    """MLflow's own client (the test is skipped where the optional extra is not installed)."""
    pytest.importorskip("mlflow", reason="mlflow is the optional [tracking] extra")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module: creating one (its migrations) takes seconds."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow_client(uri).search_experiments()
    return uri


def history_by_key(client, run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    return {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys
    }


def metrics_json_by_key(path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for record in iter_metrics(path):
        for key, value in record.items():
            if key != "iteration":
                out.setdefault(key, []).append((record["iteration"], value))
    return {k: sorted(v) for k, v in out.items()}


def same_values(a, b) -> bool:
    return len(a) == len(b) and all(
        sa == sb and (va == vb or (math.isnan(va) and math.isnan(vb)))
        for (sa, va), (sb, vb) in zip(a, b, strict=True)
    )


def test_mlflow_is_off_by_default():
    assert get_instseg_cfg().INSTSEG.MLFLOW.ENABLED is False


@pytest.mark.slow  # creating the SQLite store: ~10 s on 2 busy cores
def test_writer_logs_what_json_writer_writes(tmp_path, store):
    cfg = get_instseg_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.INSTSEG.MLFLOW.TRACKING_URI = store
    cfg.SOLVER.MAX_ITER = 77
    json_writer = JSONWriter(str(tmp_path / "metrics.json"))
    mlflow_writer = MLflowWriter(cfg)
    with EventStorage(0) as storage:
        for iteration in range(7):
            storage.iter = iteration
            storage.put_scalar("total_loss", 1.0 / (iteration + 1))  # median-smoothed
            storage.put_scalar("lr", 0.01 * iteration, smoothing_hint=False)
            if iteration % 3 == 2:  # an evaluation, with COCO's NaN for an empty size range
                storage.put_scalars(
                    **{"segm/AP": 10.0 + iteration, "bbox/APs": math.nan}, smoothing_hint=False
                )
                storage.put_scalar("bbox/AP-traffic(light)", 5.0, smoothing_hint=False)
            if iteration % 2 == 1:  # PeriodicWriter every 2 iterations, as LOG_PERIOD would
                json_writer.write()
                mlflow_writer.write()
        json_writer.write()
        mlflow_writer.write()
    json_writer.close()
    mlflow_writer.close()

    expected = metrics_json_by_key(tmp_path / "metrics.json")
    assert {"total_loss", "lr", "segm/AP", "bbox/APs"} <= set(expected)
    run_id = json.loads((tmp_path / RUN_FILE).read_text())["run_id"]
    client = mlflow_client(store)
    renamed = {"bbox/AP-traffic(light)": "bbox/AP-traffic_light_"}  # MLflow's allowed characters
    logged = history_by_key(client, run_id, [renamed.get(k, k) for k in expected])
    for key, values in expected.items():
        assert same_values(logged[renamed.get(key, key)], values), key
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert run.data.params["SOLVER.MAX_ITER"] == "77"
    assert run.data.params["INSTSEG.MLFLOW.ENABLED"] == "False"
    config_text = client.download_artifacts(run_id, "config.yaml", str(tmp_path / "dl"))
    assert "MAX_ITER: 77" in open(config_text).read()


@pytest.mark.slow  # the same store
def test_final_results_go_into_the_same_run_and_resume_continues_it(tmp_path, store):
    cfg = get_instseg_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    cfg.INSTSEG.MLFLOW.TRACKING_URI = store
    cfg.INSTSEG.MLFLOW.EXPERIMENT_NAME = "exp"
    cfg.INSTSEG.MLFLOW.RUN_NAME = "fold0"
    first = MLflowRun(cfg, resume=False)
    first.log_metrics([("total_loss", 2.0, 0)])
    first.end()
    (tmp_path / "run" / "final_metrics.md").write_text("# table\n")
    summary = {"iteration": 9, "seed": 3, "segm": {"AP": 31.5, "APs": None},
               "segm_ci95": {"AP": [27.0, 35.0]}, "datasets": {}}  # fmt: skip
    log_final_results(cfg, summary, [tmp_path / "run" / "final_metrics.md"])
    client = mlflow_client(cfg.INSTSEG.MLFLOW.TRACKING_URI)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == first.run_id
    metrics = runs[0].data.metrics
    assert metrics["final/segm/AP"] == 31.5 and "final/segm/APs" not in metrics
    assert (metrics["final/segm/AP_ci95_low"], metrics["final/segm/AP_ci95_high"]) == (27.0, 35.0)
    assert [a.path for a in client.list_artifacts(first.run_id)] == [
        "config.yaml",
        "final_metrics.md",
    ]
    # Artifacts of an SQLite store go beside it, not into the working directory.
    store_dir = store[len("sqlite:///") :].rsplit("/", 1)[0]
    assert client.get_run(first.run_id).info.artifact_uri.startswith(f"file://{store_dir}/")
    # A resumed run continues; a new run (not resumed) in the same folder is a new MLflow run.
    assert MLflowRun(cfg, resume=True).run_id == first.run_id
    assert MLflowRun(cfg, resume=False).run_id != first.run_id


def test_unusable_tracking_uri_is_a_config_error(tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is the optional [tracking] extra")
    cfg = get_instseg_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.INSTSEG.MLFLOW.TRACKING_URI = "nosuchscheme://x"
    with pytest.raises(ConfigError, match="INSTSEG.MLFLOW.TRACKING_URI nosuchscheme://x"):
        MLflowRun(cfg, resume=False)


def test_default_store_is_an_sqlite_file_in_the_output_folder(tmp_path):
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_enabled_without_mlflow_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'instseg_d2\[tracking\]'"):
        MLflowWriter(get_instseg_cfg())
