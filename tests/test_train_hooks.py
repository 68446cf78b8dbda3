"""Unit tests of the training pieces: metrics history, atomic checkpoints, hooks, final table."""

from __future__ import annotations

import json
import logging
import pickle
from types import SimpleNamespace

import pytest
import torch
from detectron2.utils.events import EventStorage

from instseg_d2.checkpoint import AtomicCheckpointer, UnsafeCheckpointError
from instseg_d2.engine.final_metrics import per_dataset, write_final_metrics
from instseg_d2.engine.hooks import (
    EarlyStop,
    EarlyStopping,
    ResumableBestCheckpointer,
    ValidationLoss,
)
from instseg_d2.engine.metrics_file import iter_metrics, metric_series, trim_metrics_history
from instseg_d2.utils.atomic import atomic_write, atomic_write_with


def write_lines(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


# --- metrics.json ------------------------------------------------------------------------------
def test_trim_keeps_iterations_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.json"
    write_lines(path, [{"iteration": i, "total_loss": 1.0 / (i + 1)} for i in range(6)])
    with open(path, "a") as f:
        f.write('{"iteration": 6, "total_lo')  # kill -9 in the middle of a write
    assert trim_metrics_history(str(path), 3) > 0
    assert [r["iteration"] for r in iter_metrics(str(path))] == [0, 1, 2, 3]
    assert path.read_text().endswith("\n")
    # Nothing later than the checkpoint: unchanged.
    assert trim_metrics_history(str(path), 10) == 0
    # A fresh start (iteration -1 resumed) empties it.
    trim_metrics_history(str(path), -1)
    assert path.read_text() == ""


def test_trim_while_a_writer_holds_the_file_in_append_mode(tmp_path):
    path = tmp_path / "metrics.json"
    write_lines(path, [{"iteration": i} for i in range(5)])
    with open(path, "a") as writer:  # what Detectron2's JSONWriter holds open
        trim_metrics_history(str(path), 1)
        writer.write(json.dumps({"iteration": 2}) + "\n")
    assert [r["iteration"] for r in iter_metrics(str(path))] == [0, 1, 2]


def test_metric_series_skips_nan_and_missing(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(
        '{"iteration": 1, "segm/AP": 3.0}\n{"iteration": 2}\n'
        '{"iteration": 3, "segm/AP": NaN}\n{"iteration": 4, "segm/AP": 5.5}\n'
    )
    assert metric_series(str(path), "segm/AP") == [(1, 3.0), (4, 5.5)]


# --- checkpoints -------------------------------------------------------------------------------
def test_atomic_write_creates_folders_and_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "not" / "yet" / "table.md"
    atomic_write(path, "first")
    assert path.read_text() == "first"

    def fail_halfway(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(path, fail_halfway)
    assert path.read_text() == "first"
    assert [p.name for p in path.parent.iterdir()] == ["table.md"]


def test_atomic_checkpointer_writes_whole_files_and_refuses_nan_weights(tmp_path):
    model = torch.nn.Linear(3, 2)
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    saved = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert saved["iteration"] == 1 and torch.equal(saved["model"]["weight"], model.weight)

    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="model_0000002.pth.*NaN/Inf.*weight"):
        checkpointer.save("model_0000002", iteration=2)
    assert not (tmp_path / "model_0000002.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]


class NotATensor:
    pass


def test_pth_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": NotATensor()}, path)
    checkpointer = AtomicCheckpointer(torch.nn.Linear(1, 1), str(tmp_path))
    with pytest.raises(UnsafeCheckpointError, match="evil.pth.*objects other than tensors"):
        checkpointer.load(str(path))


def test_pkl_weights_load_with_a_warning(tmp_path, caplog):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "zoo.pkl"
    weights = {k: v.numpy() + 1 for k, v in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test"}, f)
    with caplog.at_level(logging.WARNING):
        AtomicCheckpointer(model).load(str(path))
    assert "zoo.pkl is a pickle" in caplog.text
    assert torch.allclose(model.weight, torch.as_tensor(weights["weight"]))


# --- hooks -------------------------------------------------------------------------------------
def fake_trainer(iteration: int, max_iter: int = 100):
    return SimpleNamespace(iter=iteration, max_iter=max_iter, storage=None, stopped_early=None)


def test_early_stopping_after_patience_evaluations_without_improvement():
    hook = EarlyStopping(eval_period=10, metric="segm/AP", patience=2)
    hook.trainer = fake_trainer(0)
    values = {9: 10.0, 19: 12.0, 29: 11.0, 39: 12.0}  # best 12 at 19, then two evals not better
    with EventStorage(0) as storage:
        hook.trainer.storage = storage
        for it, value in values.items():
            hook.trainer.iter = storage.iter = it
            storage.put_scalar("segm/AP", value, smoothing_hint=False)
            if it < 39:
                hook.after_step()
            else:
                with pytest.raises(EarlyStop, match="iteration 39.*did not improve on 12.0"):
                    hook.after_step()
    assert hook.trainer.stopped_early and hook.bad_evals == 2


def test_early_stopping_ignores_non_eval_iterations_and_resumes_its_count(tmp_path):
    metrics = tmp_path / "metrics.json"
    write_lines(metrics, [{"iteration": 9, "segm/AP": 5.0}, {"iteration": 19, "segm/AP": 4.0}])
    hook = EarlyStopping(10, "segm/AP", patience=2, metrics_file=str(metrics))
    hook.before_train()
    assert (hook.best, hook.bad_evals) == (5.0, 1)
    hook.trainer = fake_trainer(24)
    hook.after_step()  # iteration 24 is no evaluation: nothing read, nothing counted
    assert hook.bad_evals == 1


class LossRecorder(torch.nn.Module):
    """Returns each batch's mean "value" as loss_a and 1 as loss_b; records the modes it ran in."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(1)
        self.seen = []

    def forward(self, batch):
        self.seen.append((self.training, self.bn.training, torch.is_autocast_enabled("cpu")))
        values = torch.tensor([d["value"] for d in batch])
        return {"loss_a": values.mean(), "loss_b": torch.ones(())}


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_validation_loss_is_the_mean_per_image_in_the_training_steps_precision(cpu_bf16):
    model = LossRecorder().eval()
    loader = [[{"value": 1.0}, {"value": 2.0}], [{"value": 6.0}]]  # batches of unequal size
    hook = ValidationLoss(eval_period=5, data_loaders=[loader], cpu_bf16=cpu_bf16)
    hook.trainer = fake_trainer(4, max_iter=10)
    hook.trainer.model = model
    with EventStorage(4) as storage:
        hook.trainer.storage = storage
        hook.after_step()  # iteration index 4 = the 5th step: an evaluation step
        hook.trainer.iter = 5
        hook.after_step()  # not one
        logged = {k: v[0] for k, v in storage.latest().items()}
    assert logged["validation_loss_a"] == pytest.approx(3.0)  # (1 + 2 + 6) / 3, not (1.5 + 6) / 2
    assert logged["validation_loss"] == pytest.approx(4.0)
    # Training mode (the mode that returns losses) with BatchNorm in eval, under the step's
    # autocast; the model goes back to the mode it was in.
    assert model.seen == [(True, False, cpu_bf16)] * 2
    assert not model.training


def test_best_checkpointer_remembers_the_best_after_resume(tmp_path):
    write_lines(
        tmp_path / "metrics.json",
        [{"iteration": 9, "segm/AP": 7.0}, {"iteration": 19, "segm/AP": 9.0},
         {"iteration": 29, "segm/AP": 8.0}],
    )  # fmt: skip
    (tmp_path / "model_best.pth").write_bytes(b"")
    checkpointer = SimpleNamespace(save_dir=str(tmp_path), save=None)
    hook = ResumableBestCheckpointer(10, checkpointer, "segm/AP", "max",
                                     metrics_file=str(tmp_path / "metrics.json"))  # fmt: skip
    hook.before_train()
    assert (hook.best_metric, hook.best_iter) == (9.0, 19)


# --- final table -------------------------------------------------------------------------------
COCO = {"AP": 50.0, "AP50": 80.0, "AP75": 55.0, "APs": float("nan"), "APm": 40.0, "APl": 60.0}


def test_final_metrics_json_and_markdown(tmp_path, capsys):
    summary = write_final_metrics(
        {"bbox": COCO, "segm": dict(COCO, AP=45.0)}, str(tmp_path), ("pennfudan_val",),
        weights="w.pth", iteration=10,
    )  # fmt: skip
    data = json.loads((tmp_path / "final_metrics.json").read_text())
    assert data == json.loads(json.dumps(summary))
    assert data["segm"]["AP"] == 45.0 and data["bbox"]["APs"] is None
    assert data["datasets"]["pennfudan_val"]["bbox"]["AP75"] == 55.0
    md = (tmp_path / "final_metrics.md").read_text()
    assert "| pennfudan_val | segm   | 45.00 |" in md
    assert "nan" not in md  # APs has no value: shown as "-"
    assert "45.00" in capsys.readouterr().out


def test_per_dataset_with_several_test_sets():
    results = {"a": {"bbox": COCO}, "b": {"bbox": COCO, "segm": COCO}}
    assert set(per_dataset(results, ("a", "b"))) == {"a", "b"}
    assert set(per_dataset(results, ("a", "b"))["b"]) == {"bbox", "segm"}
