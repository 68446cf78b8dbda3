"""Looking datasets up in Detectron2's ``DatasetCatalog`` with errors a user can act on.

``DatasetCatalog.get`` of an unknown name raises a ``KeyError`` that lists every registered name
(about 70 here); this module names the unknown dataset and the few closest registered names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from detectron2.data import DatasetCatalog

from .errors import UnknownDatasetError

__all__ = ["check_dataset_names", "get_dataset_dicts"]


def check_dataset_names(names: Iterable[str]) -> None:
    """Raise :class:`UnknownDatasetError` for the first name that is not registered."""
    registered = DatasetCatalog.list()
    for name in names:
        if name in registered:
            continue
        close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UnknownDatasetError(
            f"dataset {name!r} is not registered{hint} (a dataset of your own is registered from "
            "its dataset file: INSTSEG.DATASET_FILE path/to/data.yaml; "
            "`python tools/dataset_summary.py --list` lists the registered names)"
        )


def get_dataset_dicts(name: str, num_images: int | None = None) -> list[dict]:
    """The dicts of the registered dataset ``name`` (the first ``num_images`` if given)."""
    check_dataset_names([name])
    dicts = DatasetCatalog.get(name)
    return dicts if num_images is None else dicts[:num_images]
