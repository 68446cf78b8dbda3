"""Exceptions for bad dataset files and names: each message starts with what it is about."""

from __future__ import annotations

from collections.abc import Sequence

from ..utils.errors import UserError
from .problems import Problem

# Lines of a many-problem message; the exception's ``problems`` keeps all of them.
MESSAGE_LIMIT = 50


class DatasetError(UserError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem.

    A reader that finds several problems raises one DatasetError (see :meth:`from_problems`)
    whose ``problems`` lists them all, so that a user fixes them in one pass.
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        super().__init__(message)
        self.problems = list(problems)

    @classmethod
    def from_problems(cls, source: str, problems: Sequence[Problem]) -> DatasetError:
        """One error for ``problems`` found while reading ``source`` (a file or folder)."""
        if len(problems) == 1:
            message = f"{problems[0].file}: {problems[0].message}"
        else:
            lines = [f"{source}: {len(problems)} problems"]
            lines += [f"  {p.file}: {p.message}" for p in problems[:MESSAGE_LIMIT]]
            if len(problems) > MESSAGE_LIMIT:
                lines.append(f"  ... and {len(problems) - MESSAGE_LIMIT} more")
            message = "\n".join(lines)
        return cls(message, problems)

    def as_problems(self) -> list[Problem]:
        """The problems this error stands for (one, parsed from the message, if none were kept)."""
        if self.problems:
            return list(self.problems)
        file, _, message = str(self).partition(": ")
        return [Problem(file, message or str(self))]


class UnknownDatasetError(DatasetError):
    """A dataset name that is not registered; the message gives the closest registered names."""
