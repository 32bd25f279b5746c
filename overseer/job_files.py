"""The files of a job repository: which files are jobs, symlinks that leave the tree, and reading a
job file's document (YAML through the safe C loader, or JSON), fast enough for 10,000 files.

The questions are asked of a working tree (:func:`scan`, :func:`escaping`) or, for a commit whose
snapshot is not checked out yet, of git's listing of its tree (:class:`Tree`), which answers
them as the snapshot will.
"""
from __future__ import annotations

import base64
import errno
import gc
import json
import logging
import math
import os
import posixpath
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

log = logging.getLogger(__name__)

JOB_SUFFIXES = (".yml", ".yaml", ".json")
SKIPPED_DIRS = ("bin", "scripts")
_SKIPPED_PREFIXES = tuple(f"{d}/" for d in SKIPPED_DIRS)
_SUFFIXES = frozenset(suffix[1:] for suffix in JOB_SUFFIXES)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_CONSTRUCTORS = {f"tag:yaml.org,2002:{name}": _LOADER.yaml_constructors[f"tag:yaml.org,2002:{name}"]
                        for name in ("null", "bool", "int", "float", "timestamp")}


def job_name_for(relpath: str) -> str | None:
    """The job name of a repository file (``team/backup.yaml`` -> ``team.backup``), None if no job.

    Files under the top-level ``bin/`` and ``scripts/``, in dot-directories, dot-files and
    files without a ``.yml``, ``.yaml`` or ``.json`` suffix are not jobs.
    """
    if os.sep != "/":
        relpath = relpath.replace(os.sep, "/")
    if relpath.startswith(_SKIPPED_PREFIXES) or relpath.startswith(".") or "/." in relpath:
        return None
    stem, dot, suffix = relpath.rpartition(".")
    if suffix not in _SUFFIXES or not stem or stem.endswith("/"):
        return None
    return stem.replace("/", ".")


