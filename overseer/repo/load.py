"""Loading a job repository: finding job files, parsing and validating them into Jobs (SPEC §3, §4).

:func:`load_repository` works on a plain working tree (no git): ``overseer validate`` passes a
checkout, RepoSync a snapshot's root when it cannot read the commit from git. :func:`load_tree`
gives the same result from a commit's tree as git lists it (overseer/repo/tree.py ``Tree``) and
its blobs, before any file of it is checked out. RepoSync fills in the commit. A file that does
not validate is reported as ``(file, message)`` and skipped; the message names the key, var or
value at fault. The checks of each key of a job file are in overseer/repo/fields.py.
"""
from __future__ import annotations

import errno as _errno
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from overseer.exceptions import JobDefinitionError
from overseer.model.job import JOB_NAME_RE, MAX_JOB_NAME, Job
from overseer.repo import parse_helper
from overseer.repo.documents import jsonable, load_document, yaml_error_text
from overseer.repo.fields import (
    command_field,
    definition_error,
    env_field,
    hooks_field,
    make_frozen,
    positive_field,
    schedule_field,
    script_field,
    tree_script_field,
    unknown_key,
    vars_field,
)
from overseer.repo.files import escaping, gc_paused, job_name_for, read_bytes, scan
from overseer.repo.parse_cache import ParseCache, digest
from overseer.repo.tree import Tree

__all__ = ["discover", "job_name_for", "load_repository", "load_tree", "parse_job", "with_commit"]

log = logging.getLogger(__name__)

JOB_KEYS = ("command", "script", "timeout", "vars", "schedule", "description", "hooks", "env",
            "max_concurrent")
_JOB_KEY_SET = frozenset(JOB_KEYS)
MAX_JOB_FILE_BYTES = 1 << 20  # a job file is a few lines; a bigger one is refused before it is parsed


def discover(root: Path) -> list[str]:
    """Relative paths ('/'-separated, sorted) of the job files under ``root``."""
    return scan(Path(root))[0]


def escaping_symlinks(root: Path) -> list[tuple[str, str]]:
    """Every symlink in the tree (bin/ and scripts/ included) that points outside it."""
    return escaping(Path(root), scan(Path(root))[1])


def with_commit(job: Job, commit: str) -> Job:
    """``replace(job, commit=commit)`` without re-running ``__init__``: a sync sets the commit of
    every job (10,000 of them in one large repository), and ``replace`` was a third of it."""
    new = object.__new__(Job)
    new.__dict__.update(job.__dict__)
    object.__setattr__(new, "commit", commit)
    return new


