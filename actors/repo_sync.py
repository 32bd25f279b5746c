"""The RepoSync actor: fetch the job repository, snapshot each commit, load the jobs.

Git runs with hooks disabled, no submodules, no ``ext::`` transport and no
terminal prompts; the remote branch is fetched with a forced refspec, so a
force-push is taken as it is. Every commit gets one read-only snapshot
directory under ``data_dir/snapshots``, which its executions run in; a pull
never touches a snapshot somebody uses. A job that a new commit breaks keeps
its last valid definition (and its commit's snapshot) until it is fixed.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import re
import shutil
import threading
import types
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

import git
import pykka

from overseer import jobs as jobmodel
from overseer.catalog import JobSet
from overseer.exceptions import RepositoryError
from overseer.parse_cache import ParseCache
from overseer.snapshots import GIT_CONFIG, Snapshots

from .context import Context, Pingable
from .messages import JobsLoaded

log = logging.getLogger(__name__)

GIT_TIMEOUT = 300
_GIT_CONFIG = GIT_CONFIG


_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact_url(url: str) -> str:
    """The URL without credentials: for logs and the API."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))
    return url


def scrub(text: str) -> str:
    """Remove credentials from any URL inside ``text``."""
    return _CREDENTIALS.sub(r"\1***@", text)


def check_url(url: str) -> str:
    if not url or url.startswith("-"):
        raise RepositoryError(f"repository.url {redact_url(url)!r} is not a usable git URL")
    if url.lower().startswith("ext::") or "::" in url.split("/", 1)[0]:
        raise RepositoryError(f"repository.url {redact_url(url)!r}: remote helper transports are refused")
    return url


# A remote that stops answering (a black-holed host, a proxy that accepts and hangs) must not hold
# the sync, and the first start, for GIT_TIMEOUT: a transfer slower than 1 byte/s for a minute is
# given up (git's GIT_HTTP_LOW_SPEED_* for http(s), keep-alives for ssh). The environment may
# set other values.
LOW_SPEED_TIME = "60"
SSH_COMMAND = "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"


def _git_env() -> dict:
    env = dict(os.environ)
    env.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1")
    env.setdefault("GIT_HTTP_LOW_SPEED_TIME", LOW_SPEED_TIME)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_ASKPASS="/bin/false",
               GIT_SSH_COMMAND=env.get("GIT_SSH_COMMAND", SSH_COMMAND))
    return env


