"""What a job kind's functions receive as ``ctx``: ``KindContext`` is the contract kinds are typed
against; ``JobContext`` is the worker's implementation of it, over a progress reporter
(jobs/reporter.py). ``Split`` is what a parallel kind's ``run`` returns."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Protocol
from uuid import UUID

from jobs.conf import app_settings


class Split:
    """Returned by a parallel kind's ``run``: the chunks to run, each a JSON-serializable dict."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        if not chunks:
            raise ValueError("A split needs at least one chunk.")
        self.chunks = chunks


class KindContext(Protocol):
    """What a kind may use of ``ctx``."""

    job_id: UUID
    owner_id: int | None
    result_file: str | None
    # Which attempt this is (1-based; jobs/retries.py) and how many the job may have in all.
    attempt: int
    max_attempts: int

    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None: ...

    def log(self, line: object) -> None: ...

    @property
    def cancelled(self) -> bool: ...

    def split(self, chunks: list[dict[str, Any]]) -> Split: ...

    def open_result_file(self, filename: str, mode: str = "w", **kwargs: Any) -> IO[Any]: ...


class Reporter(Protocol):
    """What a JobContext reports through (jobs.reporter.ProgressReporter and ChunkReporter)."""

    job_id: UUID
    cancelled: bool

    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None: ...

    def log(self, line: object) -> None: ...


class JobContext:
    """What a job kind's function receives as ``ctx``."""

    def __init__(
        self, reporter: Reporter, *, owner_id: int | None = None, attempt: int = 1, max_attempts: int = 1
    ) -> None:
        self._reporter = reporter
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.progress = reporter.progress
        self.log = reporter.log
        self.job_id = reporter.job_id
        self.owner_id = owner_id
        self.result_file: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._reporter.cancelled

    def split(self, chunks: list[dict[str, Any]]) -> Split:
        return Split(chunks)

    def open_result_file(self, filename: str, mode: str = "w", **kwargs: Any) -> IO[Any]:
        """A file in private storage that becomes the job's downloadable result."""
        name = f"results/{self.job_id}/{Path(filename).name}"
        path = Path(app_settings.PRIVATE_DIR) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.result_file = name
        return path.open(mode, **kwargs)
