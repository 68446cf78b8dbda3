"""One finding about a dataset (:class:`Problem`) and how a list of them is printed.

Readers, validation and the tools all speak in Problems, so a user sees every problem of a
dataset at once, each with the file it is about, whichever stage found it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    severity: str = "error"  # "error" stops training; "warning" is reported only

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.file}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def format_problems(problems: Sequence[Problem], dataset: str = "dataset", limit: int = 50) -> str:
    """A header line with the counts, then one line per problem (at most ``limit``)."""
    errors = sum(p.severity == "error" for p in problems)
    lines = [f"{dataset}: {errors} error(s), {len(problems) - errors} warning(s)"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
