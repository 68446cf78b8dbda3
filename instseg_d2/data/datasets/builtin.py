"""Register this project's datasets under ``$DETECTRON2_DATASETS``, like Detectron2's builtin.py.

Runs on ``import instseg_d2.data``. Registration only stores loader functions, so it is cheap and
works when a dataset folder is missing; ``DatasetCatalog.get`` then raises a DatasetError that
says how to prepare the data.
"""

from __future__ import annotations

from ..paths import dataset_root
from .register_balloon import register_balloon
from .register_pennfudan import register_pennfudan


def register_all(root: str | None = None) -> None:
    root = str(dataset_root()) if root is None else root
    register_pennfudan(root)
    register_balloon(root)


register_all()
