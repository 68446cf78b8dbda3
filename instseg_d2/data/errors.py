"""Exceptions for bad dataset files: each message starts with the file it is about."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""