class RepoSync(Pingable, pykka.ThreadingActor):
    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx
        cfg = ctx.config.repository
        self.url = cfg.url
        self.branch = cfg.branch
        self.git_dir = ctx.config.data_path / "repo.git"
        self.snapshots = Snapshots(ctx.catalog.snapshots, self.git_dir, _git_env())
        self._poller: Optional[threading.Thread] = None
        self._halt = threading.Event()
        self.parse_cache: Optional[ParseCache] = None

    def on_start(self) -> None:
        self.snapshots.root.mkdir(parents=True, exist_ok=True)
        self.parse_cache = ParseCache(self.ctx.config.data_path / "job-cache.pickle")
        if self.ctx.config.repository.poll_interval > 0:
            self._poller = threading.Thread(target=self._poll, name="repo-poll", daemon=True)
            self._poller.start()

    def on_stop(self) -> None:
        self._halt.set()
        if self.parse_cache is not None:
            self.parse_cache.save()  # what the syncs since the first load parsed

    def _poll(self) -> None:
        interval = self.ctx.config.repository.poll_interval
        while not self._halt.wait(interval):
            try:
                self.actor_ref.proxy().sync()
            except pykka.ActorDeadError:
                return

    def sync(self) -> JobSet:
        """Fetch, snapshot and load; an unreachable remote keeps the last good state."""
        try:
            return self._sync()
        except Exception as e:  # a bug must not leave a future nobody reads holding the error
            log.exception("repository %s: sync failed", redact_url(self.url))
            jobset = dataclasses.replace(self.ctx.catalog.current, sync_error=f"internal error: {e}")
            self.ctx.catalog.current = jobset
            return jobset

    def _sync(self) -> JobSet:
        self.ctx.inject("repo_sync.sync")
        previous = self.ctx.catalog.current
        synced_at = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            repo, commit = self._fetch()
        except (RepositoryError, git.GitCommandError, OSError) as e:
            message = str(e) if isinstance(e, RepositoryError) else _git_error(e)
            log.error("repository %s: sync failed: %s", redact_url(self.url), message)
            jobset = dataclasses.replace(previous, sync_error=message, url=redact_url(self.url),
                                         branch=self.branch)
            self.ctx.catalog.current = jobset
            return jobset
        if commit == previous.commit and previous.sync_error is None:
            jobset = dataclasses.replace(previous, synced_at=synced_at)
            self.ctx.catalog.current = jobset
            return jobset
        jobset = self._load(repo, commit, previous, synced_at)
        self.ctx.catalog.current = jobset
        if self.ctx.scheduler is not None:
            self.ctx.scheduler.tell(JobsLoaded(jobset))
        self._remove_unused_snapshots(jobset)
        return jobset

    def _fetch(self) -> tuple[git.Repo, str]:
        check_url(self.url)
        if not (self.git_dir / "HEAD").exists():
            self._init_clone()
        repo = git.Repo(self.git_dir)
        ref = f"refs/remotes/origin/{self.branch}"
        repo.git.execute(
            ["git", *_GIT_CONFIG, "fetch", "--no-tags", "--no-recurse-submodules", "--force", "--quiet",
             "--", self.url, f"+refs/heads/{self.branch}:{ref}"],
            env=_git_env(), kill_after_timeout=GIT_TIMEOUT)
        commit = repo.git.rev_parse("--verify", f"{ref}^{{commit}}")
        return repo, commit

    def _init_clone(self) -> None:
        """The bare repository. From a local path, a clone (which hard-links the objects: a
        10,000-file repository is there at once, not packed and copied); else an empty one
        that the fetch fills."""
        self.git_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.git_dir.with_name(self.git_dir.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(self.url):
            try:
                git.Git().execute(
                    ["git", *_GIT_CONFIG, "clone", "--bare", "--local", "--single-branch", "--no-tags",
                     "--quiet", "--branch", self.branch, "--", self.url, str(tmp)],
                    env=_git_env(), kill_after_timeout=GIT_TIMEOUT)
                os.rename(tmp, self.git_dir)
                return
            except git.GitCommandError as e:
                log.warning("repository %s: local clone failed (%s); fetching instead", self.url,
                            _git_error(e))
                shutil.rmtree(tmp, ignore_errors=True)
        git.Repo.init(self.git_dir, bare=True)

    def _load(self, repo: git.Repo, commit: str, previous: JobSet, synced_at: str) -> JobSet:
        dest = self.ctx.catalog.snapshot(commit)
        link_errors = self.snapshots.ensure(commit, previous.commit)
        found, errors = jobmodel.load_repository(dest, cache=self.parse_cache)
        if previous.commit is None:
            # The first load of this process: written now, so the next start parses only what
            # changes meanwhile. Later syncs change a few files; they are written at stop (a
            # 10,000-job cache takes half a second to write, which a sync should not pay).
            self.parse_cache.save_soon()
        jobs = {name: jobmodel.with_commit(job, commit) for name, job in found.items()}
        errors = sorted(set(errors) | set(link_errors))
        # A job a commit broke keeps its last valid definition until it is fixed.
        for file, _message in errors:
            name = jobmodel.job_name_for(file)
            if name and name not in jobs and name in previous.jobs and previous.jobs[name].file == file:
                jobs[name] = previous.jobs[name]
                log.warning("job %s: %s is invalid at %s; keeping its definition of %s", name, file,
                            commit[:12], previous.jobs[name].commit[:12])
        for file, message in errors:
            log.error("repository %s at %s: %s: %s", redact_url(self.url), commit[:12], file, message)
        log.info("repository %s: loaded %s: %d jobs, %d errors", redact_url(self.url), commit[:12],
                 len(jobs), len(errors))
        return JobSet(commit=commit, jobs=types.MappingProxyType(jobs), errors=tuple(errors),
                      synced_at=synced_at, url=redact_url(self.url), branch=self.branch)

    def _remove_unused_snapshots(self, jobset: JobSet) -> None:
        keep = {job.commit for job in jobset.jobs.values()} | {jobset.commit}
        unfinished = self.ctx.store.executions_in_states({"queued", "running", "stopped"})
        keep |= {r.get("commit") for r in unfinished}
        self.snapshots.remove_unused(keep)


def _git_error(e: Exception) -> str:
    if isinstance(e, git.GitCommandError):
        stderr = (e.stderr or "").strip().replace("stderr: ", "").strip("'\n ")
        return f"git failed: {scrub(stderr) if stderr else e.status}"
    return scrub(str(e))
