"""Errors of corpus ingestion (flags) and of corpus folders (study keys)."""

from __future__ import annotations

from ..spec import SpecError


class IngestError(ValueError):
    """Bad ingest input. `flag` names the command-line flag (or argument) to change; the message
    says how. The CLI prints it and exits 2, having written nothing."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message


class CorpusError(SpecError):
    """A corpus folder cannot be used (missing, half-written, changed): a SpecError whose `field`
    is the study key that names it (data.path); the orchestrator exits 2 with it."""
