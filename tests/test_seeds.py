"""Seeds end to end: the seed of a run is drawn once and recorded (config.yaml,
final_metrics.json, report), a run with that seed repeats the losses, another seed does not;
the same rerun logs to MLflow exactly what metrics.json holds."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import yaml

from instseg_d2.engine.metrics_file import iter_metrics
from instseg_d2.visualization.report import write_report

# MLflow's own use of SQLAlchemy, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")
LOSSES = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")


def recorded_seed(run) -> int:
    return yaml.safe_load((run / "config.yaml").read_text())["SEED"]


def training_losses(run) -> dict[int, dict[str, float]]:
    return {
        r["iteration"]: {k: r[k] for k in LOSSES}
        for r in iter_metrics(run / "metrics.json")
        if "total_loss" in r
    }


def run_training(command, cwd, output_dir):
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return output_dir


@pytest.fixture(scope="module")
def same_seed_rerun(tiny_training_run, train_net_command, repo_root, tmp_path_factory):
    """The tiny run again, with its recorded seed, logging to MLflow as well."""
    pytest.importorskip("mlflow", reason="mlflow is the optional [tracking] extra")
    output = tmp_path_factory.mktemp("same_seed")
    seed = str(recorded_seed(tiny_training_run))
    command = train_net_command(output, "SEED", seed, "INSTSEG.MLFLOW.ENABLED", "True")
    return run_training(command, repo_root, output)


@pytest.mark.slow  # one more tiny training run (shared with the MLflow test below)
def test_the_recorded_seed_repeats_the_losses_and_another_seed_does_not(
    tiny_training_run, same_seed_rerun, train_net_command, repo_root, tmp_path
):
    seed = recorded_seed(tiny_training_run)
    assert seed >= 0  # SEED -1 in the config: drawn by train_net and written down
    assert recorded_seed(same_seed_rerun) == seed
    first, again = training_losses(tiny_training_run), training_losses(same_seed_rerun)
    assert sorted(first) == [0, 1, 2, 3]
    assert again == first  # bit for bit, evaluations in between included
    other = run_training(
        train_net_command(tmp_path, "SEED", str(seed + 1), "SOLVER.MAX_ITER", "2",
                          "SOLVER.STEPS", "(1,)", "DATASETS.TEST", "()"),
        repo_root, tmp_path,
    )  # fmt: skip
    different = training_losses(other)
    assert sorted(different) == [0, 1]
    for iteration in (0, 1):
        assert different[iteration]["total_loss"] != first[iteration]["total_loss"]


@pytest.mark.slow
def test_final_metrics_and_report_give_the_seed_and_the_intervals(same_seed_rerun):
    final = json.loads((same_seed_rerun / "final_metrics.json").read_text())
    assert final["seed"] == recorded_seed(same_seed_rerun)
    assert final["bootstrap"]["samples"] == 1000 and "percentile" in final["bootstrap"]["method"]
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75"):
            low, high = final[f"{task}_ci95"][metric]
            assert low <= final[task][metric] <= high
    assert (
        "95% intervals (percentile bootstrap" in (same_seed_rerun / "final_metrics.md").read_text()
    )
    page = write_report(same_seed_rerun, num_samples=0).read_text(encoding="utf-8")
    low, high = final["segm_ci95"]["AP"]
    assert f'{final["segm"]["AP"]:.2f} <span class="ci">[{low:.2f}, {high:.2f}]</span>' in page
    assert f"<td>seed</td><td>{final['seed']}</td>" in page


@pytest.mark.slow
def test_mlflow_holds_every_scalar_of_metrics_json(same_seed_rerun):
    from mlflow.tracking import MlflowClient

    run_id = json.loads((same_seed_rerun / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{same_seed_rerun.resolve()}/mlflow.db")
    expected: dict[str, list] = {}
    for record in iter_metrics(same_seed_rerun / "metrics.json"):
        for key, value in record.items():
            if key != "iteration":
                expected.setdefault(key, []).append((record["iteration"], value))
    assert {"total_loss", "validation_loss", "segm/AP", "lr"} <= set(expected)
    for key, values in expected.items():
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [s for s, _ in logged] == [s for s, _ in sorted(values)], key
        for (_, a), (_, b) in zip(logged, sorted(values), strict=True):
            assert a == b or (math.isnan(a) and math.isnan(b)), key
    run = client.get_run(run_id)
    final = json.loads((same_seed_rerun / "final_metrics.json").read_text())
    assert run.data.metrics["final/segm/AP"] == final["segm"]["AP"]
    assert run.data.params["SEED"] == str(final["seed"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "final_metrics.json", "final_metrics.md", "metrics.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == {
        "plots/learning_curve.png", "plots/eval_metrics.png"}  # fmt: skip
