"""Dataset loaders and their registration (see builtin.py)."""

from . import builtin as _builtin  # noqa: F401  (registers the datasets)
from .register_balloon import load_balloon_dicts, register_balloon
from .register_pennfudan import load_pennfudan_dicts, register_pennfudan

__all__ = ["load_balloon_dicts", "load_pennfudan_dicts", "register_balloon", "register_pennfudan"]
