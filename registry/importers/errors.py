"""The one error an import raises for bad input: it names the file or URL at fault.

A subclass of ``ValidationFailed`` (``field="source"``), so the admin API answers it with
400 ``invalid_request_error`` in the OpenAI envelope and the command line prints one line and
exits with status 1, like every other registry error. Raised before anything is written."""

from __future__ import annotations

from registry.errors import ValidationFailed


class ImportFailed(ValidationFailed):
    """``where``: the file or URL; ``problem``: what is wrong with it."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}; nothing was imported", field="source")
        self.where = where
