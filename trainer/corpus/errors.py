"""The one error type of corpus ingestion."""

from __future__ import annotations


class IngestError(ValueError):
    """Bad ingest input. `flag` names the command-line flag (or argument) to change; the message
    says how. The CLI prints it and exits 2, having written nothing."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message
