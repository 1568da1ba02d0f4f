"""Problems found in a dial plan, each pointing at a file position an operator can open."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dial plan.

    ``line`` and ``col`` are 1-based.  ``line == 0`` means the problem is about the
    file as a whole (it could not be read), and ``str()`` then omits the position.
    """

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class DialPlanError(Exception):
    """The dial plan cannot be used; ``problems`` lists everything found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.col))
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
