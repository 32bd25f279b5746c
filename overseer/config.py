"""Configuration: YAML loaded once into frozen dataclasses (SPEC §2).

Every unknown key and every wrong type is reported with its key path, all of
them at once. Nothing here is global: the loaded ``Config`` is passed in.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from overseer.exceptions import ConfigError

DEFAULT_URL = "http://127.0.0.1:8080"


def _frozen_map(value: Mapping | None = None) -> Mapping:
    return types.MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class RepositoryConfig:
    url: str | None = None  # None: the bundled example repository (the embedded default)
    branch: str = "main"
    poll_interval: float = 60
    # A git host's push webhook may call POST /repo/sync without a bearer token when it signs
    # the request with this secret (overseer/http/push_signature.py). Never shown: repr=False.
    sync_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str | None = None  # default: http://HOST:PORT
    tokens: tuple[str, ...] = ()
    max_body_bytes: int = 1048576
    thread_pool: int = 64
    max_follows: int = 32


@dataclass(frozen=True)
class RunAsConfig:
    """``execution.run_as``: the user jobs run as (``user``), or a range of uids of which each
    running execution gets one of its own (``uids``, ``"61000-61999"``); ``group`` sets the
    primary group. Resolved and checked at the server's start (``overseer.process.run_as``)."""
    user: str | int | None = None
    uids: str | None = None
    group: str | int | None = None


@dataclass(frozen=True)
class ExecutionConfig:
    max_concurrent: int = 64
    max_queued: int = 10000
    kill_grace: float = 10
    max_output_bytes: int = 104857600
    max_render_seconds: float = 2
    max_events: int = 1000
    run_as: RunAsConfig | None = None  # None: jobs run as the server's user


@dataclass(frozen=True)
class RetentionConfig:
    executions_per_job: int = 1000


@dataclass(frozen=True)
class Config:
    repository: RepositoryConfig = field(default_factory=RepositoryConfig)
    data_dir: str = "./var"
    server: ServerConfig = field(default_factory=ServerConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen_map)
    hooks_secret: str | None = None

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def base_url(self) -> str:
        if self.server.base_url:
            return self.server.base_url.rstrip("/")
        host = self.server.host if self.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}"


# Positive-number constraints, by key path.
_POSITIVE = {"server.port", "server.max_body_bytes", "server.thread_pool", "server.max_follows",
             "execution.max_concurrent", "execution.max_queued", "execution.max_output_bytes",
             "execution.max_render_seconds", "execution.max_events", "retention.executions_per_job"}