def _document(relpath: str, data: bytes, loaded: tuple[Any, bool] | None = None) -> tuple[dict, bool]:
    """The job file's mapping, and whether it is plain JSON data already (see ``load_document``);
    ``loaded`` is ``load_document``'s answer when another process gave it."""
    is_json = relpath.endswith(".json")
    try:
        doc, plain = loaded if loaded is not None else load_document(data, is_json)
    except json.JSONDecodeError as exc:
        raise definition_error(f"invalid JSON on line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise definition_error(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # a duplicate JSON key; a number too long to convert
        raise definition_error(f"invalid {'JSON' if is_json else 'YAML'}: {exc}") from None
    except yaml.YAMLError as exc:
        raise definition_error(f"invalid YAML: {yaml_error_text(exc, relpath)}") from None
    except RecursionError:
        raise definition_error("the document is nested too deeply") from None
    if isinstance(doc, list) and len(doc) == 1 and isinstance(doc[0], dict):
        doc = doc[0]
    if isinstance(doc, dict):
        return doc, plain
    if doc is None:
        raise definition_error("the file is empty: a job file holds a mapping")
    if isinstance(doc, list):
        raise definition_error(
            f"a job file holds a mapping or a list of one mapping, not a list of {len(doc)} items")
    raise definition_error(f"a job file holds a mapping, not {type(doc).__name__}")


@lru_cache(maxsize=32768)
def _parse_content(relpath: str, data: bytes) -> Job:
    """Everything about a job that its path and bytes decide (cached: reloads of unchanged files
    are free). ``script`` is left as written; :func:`parse_job` checks it against the tree."""
    return _job_of(relpath, data, None)


def _job_of(relpath: str, data: bytes, loaded: tuple[Any, bool] | None) -> Job:
    """:func:`_parse_content`, uncached, with the document when it was loaded elsewhere."""
    name = job_name_for(relpath)
    if name is None:
        raise definition_error(f"{relpath!r} is not a job file")
    if not JOB_NAME_RE.match(name):
        raise definition_error(f"job name {name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]*")
    if len(name) > MAX_JOB_NAME:
        raise definition_error(f"job name {name[:40]!r}... is {len(name)} characters long; job names "
                               f"(the file's path, its directories joined by '.') are limited to "
                               f"{MAX_JOB_NAME}")
    doc, plain = _document(relpath, data, loaded)
    for key in doc:
        if key not in _JOB_KEY_SET:
            raise unknown_key(key, JOB_KEYS)
    command, script = doc.get("command"), doc.get("script")
    if command is not None and script is not None:
        raise definition_error("command and script: a job has one or the other, not both")
    if script is not None and (not isinstance(script, str) or not script.strip()):
        raise definition_error(f"script: {script!r} is not a path")
    timeout = doc.get("timeout")
    if timeout is not None:
        timeout = float(positive_field("timeout", timeout, integer=False))
    max_concurrent = doc.get("max_concurrent")
    if max_concurrent is not None:
        positive_field("max_concurrent", max_concurrent, integer=True)
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise definition_error(f"description: must be text, not {type(description).__name__}")
    specs = vars_field(doc.get("vars"))
    return make_frozen(
        Job,
        name=name,
        file=relpath,
        command=command_field(command, specs) if command is not None else None,
        script=script,
        timeout=timeout,
        vars=specs,
        schedule=schedule_field(doc.get("schedule"), specs),
        description=description,
        hooks=hooks_field(doc.get("hooks")),
        env=env_field(doc.get("env")),
        max_concurrent=max_concurrent,
        definition=doc if plain else jsonable(doc),
        commit=None,
    )


def parse_job(root: Path, relpath: str, data: bytes | None = None, cache: ParseCache | None = None,
              used: dict | None = None) -> Job:
    """Parse and validate one job file; raise JobDefinitionError naming what is wrong.

    ``data`` is the file's content when the caller has it, else the file is read. With ``cache``,
    a file parsed before (same path, same bytes) is taken from it, and every valid job is noted
    in ``used`` for the next ``cache.save``.
    """
    relpath = relpath.replace(os.sep, "/")
    if data is None:
        try:
            size = os.stat(os.path.join(root, relpath)).st_size
            if size <= MAX_JOB_FILE_BYTES:
                data = read_bytes(root, relpath)
        except OSError as exc:
            raise definition_error(f"cannot read the file: {exc.strerror or exc}") from None
    else:
        size = len(data)
    if size > MAX_JOB_FILE_BYTES or len(data) > MAX_JOB_FILE_BYTES:
        raise _too_big(size)
    job = _content_job(relpath, bytes(data), cache, used)
    if job.script is not None:
        job = replace(job, script=script_field(root, job.script))
    return job


def _too_big(size: int) -> JobDefinitionError:
    return definition_error(f"the file is {size} bytes; job files are limited to {MAX_JOB_FILE_BYTES} bytes")


def _content_job(relpath: str, data: bytes, cache: ParseCache | None, used: dict | None,
                 key: bytes | None = None, loaded: tuple[Any, bool] | None = None) -> Job:
    """The job of ``relpath`` holding ``data``, its script not checked yet: from ``cache`` when it
    has it (``key`` is the content digest, when known), else parsed (from ``loaded``, the document
    another process loaded, when given)."""
    try:
        job = None
        if cache is not None:
            if key is None:
                key = digest(data)
            job = cache.get(relpath, key)
        if job is None:
            job = _parse_content(relpath, data) if loaded is None else _job_of(relpath, data, loaded)
        if used is not None:
            used[(relpath, key or b"")] = job
        return job
    except JobDefinitionError:
        raise
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the whole load
        log.warning("%s: unexpected error while validating", relpath, exc_info=True)
        raise definition_error(f"cannot be validated: {type(exc).__name__}: {exc}") from None


def _unique_names(paths: list[str], errors: list[tuple[str, str]]) -> list[str]:
    """The job files of ``paths`` (sorted) whose name no other file gives; both files of a name
    given twice go to ``errors``."""
    by_name: dict[str, list[str]] = {}
    for relpath in paths:
        by_name.setdefault(job_name_for(relpath), []).append(relpath)
    unique = []
    for name, same in by_name.items():
        if len(same) == 1:
            unique.append(same[0])
            continue
        for path in same:
            others = ", ".join(p for p in same if p != path)
            errors.append((path, f"job name {name!r} is also given by {others}"))
    return unique


def load_repository(root: Path, cache: ParseCache | None = None
                    ) -> tuple[dict[str, Job], list[tuple[str, str]]]:
    """Every valid job under ``root`` by name, and every problem as ``(file, message)``, by file.
    With ``cache``, unchanged files are not parsed again, and what this load used is left in
    ``cache.used`` for ``cache.save``."""
    root = Path(root)
    used: dict | None = {} if cache is not None else None
    paths, links = scan(root)
    errors = escaping(root, links)
    leaving = {path for path, _ in errors}
    jobs: dict[str, Job] = {}
    with gc_paused():
        for relpath in _unique_names([p for p in paths if p not in leaving], errors):
            try:
                job = parse_job(root, relpath, cache=cache, used=used)
                jobs[job.name] = job
            except JobDefinitionError as exc:
                errors.append((relpath, str(exc)))
    if cache is not None:
        cache.used = used
    errors.sort()
    if errors:
        log.info("job repository %s: %d valid jobs, %d problems", root, len(jobs), len(errors))
    return jobs, errors


BlobReader = Callable[[list[str], int], Mapping[str, tuple[int, "bytes | None"]]]


def load_tree(tree: Tree, read_blobs: BlobReader, cache: ParseCache | None = None
              ) -> tuple[dict[str, Job], list[tuple[str, str]]]:
    """What :func:`load_repository` gives for the commit's snapshot, from ``tree`` and its blobs:
    ``read_blobs(oids, limit)`` returns ``oid -> (size, bytes)``, the bytes None above ``limit``
    (overseer/repo/snapshots.py ``Snapshots.read_blobs``). With ``cache``, a job file whose blob the
    cache knows is not read at all; ``cache.used`` and ``cache.used_blobs`` are left for
    ``cache.save``."""
    used: dict | None = {} if cache is not None else None
    used_blobs: dict[str, bytes] = {}
    errors = list(tree.link_errors)
    found: dict[str, Job] = {}
    unread: list[tuple[str, str]] = []
    with gc_paused():
        files = _unique_names(tree.job_files(), errors)
        for relpath in files:
            oid, error = tree.content(relpath)
            if oid is None:
                errors.append((relpath, f"cannot read the file: {os.strerror(error or _errno.EIO)}"))
                continue
            key = cache.digest_of(oid) if cache is not None else None
            job = cache.get(relpath, key) if key is not None else None
            if job is None:
                unread.append((relpath, oid))
                continue
            used[(relpath, key)] = job
            used_blobs[oid] = key
            found[relpath] = job
        blobs = read_blobs(sorted({oid for _, oid in unread}), MAX_JOB_FILE_BYTES) if unread else {}
        # A large load (a fresh start) has part of the files parsed by a second process meanwhile.
        unread, aside = parse_helper.share(unread, lambda item: blobs[item[1]][1])

        def one(relpath: str, oid: str, loaded: tuple[Any, bool] | None) -> None:
            size, data = blobs[oid]
            try:
                if data is None or size > MAX_JOB_FILE_BYTES:
                    raise _too_big(size)
                key = digest(data) if cache is not None else None
                found[relpath] = _content_job(relpath, data, cache, used, key, loaded)
            except JobDefinitionError as exc:
                errors.append((relpath, str(exc)))
                return
            if key is not None:
                used_blobs[oid] = key

        helper = None
        if aside:
            helper = parse_helper.Aside([(p.endswith(".json"), blobs[oid][1]) for p, oid in aside])

        def helped(wait: bool) -> None:   # the helper's answers in now (with wait, at least one)
            at = helper.taken
            for (relpath, oid), loaded in zip(aside[at:], helper.take(wait)):
                one(relpath, oid, loaded)
        for n, (relpath, oid) in enumerate(unread, 1):
            one(relpath, oid, None)
            if helper is not None and n % parse_helper.FRAME == 0:
                helped(wait=False)
        while helper is not None and helper.taken < len(aside):
            helped(wait=True)
        jobs: dict[str, Job] = {}
        for relpath in files:   # in the order load_repository gives
            job = found.get(relpath)
            if job is None:
                continue
            if job.script is not None:
                try:
                    job = replace(job, script=tree_script_field(tree, job.script))
                except JobDefinitionError as exc:
                    errors.append((relpath, str(exc)))
                    continue
            jobs[job.name] = job
    if cache is not None:
        cache.used, cache.used_blobs = used, used_blobs
    errors.sort()
    if errors:
        log.info("job repository tree: %d valid jobs, %d problems", len(jobs), len(errors))
    return jobs, errors
