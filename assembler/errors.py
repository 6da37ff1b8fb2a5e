"""The assembler's one error type, and the source position it points at."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AsmError", "SourceLine"]


class AsmError(Exception):
    """An assembly error at a source position.

    ``str(err)`` reads::

        FILE:LINE:COL: error: MESSAGE
            SOURCE LINE
            ^

    with the caret under column COL (1-based, counted in characters).

    Attributes
    ----------
    file : str
        The source name given to the assembler (a path or ``"<string>"``).
    line, col : int
        1-based line and column.
    message : str
        What is wrong and what was expected.
    source_line : str
        The offending line as shown, tabs replaced by single spaces so that the caret lines up.
    """

    def __init__(self, file: str, line: int, col: int, message: str, source_line: str):
        self.file = file
        self.line = line
        self.col = max(1, col)
        self.message = message
        self.source_line = source_line
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"{self.file}:{self.line}:{self.col}: error: {self.message}\n"
                f"    {self.source_line}\n"
                f"    {' ' * (self.col - 1)}^")

    def __reduce__(self):
        # Exceptions with a custom __init__ need this to survive pickling (multiprocessing, ray).
        return (AsmError, (self.file, self.line, self.col, self.message, self.source_line))


@dataclass(frozen=True)
class SourceLine:
    """One line of source: where errors on it point."""
    file: str
    number: int
    text: str

    def error(self, col: int, message: str) -> AsmError:
        """An :class:`AsmError` at column ``col`` of this line (raise it)."""
        return AsmError(self.file, self.number, col, message, self.text.replace("\t", " "))
