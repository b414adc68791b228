"""One root error and a small tree; adapters translate library errors into these."""

from __future__ import annotations


class ProcessEngineError(Exception):
    """Root of every error process-engine raises on purpose."""

    retriable = False


class ConfigError(ProcessEngineError):
    """A setting is missing or malformed; the message names it."""


class DefinitionError(ProcessEngineError):
    """A definition file is invalid: carries the file, line and reason."""

    def __init__(self, reason: str, file: str | None = None, line: int | None = None):
        self.reason = reason
        self.file = file
        self.line = line
        super().__init__(self.location_text())

    def location_text(self) -> str:
        """`file:line: reason`, leaving out what is unknown."""
        where = self.file or "<definition>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.reason}"

    def at(self, file: str | None) -> DefinitionError:
        """The same error, placed in a file."""
        return DefinitionError(self.reason, file or self.file, self.line)


class DefinitionErrors(ProcessEngineError):
    """Every problem found in one or more definition files."""

    def __init__(self, errors: list[DefinitionError]):
        self.errors = list(errors)
        super().__init__("\n".join(error.location_text() for error in self.errors))


class ExpressionError(ProcessEngineError):
    """An expression failed to compile, left the sandbox or failed at run time."""


class LimitExceeded(ExpressionError):
    """An evaluation or an instance went past a bound (size, integer bits, nesting, CPU)."""


class StoreError(ProcessEngineError):
    """The instance store failed."""


class StoreUnavailable(StoreError):
    """The database cannot be reached; the caller pauses and retries."""

    retriable = True


class ConcurrencyConflict(StoreError):
    """A write was based on a stale instance version; re-read and re-apply."""

    retriable = True


class ActionError(ProcessEngineError):
    """A service action failed; `retriable` says whether another attempt may help."""

    def __init__(self, message: str, retriable: bool = True):
        self.retriable = retriable
        super().__init__(message)
