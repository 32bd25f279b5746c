"""The one exception tree of Overseer: every error a user can cause or see.

Each message names the thing at fault (the file, the key, the var, the value).
The HTTP status each maps to lives in one place: ``overseer.http.errors``.
"""
from __future__ import annotations


class OverseerError(Exception):
    """Base of every error Overseer raises on purpose."""


class ConfigError(OverseerError):
    """The configuration file is unreadable, or a key is unknown or of the wrong type."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class JobDefinitionError(OverseerError):
    """A job file does not parse or does not validate."""


class ParamError(OverseerError):
    """A var value posted for a run is missing, unknown or does not fit its type."""


class NotFound(OverseerError):
    """No such job, execution or event."""


class Conflict(OverseerError):
    """The request does not fit the current state (inactive job, execution not running)."""


class IdentityError(OverseerError):
    """A process on the event socket is not one of the execution its token names, or of none."""


class QueueFull(OverseerError):
    """``max_queued`` executions are already waiting."""

    def __init__(self, message: str, retry_after: int = 5):
        self.retry_after = retry_after
        super().__init__(message)


class StoreError(OverseerError):
    """The LMDB store cannot be opened or written."""


class StoreBusy(StoreError):
    """Every LMDB reader slot is taken; try again shortly."""


class RepositoryError(OverseerError):
    """The job repository cannot be cloned, fetched or read."""


class GitError(RepositoryError):
    """A git command that reaches the remote failed; the message is what git said, without
    credentials."""


class DataDirError(OverseerError):
    """The data dir cannot be locked for this server: another server holds it, or its lock file
    cannot be made."""
