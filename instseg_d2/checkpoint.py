"""Checkpoints that survive ``kill -9``, and weights loaded as safely as their format allows.

``AtomicCheckpointer`` is Detectron2's ``DetectionCheckpointer`` with two changes:

* every file (``model_*.pth`` and ``last_checkpoint``) is written to a temporary file in the same
  folder, flushed to disk and moved into place with ``os.replace``, so a process killed at any
  moment leaves either the previous file or the new one, never half of one;
* a model whose parameters are NaN/Inf is refused, so a diverged run cannot overwrite a good
  checkpoint with a bad one.

``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors and plain containers
only); Detectron2's ``.pkl`` model-zoo files are pickles, which cannot be read that way: they are
loaded as Detectron2 does, with a warning to load them only from a trusted source.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .utils.atomic import atomic_write, atomic_write_with
from .utils.errors import UserError

logger = logging.getLogger(__name__)

# URL schemes that need a download (iopath caches the file; a cached file works offline).
REMOTE_PREFIXES = ("detectron2://", "catalog://", "http://", "https://")


class WeightsUnavailableError(UserError, RuntimeError):
    """``MODEL.WEIGHTS`` names remote weights that cannot be downloaded (e.g. no internet)."""


class UnsafeCheckpointError(UserError, RuntimeError):
    """A ``.pth`` file holds objects other than tensors and plain containers."""


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers that hold a NaN or an Inf."""
    state = model.state_dict()
    return [
        name
        for name, value in state.items()
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
    ]


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files are never left half-written."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        bad = non_finite_parameters(self.model)
        if bad:
            raise FloatingPointError(
                f"not saving checkpoint {name}.pth: {len(bad)} model tensors hold NaN/Inf "
                f"(first: {bad[0]}); the previous checkpoints in {self.save_dir} are kept"
            )
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write_with(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(save_file, last_filename_basename)

    def _torch_load(self, f: str):
        # .pth (ours, or torchvision-style state dicts): tensors and containers only.
        try:
            return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UnsafeCheckpointError(
                f"{f}: refusing to load, the file holds objects other than tensors "
                f"(torch.load(weights_only=True) failed: {str(exc).splitlines()[0]}). "
                "Load it yourself only if you trust its source and re-save its state_dict."
            ) from None

    def _load_file(self, filename: str):
        if filename.endswith(".pkl"):
            logger.warning(
                f"{filename} is a pickle (Detectron2 model-zoo format): it is loaded with "
                "pickle, which can run code; load .pkl weights only from a trusted source."
            )
        return super()._load_file(filename)


def resolve_weights(weights: str) -> str:
    """Local path of ``MODEL.WEIGHTS`` (downloaded or from the iopath cache), or a clear error.

    Called at the start of a run so that an offline machine stops at once, not after the model,
    data loaders and hooks have been built.
    """
    if not weights:
        return weights
    try:
        local = PathManager.get_local_path(weights)
    except Exception as exc:  # iopath raises URLError/OSError/HTTPError/... depending on why
        if weights.startswith(REMOTE_PREFIXES):
            raise WeightsUnavailableError(
                f"cannot download MODEL.WEIGHTS {weights} ({type(exc).__name__}: {exc}). "
                "Ways out: download it on a machine with internet and pass the local file with "
                "MODEL.WEIGHTS /path/to/model_final.pkl, or train from scratch with a *_cpu.yaml "
                "config (configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml, "
                "configs/Balloon/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml)."
            ) from None
        raise
    if not os.path.isfile(local):
        raise WeightsUnavailableError(f"MODEL.WEIGHTS {weights}: no such file")
    return local


# What a training run leaves, in the order a tool should prefer it when no weights are named.
RUN_WEIGHTS = ("model_final.pth",)


def find_run_weights(run_dir: str | os.PathLike) -> Path | None:
    """The weights a run folder holds: ``model_final.pth``, else the checkpoint that
    ``last_checkpoint`` names (an unfinished run), else None."""
    run_dir = Path(run_dir)
    for name in RUN_WEIGHTS:
        if (run_dir / name).is_file():
            return run_dir / name
    last = run_dir / "last_checkpoint"
    if last.is_file():
        candidate = run_dir / last.read_text(encoding="utf-8").strip()
        if candidate.is_file():
            return candidate
    return None
