"""The ``INSTSEG.*`` speed-up keys: what ``"auto"``, ``"always"`` and ``"never"`` mean.

The components read these keys when they are built (``from_config``), so the config alone says
which model runs. Each key holds one of :data:`CHOICES`:

- ``"always"`` / ``"never"``: on / off on every device.
- ``"auto"``: on when ``MODEL.DEVICE`` is a CPU. They are CPU speed-ups: at batch 1 on an H200
  they made inference slower (BENCHMARKS.md). The Trainer turns each ``"auto"`` into
  ``INSTSEG.OPTIMIZE_TRAINING`` instead (:func:`resolve_auto`), on any device, before it builds
  its model.

Strings rather than booleans, because a tri-state needs them, and not ``on``/``off``, which
YAML reads as booleans.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode

__all__ = [
    "CHOICES",
    "MODEL_KEYS",
    "INFERENCE_KEYS",
    "SpeedupConfigError",
    "override_all",
    "resolve_auto",
    "speedup_enabled",
]

CHOICES = ("auto", "always", "never")
# Read by the components at build time (cfg.INSTSEG.<key>).
MODEL_KEYS = (
    "CHANNELS_LAST",
    "FROZEN_BN_ON_WEIGHTS",
    "CPU_ROI_ALIGN",
    "NCHW_GROUP_NORM",
    "PARALLEL_PROPOSALS",
    "FUSED_RPN_OUTPUTS",
)
# Read by the inference build step after loading (cfg.INSTSEG.INFERENCE.<key>).
INFERENCE_KEYS = ("FOLD_FROZEN_BN",)


class SpeedupConfigError(ValueError):
    """A speed-up key holds something other than "auto", "always" or "never"."""


def _nodes_and_keys(cfg: CfgNode) -> list[tuple[CfgNode, str, str]]:
    return [(cfg.INSTSEG, k, f"INSTSEG.{k}") for k in MODEL_KEYS] + [
        (cfg.INSTSEG.INFERENCE, k, f"INSTSEG.INFERENCE.{k}") for k in INFERENCE_KEYS
    ]


def speedup_enabled(cfg: CfgNode, name: str) -> bool:
    """Whether the speed-up key ``name`` (e.g. ``"INSTSEG.CHANNELS_LAST"``) is on for ``cfg``."""
    if "INSTSEG" not in cfg:
        raise SpeedupConfigError(
            f"{name}: this config has no INSTSEG keys; load it with instseg_d2.config.load_config "
            "(or call add_instseg_config(cfg) before merging the file)"
        )
    node = cfg
    for part in name.split("."):
        node = node[part]
    if node not in CHOICES:
        raise SpeedupConfigError(f"{name} must be one of {', '.join(CHOICES)}; got {node!r}")
    if node == "auto":
        return torch.device(cfg.MODEL.DEVICE).type == "cpu"
    return node == "always"


def _with_choices(cfg: CfgNode, enabled: bool, only_auto: bool) -> CfgNode:
    cfg = cfg.clone()
    cfg.defrost()
    for node, key, _ in _nodes_and_keys(cfg):
        if not only_auto or node[key] == "auto":
            node[key] = "always" if enabled else "never"
    return cfg


def resolve_auto(cfg: CfgNode, enabled: bool) -> CfgNode:
    """A copy of ``cfg`` whose speed-up keys left at ``"auto"`` are ``"always"`` when ``enabled``,
    ``"never"`` otherwise; keys set explicitly keep their value (the Trainer's rule)."""
    return _with_choices(cfg, enabled, only_auto=True)


def override_all(cfg: CfgNode, enabled: bool) -> CfgNode:
    """A copy of ``cfg`` with every speed-up key ``"always"`` (``enabled``) or ``"never"``
    (``BatchPredictor(optimize=...)``, ``tools/infer.py --no-optimize``, the benchmark's rows)."""
    return _with_choices(cfg, enabled, only_auto=False)
