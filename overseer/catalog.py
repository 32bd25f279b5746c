"""The loaded job set: one immutable value that RepoSync replaces as a whole.

Readers (HTTP handlers, the Scheduler) take ``Catalog.current`` once and use
that snapshot; a sync never changes a JobSet somebody already holds.
"""
from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from overseer.jobs import Job


@dataclass(frozen=True)
class JobSet:
    commit: Optional[str]
    jobs: Mapping[str, Job] = field(default_factory=lambda: types.MappingProxyType({}))
    errors: tuple = ()  # ((file, message), ...)
    synced_at: Optional[str] = None
    url: str = ""
    branch: str = ""
    sync_error: Optional[str] = None  # the last fetch failure, if the remote is unreachable


class Catalog:
    """Holds the current JobSet and where each commit's snapshot lives."""

    def __init__(self, snapshots: Path):
        self.snapshots = snapshots
        self.current = JobSet(commit=None)

    def snapshot(self, commit: str) -> Path:
        return self.snapshots / commit

    def job(self, name: str) -> Optional[Job]:
        return self.current.jobs.get(name)
