"""Every git command Overseer runs, built and run here.

Each runs with hooks off, no ``ext::`` transport, no submodule recursion and symlinks checked out
as symlinks (``CONFIG``). The commands that reach the remote (clone, fetch, ls-remote) run through
GitPython with no terminal prompt, no askpass, no system config and ssh in batch mode
(:func:`environment`), and are killed after ``TIMEOUT`` seconds; a transfer slower than 1 byte/s
for ``LOW_SPEED_TIME`` seconds is given up (git's ``GIT_HTTP_LOW_SPEED_*`` for http(s),
keep-alives for ssh; the environment may set other values). The commands that read the bare
repository's objects and write snapshots from them run as plain subprocesses, with its
``GIT_DIR``. A failure is a ``GitError`` (``RepositoryError``) whose message holds what git said,
without credentials.
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path
from typing import IO, Optional
from urllib.parse import urlsplit, urlunsplit

import git as gitpython

from overseer.exceptions import GitError, RepositoryError

CONFIG = ["-c", "core.hooksPath=/dev/null", "-c", "protocol.ext.allow=never",
          "-c", "submodule.recurse=false", "-c", "core.symlinks=true"]
TIMEOUT = 300   # seconds a command that reaches the remote may take
LOW_SPEED_TIME = "60"
SSH_COMMAND = "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"

_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


# -- URLs and messages ------------------------------------------------------------------------------

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
    """``url`` when git may be given it as the remote; RepositoryError for an option or a remote
    helper transport."""
    if not url or url.startswith("-"):
        raise RepositoryError(f"repository.url {redact_url(url)!r} is not a usable git URL")
    if url.lower().startswith("ext::") or "::" in url.split("/", 1)[0]:
        raise RepositoryError(f"repository.url {redact_url(url)!r}: remote helper transports are refused")
    return url


def error_text(e: Exception) -> str:
    """What a failed git command, or the OSError of starting it, says (without credentials)."""
    return str(e) if isinstance(e, GitError) else scrub(str(e))


# -- the remote -------------------------------------------------------------------------------------

def environment() -> dict:
    """The environment of every git command: this process's, with prompts off and stalled
    transfers given up."""
    env = dict(os.environ)
    env.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1")
    env.setdefault("GIT_HTTP_LOW_SPEED_TIME", LOW_SPEED_TIME)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_ASKPASS="/bin/false",
               GIT_SSH_COMMAND=env.get("GIT_SSH_COMMAND", SSH_COMMAND))
    return env


def remote_command(args: list[str], cwd: Optional[os.PathLike] = None) -> str:
    """Run ``git ARGS`` through GitPython; its stdout, stripped. A command that does not complete
    in ``TIMEOUT`` seconds is killed; a failure is a GitError."""
    try:
        return gitpython.Git(None if cwd is None else str(cwd)).execute(
            ["git", *CONFIG, *args], env=environment(), kill_after_timeout=TIMEOUT)
    except gitpython.GitCommandError as e:
        stderr = (e.stderr or "").strip().replace("stderr: ", "").strip("'\n ")
        raise GitError(f"git failed: {scrub(stderr) if stderr else e.status}") from None


def clone_bare(url: str, branch: str, dest: Path) -> None:
    """``dest``: a bare clone of ``branch`` of the repository at the local path ``url`` (its
    objects hard-linked, not copied)."""
    remote_command(["clone", "--bare", "--local", "--single-branch", "--no-tags", "--quiet", "--branch",
                    branch, "--", url, str(dest)])


def init_bare(git_dir: Path) -> None:
    remote_command(["init", "--quiet", "--bare"], cwd=git_dir)


def fetch(git_dir: Path, url: str, branch: str) -> str:
    """Fetch ``branch`` of ``url`` into ``refs/remotes/origin/BRANCH`` with a forced refspec (a
    force-push is taken as it is); the commit it is at."""
    ref = f"refs/remotes/origin/{branch}"
    remote_command(["fetch", "--no-tags", "--no-recurse-submodules", "--force", "--quiet", "--", url,
                    f"+refs/heads/{branch}:{ref}"], cwd=git_dir)
    return remote_command(["rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=git_dir)


def remote_heads(git_dir: Path, url: str) -> list[str]:
    """The branches ``url`` has, sorted."""
    listing = remote_command(["ls-remote", "--heads", "--", url], cwd=git_dir)
    return sorted(line.split("refs/heads/", 1)[1] for line in listing.splitlines() if "\trefs/heads/" in line)


# -- a local repository ------------------------------------------------------------------------------

def commit_all(path: Path, message: str, author: str, email: str) -> None:
    """Make ``path`` a repository (branch ``main``) whose one commit holds all its files."""
    env = dict(os.environ, GIT_AUTHOR_NAME=author, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=author,
               GIT_COMMITTER_EMAIL=email)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=path, env=env, check=True,
                       capture_output=True)


def run(git_dir: Path, env: dict, *args: str, index: Optional[Path] = None,
        work_tree: Optional[Path] = None, stdin: Optional[bytes] = None, nice: tuple = ()) -> bytes:
    """Run ``git ARGS`` on the bare repository ``git_dir``, reading from ``index`` (a
    ``GIT_INDEX_FILE``) and writing to ``work_tree`` when given, prefixed by ``nice``; its
    stdout. RepositoryError naming the command when it fails."""
    env = dict(env, GIT_DIR=str(git_dir))
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    cmd = [*nice, "git", *CONFIG]
    if work_tree is not None:
        cmd += ["--work-tree", str(work_tree)]
    r = subprocess.run([*cmd, *args], input=stdin, capture_output=True, env=env,
                       cwd=str(work_tree or git_dir))
    if r.returncode:
        name = next(a for a in args if not a.startswith("-") and "=" not in a)
        raise RepositoryError(f"git {name} failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def ls_tree(git_dir: Path, env: dict, commit: str) -> list[tuple[str, str, str]]:
    """``(mode, oid, path)`` of every file of ``commit`` (``git ls-tree -r``)."""
    entries = []
    for record in run(git_dir, env, "ls-tree", "-r", "-z", "--full-tree", commit).split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, _kind, oid = meta.decode().split(" ")
        entries.append((mode, oid, os.fsdecode(raw_path)))
    return entries


def changed_paths(git_dir: Path, env: dict, base: str, commit: str) -> list[tuple[str, str]]:
    """``(status, path)`` of every path that differs from ``base`` to ``commit`` (no renames)."""
    raw = run(git_dir, env, "diff", "--name-status", "-z", "--no-renames", base, commit)
    fields = raw.split(b"\0")
    return [(fields[i].decode(), os.fsdecode(fields[i + 1])) for i in range(0, len(fields) - 1, 2)]


def read_tree(git_dir: Path, env: dict, commit: str, index: Path) -> None:
    """Read the tree of ``commit`` into the index file ``index``."""
    run(git_dir, env, "read-tree", commit, index=index)


def checkout_index(git_dir: Path, env: dict, index: Path, work_tree: Path, paths: Optional[list[str]],
                   nice: tuple = ()) -> None:
    """Write the files of ``index`` into ``work_tree``: all of them (``paths`` None), or those."""
    if paths is None:  # parallel workers: file creation, not git, is the cost here
        run(git_dir, env, "-c", "checkout.workers=4", "-c", "checkout.thresholdForParallelism=100",
            "checkout-index", "-a", "-f", index=index, work_tree=work_tree, nice=nice)
    elif paths:
        run(git_dir, env, "checkout-index", "-f", "-z", "--stdin", index=index, work_tree=work_tree,
            stdin=b"\0".join(os.fsencode(p) for p in paths), nice=nice)


def read_blobs(git_dir: Path, env: dict, oids: list[str],
               limit: int) -> dict[str, tuple[int, Optional[bytes]]]:
    """``oid -> (size, bytes)`` of each blob, the bytes None when larger than ``limit``: one
    ``git cat-file --batch`` for all of them, read as it streams (a large blob is skipped,
    not held)."""
    if not oids:
        return {}
    proc = subprocess.Popen(["git", *CONFIG, "cat-file", "--batch", "--buffer"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(env, GIT_DIR=str(git_dir)), cwd=str(git_dir), bufsize=1 << 16)
    request = "".join(f"{oid}\n" for oid in oids).encode()
    feeder = threading.Thread(target=_feed, args=(proc.stdin, request), name="cat-file", daemon=True)
    feeder.start()
    blobs: dict[str, tuple[int, Optional[bytes]]] = {}
    out = proc.stdout
    try:
        for oid in oids:
            header = out.readline().split()
            if len(header) != 3 or header[1] != b"blob" or header[0].decode() != oid:
                raise RepositoryError(f"git cat-file: no blob {oid} "
                                      f"({b' '.join(header).decode(errors='replace')})")
            size = int(header[2])
            if size > limit:
                _skip(out, size)
                data = None
            else:
                data = out.read(size)
                if len(data) != size:
                    raise RepositoryError(f"git cat-file: blob {oid} cut short")
            if out.read(1) != b"\n":
                raise RepositoryError(f"git cat-file: unexpected output after blob {oid}")
            blobs[oid] = (size, data)
    finally:
        out.close()
        feeder.join()
        stderr = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait()
    if code and len(blobs) < len(oids):
        raise RepositoryError(f"git cat-file failed: {stderr.decode(errors='replace').strip()}")
    return blobs


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass   # the reader stopped early; it reports why


def _skip(stream: IO[bytes], size: int) -> None:
    while size > 0:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            raise RepositoryError("git cat-file: output cut short")
        size -= len(chunk)
