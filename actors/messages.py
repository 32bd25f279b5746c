"""The messages actors send each other with ``tell``: frozen, immutable values.

Pykka does not copy messages, so everything in here is immutable (tuples,
frozen dataclasses, MappingProxyType).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional

from overseer.repo.catalog import JobSet


class State(str, enum.Enum):
    """An execution's lifecycle state (SPEC §5)."""

    QUEUED = "queued"
    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"


class Source(str, enum.Enum):
    """Who created an event."""

    SYSTEM = "system"
    API = "api"
    JOB = "job"


@dataclass(frozen=True)
class JobsLoaded:
    """RepoSync loaded a commit: the whole new job set."""

    jobset: JobSet


@dataclass(frozen=True)
class EventRecorded:
    """An event was stored on an execution; the Notifier delivers its webhooks."""

    job: str
    ident: int
    name: str
    cause: Optional[str]
    time: str
    source: str
    job_hooks: tuple  # ((event name, (url, ...)), ...) from the job definition
    state: str  # the execution's state with this event recorded
    outcome: Optional[str]  # its final status once finished (notes after the end keep it), else None


@dataclass(frozen=True)
class ProcessExited:
    """The monitor reaped an execution's main process."""

    status: Any  # overseer.process.job_process.ExitStatus


@dataclass(frozen=True)
class TimedOut:
    """An execution's ``timeout`` passed."""


@dataclass(frozen=True)
class OutputTruncated:
    """An execution reached ``max_output_bytes``."""

    limit: int


@dataclass(frozen=True)
class Shutdown:
    """The server is stopping: terminate the process (SIGKILL after ``kill_grace``)."""