def scan(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """One pass over the tree (``.git`` skipped, symlinked dirs not entered).

    Returns the job files (relative, '/'-separated, sorted) and every symlink as
    ``(relpath, absolute path)``.
    """
    jobs: list[str] = []
    links: list[tuple[str, str]] = []
    stack = [(str(root), "")]
    while stack:
        dirpath, rel = stack.pop()
        try:
            entries = list(os.scandir(dirpath))
        except OSError as exc:
            log.warning("cannot list %s: %s", dirpath, exc)
            continue
        for entry in entries:
            relpath = rel + entry.name
            if entry.is_symlink():
                links.append((relpath, entry.path))
                if _is_dir(entry):
                    continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name != ".git":
                    stack.append((entry.path, relpath + "/"))
            elif job_name_for(relpath) is not None:
                jobs.append(relpath)
    return sorted(jobs), sorted(links)


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a symlink loop or a link through a file too (is_dir raises
    for those): such a link is no directory, and a job file named so is reported unreadable."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def escaping(root: Path, links: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The symlinks of ``links`` that point outside ``root`` (absolute targets always do)."""
    real_root = os.path.realpath(root)
    errors = []
    for relpath, path in links:
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        if os.path.isabs(target) or os.path.commonpath([real_root, resolved]) != real_root:
            errors.append((relpath, f"symlink to {target!r} leaves the repository"))
    return errors


# -- the same questions, answered from git's listing of a commit --------------------------------

MAX_SYMLINKS = 40      # Linux follows at most 40 symlinks in one path lookup (ELOOP beyond)
_ROOT = "/\0"          # the checkout's root in the modelled file system: no git path or target holds a NUL
_FILE, _LINK, _DIR = "file", "link", "dir"
_DIR_ENTRY = (_DIR,)


class TreeError(Exception):
    """A tree that cannot be checked out as it is listed (git would refuse to write it)."""


class Tree:
    """The files of one commit as ``git ls-tree -r`` lists them, answering what a load asks of
    the commit's checked-out snapshot (overseer/snapshots.py) without a file written.

    Checking 10,000 files out is most of a fresh start's time on a slow disk; the jobs can be read
    from git's objects meanwhile, provided every answer is the one the snapshot will give. So this
    is a model of that snapshot: regular files (executable when git's mode says so), symlinks
    (``core.symlinks=true``; a target ends at its first NUL, as ``symlink(2)`` reads it), a
    submodule as the empty directory git leaves, and every symlink whose target leaves the
    repository (``os.path.realpath`` outside the root, with all the commit's symlinks in place)
    removed. ``realpath`` below follows ``posixpath.realpath`` step by step, ``resolve`` the
    kernel's lookup (``os.stat``), over that model. Nothing outside the root can lead back into
    it (a snapshot is checked out under a fresh directory name), so outside counts as missing.

    ``entries`` maps each path ('/'-separated) to ``(mode, object id)``; ``targets`` maps each
    symlink's path to its blob (the target as bytes).
    """

    def __init__(self, entries: dict[str, tuple[str, str]], targets: dict[str, bytes]):
        self.entries = entries
        kinds: dict[str, tuple] = {"": _DIR_ENTRY}
        for path, (mode, oid) in entries.items():
            if mode == "120000":
                raw = targets[path].split(b"\0", 1)[0]
                if not raw or len(raw) >= 4096:
                    raise TreeError(f"{path}: a symlink target of {len(raw)} bytes cannot be checked out")
                kinds[path] = (_LINK, os.fsdecode(raw))
            elif mode == "160000":
                kinds[path] = _DIR_ENTRY   # a submodule: git leaves an empty directory
            else:
                kinds[path] = (_FILE, oid, bool(int(mode, 8) & 0o100))
            parent = path.rpartition("/")[0]
            while parent and parent not in kinds:
                kinds[parent] = _DIR_ENTRY
                parent = parent.rpartition("/")[0]
        self._kinds = kinds
        self._dropped: frozenset[str] = frozenset()
        errors = []
        for path, kind in kinds.items():
            if kind[0] == _LINK and not _inside(self.realpath(path)):
                errors.append((path, f"symlink to {kind[1]!r} leaves the repository"))
        self.link_errors: list[tuple[str, str]] = sorted(errors)
        self._dropped = frozenset(path for path, _ in errors)

    @property
    def links(self) -> list[str]:
        """Every symlink of the commit (those that leave the repository too)."""
        return sorted(p for p, kind in self._kinds.items() if kind[0] == _LINK)

    def _kind(self, path: str) -> tuple | None:
        kind = self._kinds.get(path)
        if kind is not None and kind[0] == _LINK and path in self._dropped:
            return None
        return kind

    def realpath(self, relpath: str) -> str:
        """``os.path.realpath(root / relpath)`` in the model: a path under ``_ROOT`` when inside."""
        path, _ok = self._join_realpath(_ROOT, relpath, {})
        return posixpath.normpath(path)

    @staticmethod
    def relative(path: str) -> str:
        """The path under the root of a :meth:`realpath` result inside it."""
        if not _inside(path):
            raise ValueError(f"{path!r} is outside the tree")
        return path[len(_ROOT) + 1:]

    def _join_realpath(self, path: str, rest: str, seen: dict) -> tuple[str, bool]:
        """``posixpath._joinrealpath`` with ``lstat`` and ``readlink`` asked of the model."""
        if rest.startswith("/"):
            rest = rest[1:]
            path = "/"
        while rest:
            name, _, rest = rest.partition("/")
            if not name or name == ".":
                continue
            if name == "..":
                path = posixpath.split(path)[0] if path else ".."
                continue
            newpath = posixpath.join(path, name)
            kind = self._kind(newpath[len(_ROOT) + 1:]) if newpath.startswith(_ROOT + "/") else None
            if kind is None or kind[0] != _LINK:
                path = newpath
                continue
            if newpath in seen:
                path = seen[newpath]
                if path is not None:
                    continue
                return posixpath.join(newpath, rest), False   # a symlink loop
            seen[newpath] = None
            path, ok = self._join_realpath(path, kind[1], seen)
            if not ok:
                return posixpath.join(path, rest), False
            seen[newpath] = path
        return path, True

    def resolve(self, relpath: str, follow: bool = True) -> tuple[tuple | None, int]:
        """What ``os.stat`` (``os.lstat`` without ``follow``) finds at ``root / relpath``:
        ``(kind, 0)``, or ``(None, errno)``. A kind is ``("file", oid, executable)``,
        ``("link", target)`` or ``("dir",)``."""
        todo = _components(relpath)
        current: list[str] = []
        kind: tuple = _DIR_ENTRY
        followed = 0
        while todo:
            name = todo.pop()
            if kind[0] != _DIR:
                return None, errno.ENOTDIR
            if name == ".":
                continue
            if name == "..":
                if not current:
                    return None, errno.ENOENT   # above the root: nothing there leads back in
                current.pop()
                continue
            path = "/".join((*current, name))
            found = self._kind(path)
            if found is None:
                return None, errno.ENOENT
            if found[0] == _LINK and (todo or follow):
                followed += 1
                if followed > MAX_SYMLINKS:
                    return None, errno.ELOOP
                if found[1].startswith("/"):
                    return None, errno.ENOENT   # kept links never point outside
                todo.extend(_components(found[1]))
                continue   # from the link's directory
            current.append(name)
            kind = found
        return kind, 0

    def exists(self, relpath: str) -> bool:
        return self.resolve(relpath)[0] is not None

    def job_files(self) -> list[str]:
        """What :func:`scan` lists as job files in the snapshot, sorted."""
        jobs = []
        for path, kind in self._kinds.items():
            if kind[0] == _DIR or job_name_for(path) is None:
                continue
            if kind[0] == _LINK:
                if path in self._dropped:
                    continue
                target = self.resolve(path)[0]
                if target is not None and target[0] == _DIR:
                    continue   # os.scandir's is_dir() follows the link: not entered, not a job
            jobs.append(path)
        return sorted(jobs)

    def content(self, relpath: str) -> tuple[str | None, int]:
        """The object id of the bytes reading ``relpath`` gives, or ``(None, errno)``."""
        kind = self._kinds.get(relpath)
        if kind is not None and kind[0] == _FILE:
            return kind[1], 0   # a file of the tree: its directories are the tree's, no link among them
        kind, error = self.resolve(relpath)
        if kind is None:
            return None, error
        if kind[0] != _FILE:
            return None, errno.EISDIR
        return kind[1], 0


def _components(path: str) -> list[str]:
    """The components of ``path`` to walk, reversed (for ``pop``); a trailing slash as ``.``,
    which makes the kernel require a directory."""
    parts = [p for p in path.split("/") if p]
    if path.endswith("/") and parts:
        parts.append(".")
    parts.reverse()
    return parts


def _inside(path: str) -> bool:
    return path == _ROOT or path.startswith(_ROOT + "/")


MAX_NODES = 200_000   # after alias expansion: a job file is small; an alias bomb is not


_SCALAR, _MAPPING, _SEQUENCE = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_FLOAT = "tag:yaml.org,2002:float"


def _too_many(node: yaml.Node) -> ConstructorError:
    return ConstructorError(None, None, f"more than {MAX_NODES} nodes (aliases expanded)", node.start_mark)


def _construct(loader: Any, node: yaml.Node, state: list) -> Any:
    """Node graph -> Python, the common tags inline; the rest through the safe constructor.

    Faster than PyYAML's generator-based construction, and refuses a key given twice. Tags the
    safe constructor does not know (``!!python/object`` ...) raise ConstructorError there.
    Aliases are expanded (no shared objects), within ``state[0]`` nodes. ``state[1]`` turns False
    when a value is not one :func:`jsonable` leaves as it is (a date, a non-finite float, a key
    that is not text, anything the safe constructor made), so that a plain document need not be
    copied. Text scalars, most of every document, are taken inline.
    """
    state[0] -= 1
    if state[0] < 0:
        raise _too_many(node)
    kind = type(node)
    tag = node.tag
    if kind is _SCALAR:
        if tag == _STR:
            return node.value
        scalar = _SCALAR_CONSTRUCTORS.get(tag)
        if scalar is None:
            state[1] = False
            return loader.construct_object(node, deep=True)
        value = scalar(loader, node)
        if tag == _TIMESTAMP or (tag == _FLOAT and not math.isfinite(value)):
            state[1] = False
        return value
    if kind is _MAPPING and tag == _MAP:
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                state[1] = False
                return loader.construct_object(node, deep=True)
            if type(key_node) is _SCALAR and key_node.tag == _STR:
                state[0] -= 1
                if state[0] < 0:
                    raise _too_many(key_node)
                key = key_node.value
            else:
                key = _construct(loader, key_node, state)
                if type(key) is not str:
                    state[1] = False
            try:
                seen = key in result
            except TypeError:
                raise ConstructorError(None, None, "found an unhashable key", key_node.start_mark) from None
            if seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if type(value_node) is _SCALAR and value_node.tag == _STR:
                state[0] -= 1
                if state[0] < 0:
                    raise _too_many(value_node)
                result[key] = value_node.value
            else:
                result[key] = _construct(loader, value_node, state)
        return result
    if kind is _SEQUENCE and tag == _SEQ:
        items = []
        for item in node.value:
            if type(item) is _SCALAR and item.tag == _STR:
                state[0] -= 1
                if state[0] < 0:
                    raise _too_many(item)
                items.append(item.value)
            else:
                items.append(_construct(loader, item, state))
        return items
    state[1] = False
    return loader.construct_object(node, deep=True)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


class _Loader(_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader with a memo for implicit scalar tags: job files repeat the same keys.

    No path resolvers are registered (``yaml_path_resolvers`` is empty), so a plain scalar's tag
    depends on its text alone, a quoted one's, a sequence's and a mapping's on nothing, and the
    resolver's path bookkeeping is skipped.
    """

    _tags: dict[str, str] = {}

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is _SCALAR:
            if not implicit[0]:
                return _STR
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._tags) > 65536:
                    self._tags.clear()
                self._tags[value] = tag
            return tag
        if kind is _MAPPING:
            return _MAP
        if kind is _SEQUENCE:
            return _SEQ
        return super().resolve(kind, value, implicit)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


def parse_document(data: bytes, is_json: bool) -> Any:
    """The document of a job file.

    Raises json.JSONDecodeError, ValueError (a duplicate JSON key, bad encoding) or yaml.YAMLError.
    """
    return load_document(data, is_json)[0]


def load_document(data: bytes, is_json: bool) -> tuple[Any, bool]:
    """``(document, plain)``: :func:`parse_document`'s document, and whether :func:`jsonable` would
    give it back unchanged (JSON types only, finite numbers, text keys)."""
    if is_json:
        state = [0, True]

        def number(text: str) -> float:
            value = float(text)
            if not math.isfinite(value):
                state[1] = False
            return value
        doc = json.loads(data, object_pairs_hook=_unique_pairs, parse_float=number, parse_constant=number)
        return doc, state[1]
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, True
        state = [MAX_NODES, True]
        doc = _construct(loader, node, state)
        return doc, state[1]
    finally:
        loader.dispose()


def read_bytes(root: Path, relpath: str) -> bytes:
    fd = os.open(os.path.join(root, relpath), os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk load (re-entrant, across threads).

    Parsing thousands of files allocates millions of short-lived containers; with the collector
    running, its generational passes cost about a quarter of the load. Reference counting still
    frees everything that is not in a cycle; the collector resumes afterwards. What the load
    made and kept (10,000 jobs: some 100,000 containers) would then be traversed by the next
    young collection and again by the next middle one (0.1 s here) only to end in the oldest
    generation: ``gc.freeze()`` + ``gc.unfreeze()`` puts every tracked object there at once
    (cyclic garbage among them waits for the next full collection).
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.freeze()
                gc.unfreeze()
                gc.enable()


def jsonable(value: Any) -> Any:
    """A parsed document as JSON types: YAML times, dates, bytes and sets converted, keys as text."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
