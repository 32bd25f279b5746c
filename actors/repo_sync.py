"""The RepoSync actor: fetch the job repository, snapshot each commit, load the jobs.

Git runs with hooks disabled, no submodules, no ``ext::`` transport and no
terminal prompts; the remote branch is fetched with a forced refspec, so a
force-push is taken as it is. Every commit gets one read-only snapshot
directory under ``data_dir/snapshots``, which its executions run in; a pull
never touches a snapshot somebody uses. A job that a new commit breaks keeps
its last valid definition (and its commit's snapshot) until it is fixed.

A commit's jobs are read from git's objects while its snapshot is checked out
on a thread of its own: the load does not wait for thousands of files to be
written, and a run of that commit waits for its snapshot instead
(``Catalog.snapshot``). A tree the object path cannot model is loaded from its
snapshot, as before.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import shutil
import threading
import types
from concurrent.futures import Future
from typing import Optional

import pykka

from overseer.exceptions import CheckoutCancelled, GitError, JobDefinitionError, RepositoryError, TreeError
from overseer.repo import git
from overseer.repo import load as jobmodel
from overseer.repo import state as repo_state
from overseer.repo.catalog import JobSet
from overseer.repo.git import check_url, redact_url
from overseer.repo.parse_cache import ParseCache
from overseer.repo.snapshot_view import close_view, open_view, trees_of
from overseer.repo.snapshots import Snapshots
from overseer.repo.state import STATE_FILE, RepoState

from .context import Context, Pingable
from .messages import JobsLoaded

log = logging.getLogger(__name__)

BRANCHES_SHOWN = 20  # a missing branch's error names at most this many of those that exist


class RepoSync(Pingable, pykka.ThreadingActor):
    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx
        cfg = ctx.config.repository
        self.url = cfg.url
        self.branch = cfg.branch
        self.git_dir = ctx.config.data_path / "repo.git"
        # Written in data_dir/snapshot-trees; runs see them read-only in data_dir/snapshots.
        self.snapshots = Snapshots(trees_of(ctx.catalog.snapshots), self.git_dir, git.environment())
        self._poller: Optional[threading.Thread] = None
        self._halt = threading.Event()
        self.parse_cache: Optional[ParseCache] = None
        self.state_path = ctx.config.data_path / STATE_FILE
        self._written: Optional[RepoState] = None  # what repo-state.json holds (as read or written)
        self._resumed = False  # tried once, by the first sync that has nothing served yet

    def on_start(self) -> None:
        open_view(self.ctx.catalog.snapshots, self.snapshots.root)  # before the first run
        self.snapshots.remove_stale()
        self.parse_cache = ParseCache(self.ctx.config.data_path / "job-cache.pickle")
        if self.ctx.config.repository.poll_interval > 0:
            self._poller = threading.Thread(target=self._poll, name="repo-poll", daemon=True)
            self._poller.start()

    def on_stop(self) -> None:
        self._halt.set()
        self.snapshots.stop()  # no checkout goes on writing after the server
        close_view(self.ctx.catalog.snapshots)  # the supervisor ends the runs before it stops us
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
        published = self.ctx.catalog.current
        previous = published
        if previous.commit is None and not self._resumed:  # what the server served before its restart
            self._resumed = True
            try:
                previous = self._resume() or previous
            except (RepositoryError, TreeError, JobDefinitionError, OSError, ValueError) as e:
                log.warning("repository %s: cannot resume from %s: %s", redact_url(self.url),
                            self.state_path, e)
        synced_at = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            commit = self._fetch()
        except (RepositoryError, OSError) as e:
            message = self._fetch_error(e) if isinstance(e, (GitError, OSError)) else str(e)
            if previous.commit is None:
                serving = "no jobs are served until a sync succeeds"
            else:
                serving = (f"serving the {len(previous.jobs)} jobs of {previous.commit[:12]}"
                           + (", as before the restart" if previous is not published else ""))
            log.error("repository %s: sync failed (%s): %s", redact_url(self.url), serving, message)
            jobset = dataclasses.replace(previous, sync_error=message, url=redact_url(self.url),
                                         branch=self.branch)
        else:
            if commit == previous.commit and previous.sync_error is None:
                jobset = dataclasses.replace(previous, synced_at=synced_at)
            else:
                jobset = self._load(commit, previous, synced_at, first=published.commit is None)
        return self._publish(jobset, published)

    def _publish(self, jobset: JobSet, published: JobSet) -> JobSet:
        """Serve ``jobset``; the Scheduler is told when its jobs changed, and what it serves is
        written down for the next start."""
        self.ctx.catalog.current = jobset
        if jobset.jobs is not published.jobs:
            if self.ctx.scheduler is not None:
                self.ctx.scheduler.tell(JobsLoaded(jobset))
            self._remove_unused_snapshots(jobset)
        if jobset.commit is not None and jobset.sync_error is None:
            state = RepoState(url=redact_url(self.url), branch=self.branch, commit=jobset.commit,
                              synced_at=jobset.synced_at,
                              kept={name: (jobset.jobs[name].file, jobset.jobs[name].commit)
                                    for name in jobset.stale})
            if state != self._written:
                # fsynced when what a restart resumes changes; a later sync's time alone is not
                last = self._written
                repo_state.write(self.state_path, state, durable=last is None or (
                    last.commit, last.kept) != (state.commit, state.kept))
                self._written = state
        return jobset

    def _resume(self) -> Optional[JobSet]:
        """The job set the last sync before the restart served, loaded from the commit (and the
        older commits of its stale jobs) the data dir keeps; None when there is none for this
        repository and branch, or it cannot be loaded."""
        state = repo_state.read(self.state_path)
        if state is None or (state.url, state.branch) != (redact_url(self.url), self.branch):
            return None
        kept = {}
        for name, (file, commit) in state.kept.items():
            try:  # a kept definition is read from its own commit's snapshot, which was kept for it
                job = jobmodel.parse_job(self.snapshots.path(commit), file)
            except JobDefinitionError as e:
                log.warning("job %s: its definition of %s is not kept across the restart: %s", name,
                            commit[:12], e)
                continue
            if job.name == name:
                kept[name] = jobmodel.with_commit(job, commit)
        log.info("repository %s: resuming from %s, served before the restart", redact_url(self.url),
                 state.commit[:12])
        base = JobSet(commit=None, jobs=types.MappingProxyType(kept))
        jobset = self._load(state.commit, base, state.synced_at, first=False)
        if jobset.commit != state.commit:
            log.warning("repository %s: cannot resume from %s (%s)", redact_url(self.url),
                        state.commit[:12], jobset.sync_error)
            return None
        self._written = state
        return jobset

    def _fetch_error(self, e: Exception) -> str:
        """What a failed fetch says; a branch the remote does not have is named with those it has."""
        message = git.error_text(e)
        if "couldn't find remote ref" not in message:
            return message
        try:
            heads = git.remote_heads(self.git_dir, self.url)
        except (GitError, OSError):
            return message
        if self.branch in heads:
            return message
        if not heads:
            return f"branch {self.branch!r} does not exist: the repository has no branches yet"
        shown = ", ".join(heads[:BRANCHES_SHOWN])
        if len(heads) > BRANCHES_SHOWN:
            shown += f" and {len(heads) - BRANCHES_SHOWN} more"
        return f"branch {self.branch!r} does not exist in the repository; its branches: {shown}"

    def _fetch(self) -> str:
        check_url(self.url)
        if not (self.git_dir / "HEAD").exists():
            self._init_clone()
        return git.fetch(self.git_dir, self.url, self.branch)

    def _init_clone(self) -> None:
        """The bare repository. From a local path, a clone (which hard-links the objects: a
        10,000-file repository is there at once, not packed and copied); else an empty one
        that the fetch fills."""
        self.git_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.git_dir.with_name(self.git_dir.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(self.url):
            try:
                git.clone_bare(self.url, self.branch, tmp)
                os.rename(tmp, self.git_dir)
                return
            except GitError as e:
                message = str(e)
                # A missing branch is the fetch's error too, said once, with the branches there are.
                log.log(logging.DEBUG if "not found in upstream" in message else logging.WARNING,
                        "repository %s: local clone failed (%s); fetching instead", self.url, message)
                shutil.rmtree(tmp, ignore_errors=True)
        self.git_dir.mkdir(exist_ok=True)
        git.init_bare(self.git_dir)

    def _load(self, commit: str, previous: JobSet, synced_at: Optional[str], first: bool) -> JobSet:
        """The jobs of ``commit``; a job whose file it breaks keeps its definition in ``previous``.
        ``first``: the first job set this process serves (the parse cache is written soon)."""
        made = None   # the future of the commit's snapshot, when it is being made
        try:
            found, errors, made = self._load_objects(commit, previous.commit)
        except (RepositoryError, TreeError, OSError) as e:
            log.warning("repository %s: cannot load %s from git's objects (%s); loading its snapshot",
                        redact_url(self.url), commit[:12], e)
            # On the checkout queue, after the copy _load_objects may have queued already.
            try:
                link_errors = self.snapshots.ensure_soon(commit, previous.commit).result()
            except (RepositoryError, OSError) as e:
                # Not a bug of ours: a commit git cannot write out (say, a symlink longer than a
                # path may be). The jobs stay those of the last commit that loaded.
                message = f"cannot check out {commit[:12]}: {e}"
                log.error("repository %s: %s", redact_url(self.url), message)
                return dataclasses.replace(previous, sync_error=message, url=redact_url(self.url),
                                           branch=self.branch)
            found, errors = jobmodel.load_repository(self.snapshots.path(commit), cache=self.parse_cache)
            errors = sorted(set(errors) | set(link_errors))
        if first:
            # The first load of this process: written soon, so the next start parses only what
            # changes meanwhile. Later syncs change a few files; they are written at stop (a
            # 10,000-job cache takes a third of a second to write, which a sync should not pay).
            # While the snapshot is checked out, written once it is: writing holds the interpreter
            # for that long, which the start of the API need not wait behind.
            if made is None or made.done():
                self.parse_cache.save_soon()
            else:
                made.add_done_callback(lambda _future: self.parse_cache.save())
        jobs = {name: jobmodel.with_commit(job, commit) for name, job in found.items()}
        # A job a commit broke keeps its last valid definition until it is fixed, and says so.
        stale = {}
        for file, message in errors:
            name = jobmodel.job_name_for(file)
            if name and name not in jobs and name in previous.jobs and previous.jobs[name].file == file:
                jobs[name] = previous.jobs[name]
                stale[name] = types.MappingProxyType({"error": message, "commit": jobs[name].commit})
                log.warning("job %s: %s is invalid at %s; keeping its definition of %s", name, file,
                            commit[:12], previous.jobs[name].commit[:12])
        for file, message in errors:
            log.error("repository %s at %s: %s: %s", redact_url(self.url), commit[:12], file, message)
        log.info("repository %s: loaded %s: %d jobs, %d errors", redact_url(self.url), commit[:12],
                 len(jobs), len(errors))
        return JobSet(commit=commit, jobs=types.MappingProxyType(jobs), errors=tuple(errors),
                      synced_at=synced_at, url=redact_url(self.url), branch=self.branch,
                      stale=types.MappingProxyType(stale))

    def _load_objects(self, commit: str, base: Optional[str]) -> tuple[dict, list, Future]:
        """The jobs and errors of ``commit`` from git's objects, and the future of its snapshot,
        made meanwhile (from ``base``'s); runs of the commit wait for it."""
        tree = self.snapshots.tree(commit)
        catalog = self.ctx.catalog
        made = self.snapshots.ensure_soon(commit, base, links=tree.links, before=catalog.checkout_hook)
        if not made.done():
            catalog.expect(commit, made)
        expected = tree.link_errors
        made.add_done_callback(lambda future: self._snapshot_made(commit, future, expected))
        found, errors = jobmodel.load_tree(tree, self.snapshots.read_blobs, cache=self.parse_cache)
        return found, errors, made

    def _snapshot_made(self, commit: str, future: Future, expected: list) -> None:
        """On the checkout thread: a snapshot that could not be made is reported as the sync's
        error (so the next sync makes it again); symlink checks that differ from the tree's are
        logged (the load reported the tree's)."""
        error = future.exception()
        if isinstance(error, CheckoutCancelled):
            return   # the server is stopping
        if error is None:
            found = sorted(tuple(e) for e in future.result())
            if found != sorted(expected):
                log.warning("repository %s: the snapshot of %s dropped symlinks %s; its tree listing %s",
                            redact_url(self.url), commit[:12], found, sorted(expected))
            return
        try:
            self.actor_ref.proxy().snapshot_failed(commit, str(error))
        except pykka.ActorDeadError:
            self.snapshot_failed(commit, str(error))  # stopped meanwhile: the next RepoSync sees it

    def snapshot_failed(self, commit: str, message: str) -> None:
        current = self.ctx.catalog.current
        if current.commit == commit and current.sync_error is None:
            log.error("repository %s: the snapshot of %s could not be made: %s", redact_url(self.url),
                      commit[:12], message)
            self.ctx.catalog.current = dataclasses.replace(
                current, sync_error=f"the snapshot of {commit[:12]} could not be made: {message}")

    def _remove_unused_snapshots(self, jobset: JobSet) -> None:
        keep = {job.commit for job in jobset.jobs.values()} | {jobset.commit}
        unfinished = self.ctx.store.executions_in_states({"queued", "running", "stopped"})
        keep |= {r.get("commit") for r in unfinished}
        self.snapshots.remove_unused(keep)

