"""The base class of every error a user can fix, so that tools report it in one line.

Library code raises a subclass (``DatasetError``, ``ConfigError``, ``BadImageError``, ...) whose
message names the file, key or name at fault and, where there is one, the fix. Only a tool's
``main`` turns it into ``error: <message>`` and an exit status (:func:`instseg_d2.utils.cli.run_tool`);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "UserError"]


class UserError(Exception):
    """A problem in the user's input (a file, a config key, a dataset name, an option)."""


class ConfigError(UserError, ValueError):
    """A config file or ``KEY VALUE`` override that cannot be used; the message names it."""
