"""The Trainer's model speed-ups (INSTSEG.OPTIMIZE_TRAINING, the INSTSEG.* keys) and CPU bf16
(INSTSEG.CPU_BF16), in real two-iteration runs on PennFudan images."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import CPU_CONFIG, TINY_TRAIN_OPTS
from torch import nn

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.config import load_config
from instseg_d2.engine.trainer import Trainer
from instseg_d2.modeling.meta_arch import InstSegRCNN
from instseg_d2.modeling.precision import cpu_supports_bf16
from instseg_d2.modeling.roi_align import CPUROIAlign


def _tiny_trainer(tmp_path, *opts: str) -> Trainer:
    cfg = load_config(
        CPU_CONFIG,
        [
            *TINY_TRAIN_OPTS,
            "OUTPUT_DIR", str(tmp_path),
            "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "0",
            "INSTSEG.VAL_LOSS", "False", "INSTSEG.VALIDATE_DATA", "False",
            *opts,
        ],
    )  # fmt: skip
    return Trainer(cfg)


def _conv_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_optimize_training_switch_sets_channels_last_convs(shared_data, tmp_path):
    on = _tiny_trainer(tmp_path / "on")
    off = _tiny_trainer(tmp_path / "off", "INSTSEG.OPTIMIZE_TRAINING", "False")
    channels_last = torch.channels_last
    assert all(w.is_contiguous(memory_format=channels_last) for w in _conv_weights(on.model))
    # Without the switch, the 3x3 convs keep the default NCHW layout.
    assert not any(
        w.is_contiguous(memory_format=channels_last) and w.shape[-1] > 1
        for w in _conv_weights(off.model)
    )

    # RoIAlign (forward and backward) over all cores, only with the switch.
    def parallel(model: nn.Module) -> list[bool]:
        poolers = [
            *model.roi_heads.box_pooler.level_poolers,
            *model.roi_heads.mask_pooler.level_poolers,
        ]
        return [isinstance(p, CPUROIAlign) for p in poolers]

    assert all(parallel(on.model)) and not any(parallel(off.model))
    # Nothing is changed after the build: the config rebuilds the model that trains.
    for trainer in (on, off):
        assert repr(trainer.model) == repr(Trainer.build_model(trainer.cfg))
    # Same parameters and state-dict keys: checkpoints of either load into the other.
    assert on.model.state_dict().keys() == off.model.state_dict().keys()
    # A key set explicitly wins over OPTIMIZE_TRAINING.
    only = _tiny_trainer(
        tmp_path / "only", "INSTSEG.OPTIMIZE_TRAINING", "False", "INSTSEG.CPU_ROI_ALIGN", "always"
    )
    assert all(parallel(only.model))
    assert not only.model.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=channels_last
    )


def test_a_plain_model_zoo_architecture_still_trains(shared_data, tmp_path):
    # Detectron2's own classes instead of configs/Base-InstSegRCNN.yaml's: no speed-ups.
    trainer = _tiny_trainer(
        tmp_path,
        "MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
        "MODEL.RPN.HEAD_NAME", "StandardRPNHead", "MODEL.PROPOSAL_GENERATOR.NAME", "RPN",
        "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead",
    )  # fmt: skip
    assert not isinstance(trainer.model, InstSegRCNN)
    assert not any(
        isinstance(p, CPUROIAlign) for p in trainer.model.roi_heads.box_pooler.level_poolers
    )
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_cpu_bf16_trains_under_bf16_autocast_with_finite_losses(shared_data, tmp_path):
    trainer = _tiny_trainer(tmp_path, "INSTSEG.CPU_BF16", "True")
    seen: set[torch.dtype] = set()
    stem = trainer.model.backbone.bottom_up.stem.conv1
    stem.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    trainer.train()
    assert torch.bfloat16 in seen  # the training steps ran the convolutions in bf16
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # The weights the optimizer keeps are still fp32.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_cpu_bf16_falls_back_to_fp32_without_native_bf16(shared_data, tmp_path, monkeypatch):
    import logging

    monkeypatch.setattr("instseg_d2.engine.trainer.cpu_supports_bf16", lambda: False)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("instseg_d2.engine.trainer")
    logger.addHandler(handler)
    try:
        trainer = _tiny_trainer(tmp_path, "INSTSEG.CPU_BF16", "True")
    finally:
        logger.removeHandler(handler)
    assert trainer._cpu_bf16 is False
    assert any("no native bf16" in m for m in messages)
