"""EMA of the weights: constant weights stay constant, the decay warms up, buffers follow the
model, checkpoints hold the average as "model", and --resume continues exactly."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from instseg_d2.engine.ema import EMACheckpointer, ModelEMA
from instseg_d2.utils.errors import ConfigError


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, i: int) -> None:
    generator = torch.Generator().manual_seed(100 + i)  # the data of step i, whatever came before
    x = torch.randn(8, 3, generator=generator)
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_ema_of_constant_weights_is_constant():
    model = _model()
    ema = ModelEMA(model, decay=0.9, warmup_iters=3)
    for _ in range(10):
        ema.update()
    for name, value in model.state_dict().items():
        assert torch.equal(ema.module.state_dict()[name], value), name
    assert ema.num_updates == 10


def test_decay_warms_up_and_the_average_follows_it():
    model = nn.Linear(1, 1, bias=False)
    ema = ModelEMA(model, decay=0.99, warmup_iters=10)
    assert ema.decay_at(0) == 0.0
    assert ema.decay_at(10) == pytest.approx(0.99 * (1 - math.exp(-1)))
    assert ema.decay_at(10_000) == pytest.approx(0.99)
    with torch.no_grad():
        model.weight.fill_(0.0)
        ema.update()  # the first update copies
        model.weight.fill_(1.0)
        ema.update()
    d = ema.decay_at(1)
    assert float(ema.module.weight) == pytest.approx(d * 0.0 + (1 - d) * 1.0)
    assert ModelEMA(model, decay=0.5, warmup_iters=0).decay_at(0) == 0.5
    with pytest.raises(ConfigError, match="DECAY must be in"):
        ModelEMA(model, decay=1.0)


def test_buffers_are_copied_from_the_model_not_averaged():
    model = _model()
    ema = ModelEMA(model, decay=0.9)
    optimizer = _optimizer(model)
    for i in range(3):
        _step(model, optimizer, i)  # training-mode BatchNorm updates its running statistics
        ema.update()
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_checkpoint_holds_the_average_as_model_and_resume_continues_exactly(tmp_path):
    # Uninterrupted: 6 steps.
    model = _model()
    ema = ModelEMA(model, decay=0.8, warmup_iters=2)
    optimizer = _optimizer(model)
    for i in range(6):
        _step(model, optimizer, i)
        ema.update()
    expected_model, expected_ema = _state(model), _state(ema.module)

    # Interrupted after 3 steps ...
    model = _model()
    ema = ModelEMA(model, decay=0.8, warmup_iters=2)
    optimizer = _optimizer(model)
    checkpointer = EMACheckpointer(model, str(tmp_path), ema=ema, optimizer=optimizer)
    for i in range(3):
        _step(model, optimizer, i)
        ema.update()
    training, average = _state(model), _state(ema.module)
    checkpointer.save("model_0000002", iteration=2)
    for name, value in model.state_dict().items():  # saving left the model as it was
        assert torch.equal(value, training[name])
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    for name in training:
        assert torch.equal(saved["model"][name], average[name]), name
        assert torch.equal(saved["ema"][f"module.{name}"], training[name]), name

    # ... and resumed in a fresh process: other initial weights, nothing carried over.
    model = _model(seed=1)
    ema = ModelEMA(model, decay=0.8, warmup_iters=2)
    optimizer = _optimizer(model)
    checkpointer = EMACheckpointer(model, str(tmp_path), ema=ema, optimizer=optimizer)
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 2 and ema.num_updates == 3
    for i in range(3, 6):
        _step(model, optimizer, i)
        ema.update()
    for name in expected_model:
        assert torch.equal(model.state_dict()[name], expected_model[name]), name
        assert torch.equal(ema.module.state_dict()[name], expected_ema[name]), name


def test_loading_weights_without_resume_starts_a_new_average(tmp_path):
    model = _model()
    ema = ModelEMA(model, decay=0.8)
    optimizer = _optimizer(model)
    _step(model, optimizer, 0)
    ema.update()
    EMACheckpointer(model, str(tmp_path), ema=ema).save("model_final")
    average = _state(ema.module)

    fresh = _model(seed=1)
    fresh_ema = ModelEMA(fresh, decay=0.8)
    EMACheckpointer(fresh, str(tmp_path), ema=fresh_ema).resume_or_load(
        str(tmp_path / "model_final.pth"), resume=False
    )
    # Fine-tuning from an EMA run's weights: its averaged weights, and an average started anew.
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, average[name]), name
    assert fresh_ema.num_updates == 0
    fresh_ema.update()
    assert torch.equal(fresh_ema.module[0].weight, fresh[0].weight)


def test_resuming_an_ema_checkpoint_without_ema_says_so(tmp_path, caplog):
    model = _model()
    ema = ModelEMA(model, decay=0.8)
    ema.update()
    EMACheckpointer(model, str(tmp_path), ema=ema).save("model_0000000", iteration=0)
    with caplog.at_level(logging.WARNING, logger="instseg_d2.engine.ema"):
        EMACheckpointer(_model(seed=1), str(tmp_path)).resume_or_load("", resume=True)
    assert "written with INSTSEG.EMA enabled and EMA is off now" in caplog.text


def test_nan_in_the_average_is_not_saved(tmp_path):
    model = _model()
    ema = ModelEMA(model, decay=0.8)
    ema.update()
    with torch.no_grad():
        ema.module[0].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="EMA tensors hold NaN"):
        EMACheckpointer(model, str(tmp_path), ema=ema).save("model_final")
    assert not list(tmp_path.iterdir())
