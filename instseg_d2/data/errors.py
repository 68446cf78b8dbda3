"""Exceptions for bad dataset files and names: each message starts with what it is about."""

from __future__ import annotations

from ..utils.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


class UnknownDatasetError(DatasetError):
    """A dataset name that is not registered; the message gives the closest registered names."""