_NON_NEGATIVE = {"repository.poll_interval", "execution.kill_grace"}
# Keys whose value is never repeated in a message (a credential).
_SECRETS = {"repository.sync_secret", "hooks_secret"}
MIN_SYNC_SECRET = 16  # characters


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(path: str, tp: Any, value: Any, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # scalars only (``str | int``): the value must be one of them
            if any(_is_a(value, tp) for tp in inner):
                return value
            names = " or ".join(_type_name(tp) for tp in inner)
            problems.append(f"{path}: must be {names}, got {value!r}")
            return None
        return _convert(path, inner[0], value, problems)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            problems.append(f"{path}: must be a mapping, got {type(value).__name__}")
            return tp()
        return _build(tp, value, path + ".", problems)
    if origin is tuple:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{path}: must be a list of strings")
            return ()
        return tuple(value)
    if origin is collections.abc.Mapping:
        if value is None:
            return _frozen_map()
        if not isinstance(value, dict):
            problems.append(f"{path}: must be a mapping of event name to a list of URLs")
            return _frozen_map()
        out = {}
        for key, urls in value.items():
            if isinstance(urls, str):
                urls = [urls]
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                problems.append(f"{path}.{key}: must be a list of URLs")
                continue
            bad = [u for u in urls if not u.startswith(("http://", "https://"))]
            if bad:
                problems.append(f"{path}.{key}: {bad[0]!r} is not an http(s) URL")
                continue
            out[str(key)] = tuple(urls)
        return _frozen_map(out)
    if not _is_a(value, tp):
        shown = f"a value of type {type(value).__name__}" if path in _SECRETS else repr(value)
        problems.append(f"{path}: must be {_type_name(tp)}, got {shown}")
        return None
    key = path
    if key in _POSITIVE and value <= 0:
        problems.append(f"{path}: must be greater than 0, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        problems.append(f"{path}: must not be negative, got {value!r}")
    return tp(value) if tp is float else value


def _is_a(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(cls: type, data: dict, prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key")
            continue
        converted = _convert(prefix + key, hints[key], value, problems)
        if converted is not None or value is None:
            kwargs[key] = converted
    kwargs = {k: v for k, v in kwargs.items() if v is not None or _optional(hints[k])}
    return cls(**kwargs)


def _optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def parse_config(data: Any, source: str = "config") -> Config:
    """Build a ``Config`` from parsed YAML; raise ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping at the top level")
    problems: list[str] = []
    config = _build(Config, data, "", problems)
    if config.execution.run_as is not None and not any(
            p.startswith("execution.run_as") for p in problems):  # a wrong type is said once
        problems += _run_as_problems(config.execution)
    if config.repository.sync_secret is not None:
        problems += _sync_secret_problems(config.repository.sync_secret)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return config


def uid_range(text: str) -> range:
    """``"61000-61999"`` as the range of those uids (both ends included); ValueError if it is not
    one."""
    first, dash, last = text.strip().partition("-")
    if not dash or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError(f"must be a range of uids FIRST-LAST, as 61000-61999, got {text!r}")
    low, high = int(first), int(last)
    if low > high:
        raise ValueError(f"the range {text!r} is empty: {low} is above {high}")
    if low == 0:
        raise ValueError(f"the range {text!r} holds uid 0 (root)")
    if high >= 2**32 - 1:
        raise ValueError(f"the range {text!r} goes beyond the largest uid, {2**32 - 2}")
    return range(low, high + 1)


def _run_as_problems(execution: ExecutionConfig) -> list[str]:
    """The shape of ``execution.run_as`` (names are looked up at the server's start)."""
    run_as, key = execution.run_as, "execution.run_as"
    if (run_as.user is None) == (run_as.uids is None):
        return [f"{key}: give either user (the one user every job runs as) or uids (a range, "
                "one uid per running execution), not both and not neither"]
    problems = []
    for name in ("user", "group"):
        value = getattr(run_as, name)
        if isinstance(value, int) and not 0 <= value < 2**32 - 1:
            problems.append(f"{key}.{name}: {value} is not a valid id")
        elif isinstance(value, str) and not value.strip():
            problems.append(f"{key}.{name}: must not be empty")
    if run_as.user in (0, "0", "root"):
        problems.append(f"{key}.user: jobs would run as root, as without run_as; name another user")
    if run_as.uids is not None:
        try:
            uids = uid_range(run_as.uids)
        except ValueError as e:
            return problems + [f"{key}.uids: {e}"]
        if len(uids) < execution.max_concurrent:
            problems.append(f"{key}.uids: {len(uids)} uids for up to {execution.max_concurrent} "
                            "running executions (execution.max_concurrent); each needs one of "
                            "its own")
    return problems


def _sync_secret_problems(secret: str) -> list[str]:
    """What is wrong with ``repository.sync_secret`` (never its value): a git host sends it in a
    header (GitLab) or signs with it (GitHub), so it is header text, and long enough not to be
    guessed."""
    key = "repository.sync_secret"
    if len(secret) < MIN_SYNC_SECRET:
        return [f"{key}: must be at least {MIN_SYNC_SECRET} characters long, got {len(secret)} "
                "(make one with: openssl rand -hex 32)"]
    if secret != secret.strip():
        return [f"{key}: must not begin or end with white space (a header cannot carry it)"]
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        return [f"{key}: must not hold control characters (a header cannot carry them)"]
    return []


def load_config(path: str | Path | None) -> Config:
    """Load the config file, or the embedded default when ``path`` is None."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loader
    except yaml.YAMLError as e:
        from overseer.repo.documents import yaml_error_text

        raise ConfigError(f"{path}: not valid YAML: {yaml_error_text(e, str(path))}") from None
    return parse_config(data, str(path))
