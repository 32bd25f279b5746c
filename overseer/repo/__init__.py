"""The job repository: git, a snapshot per commit, the job files found and parsed in them, and the
catalog of the jobs served.

The main names are re-exported here and imported on first use, so that a process that needs one
module (the parse helper) does not import the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Catalog, JobSet
    from .load import load_repository, load_tree, parse_job
    from .snapshots import Snapshots

_EXPORTS = {"Catalog": "catalog", "JobSet": "catalog", "Snapshots": "snapshots", "load_repository": "load",
            "load_tree": "load", "parse_job": "load"}
__all__ = ["Catalog", "JobSet", "Snapshots", "load_repository", "load_tree", "parse_job"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
