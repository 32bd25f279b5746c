"""Every problem of a job file, not only the first (``overseer validate --all-problems``).

Loading a repository (overseer/repo/load.py) stops at a file's first problem: that is all a sync needs
to skip the file. Someone fixing a file wants them all at once; so here each key of the document
is checked on its own, with the same checks (overseer/repo/fields.py) and so the same messages, and
each var, schedule entry, hook and env entry on its own too. Only the files that failed to load
are checked again, so this costs nothing when a repository is valid.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overseer.exceptions import JobDefinitionError
from overseer.model.schedule_parse import parse_entry
from overseer.model.vars import VAR_TYPES, VarSpec
from overseer.repo.fields import (
    _var,
    command_field,
    env_field,
    hooks_field,
    positive_field,
    schedule_field,
    script_field,
    unknown_key,
    vars_field,
)
from overseer.repo.files import escaping, read_bytes, scan
from overseer.repo.load import JOB_KEYS, MAX_JOB_FILE_BYTES, _document, parse_job

__all__ = ["all_problems", "file_problems"]


def all_problems(root: Path, errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``errors`` (``load_repository``'s, by file) with every further problem of each file added
    after that file's own. Symlinks that leave the repository are not read."""
    _paths, links = scan(root)
    leaving = {path for path, _ in escaping(root, links)}
    out: list[tuple[str, str]] = []
    done: set[str] = set()
    for relpath, _message in errors:
        if relpath in done:
            continue
        done.add(relpath)
        messages = [m for f, m in errors if f == relpath]
        if relpath not in leaving:
            messages += [m for m in file_problems(root, relpath) if m not in messages]
        out += [(relpath, m) for m in messages]
    return out


class _Problems(list):
    """The messages found, each once, in the order found."""

    def add(self, message: str) -> None:
        if message not in self:
            self.append(message)

    def check(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None with its error added."""
        try:
            return fn()
        except JobDefinitionError as exc:
            self.add(str(exc))
        except Exception as exc:  # noqa: BLE001 - as the loader: one odd value must not stop the rest
            self.add(f"cannot be validated: {type(exc).__name__}: {exc}")
        return None


def file_problems(root: Path, relpath: str) -> list[str]:
    """Every problem of the job file ``relpath`` under ``root``: first the one loading it reports,
    then those its keys give when each is checked on its own. Empty for a valid file."""
    problems = _Problems()
    problems.check(lambda: parse_job(root, relpath))
    try:
        if os.stat(os.path.join(root, relpath)).st_size > MAX_JOB_FILE_BYTES:
            return problems
        doc, _plain = _document(relpath, read_bytes(root, relpath))
    except (OSError, JobDefinitionError):
        return problems   # unreadable, or no document to look into: the first problem says it
    for key in doc:
        if key not in JOB_KEYS:
            problems.add(str(unknown_key(key, JOB_KEYS)))
    command, script = doc.get("command"), doc.get("script")
    if command is not None and script is not None:
        problems.add("command and script: a job has one or the other, not both")
    for key, integer in (("timeout", False), ("max_concurrent", True)):
        if doc.get(key) is not None:
            problems.check(lambda key=key, integer=integer: positive_field(key, doc[key], integer=integer))
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        problems.add(f"description: must be text, not {type(description).__name__}")
    specs, named = _vars(doc.get("vars"), problems)
    _schedule(doc.get("schedule"), specs, problems)
    for key, field in (("hooks", hooks_field), ("env", env_field)):
        raw = doc.get(key)
        if isinstance(raw, dict):
            for name, value in raw.items():
                problems.check(lambda field=field, name=name, value=value: field({name: value}))
        elif raw is not None:
            problems.check(lambda field=field, raw=raw: field(raw))
    if command is not None:
        problems.check(lambda: command_field(command, named))
    elif script is not None:
        problems.check(lambda: script_field(root, script))
    return list(problems)


def _vars(raw: Any, problems: _Problems) -> tuple[tuple[VarSpec, ...], tuple[VarSpec, ...]]:
    """The vars that are valid, and those plus a stand-in for each broken one that has a name (so
    that the command is not blamed for using a var whose declaration is what is wrong)."""
    if not isinstance(raw, list):
        if raw is not None:
            problems.check(lambda: vars_field(raw))
        return (), ()
    specs, named, seen = [], [], {}
    for index, item in enumerate(raw):
        spec = problems.check(lambda index=index, item=item: _var(index, item))
        if spec is None:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                kind = item.get("type", "str")
                named.append(VarSpec(name=name, type=kind if kind in VAR_TYPES else "str"))
            continue
        upper = spec.name.upper()
        if upper in seen:   # as vars_field says it
            same = "repeats" if seen[upper] == spec.name else "differs only in case from"
            problems.add(f"vars[{index}] ({spec.name}): name {same} var {seen[upper]!r}")
            continue
        seen[upper] = spec.name
        specs.append(spec)
        named.append(spec)
    return tuple(specs), tuple(named)


def _schedule(raw: Any, specs: tuple[VarSpec, ...], problems: _Problems) -> None:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        if raw is not None:
            problems.check(lambda: schedule_field(raw, specs))
        return
    valid = [item for index, item in enumerate(raw)
             if problems.check(lambda index=index, item=item: parse_entry(index, item)) is not None]
    if valid:
        problems.check(lambda: schedule_field(valid[:1], specs))   # a required var without a default
