"""The one exception tree of Overseer: every error a user can cause or see.

Each message names the thing at fault (the file, the key, the var, the value).
The HTTP status each maps to lives in one place: ``overseer.http.errors``; an
exception outside this tree that reaches it is a bug, answered 500 and logged.
The two that a run's start meets among the OS's own errors (``SnapshotError``,
``NoFreeUid``) are OSErrors too, so the start reports them as it does those.
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


class TokenError(OverseerError):
    """A token on the event socket is no running execution's (unknown, or its run has ended)."""


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
    """A git command that reaches the remote failed; the message is what git said, no credentials."""


class TreeError(RepositoryError):
    """A commit's tree cannot be checked out as git lists it (git would refuse to write it)."""


class CheckoutCancelled(RepositoryError):
    """The server stopped before this snapshot's checkout began."""


class SnapshotError(RepositoryError, OSError):
    """A run's snapshot is not complete within ``execution.snapshot_wait``, or could not be made."""


class NoFreeUid(OverseerError, OSError):
    """Every uid of ``execution.run_as.uids`` is a running execution's: the run cannot start yet."""


class DataDirError(OverseerError):
    """The data dir cannot be locked for this server: another holds it, or its lock cannot be made."""


class ClientError(OverseerError):
    """A client command cannot be done: the server does not answer, or refuses it."""
