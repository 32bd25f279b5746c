"""What the read-only snapshot view (overseer/repo/snapshot_view.py) costs: per run, per snapshot, per start.

    python benchmarks/snapshot_view_bench.py [--runs 150] [--syncs 15] [--files 2000]

A real System (in this process) on a git repository of ``--files`` files plus two jobs: ``c``
(``command: "true"``) and ``s`` (``script: t.sh``, run from the snapshot). It prints medians with
[min-max]:

- per run: ``created_at`` to ``started_at`` of the record (the trigger/start path, server side)
  and the trigger call to the finished record as the caller sees it, ``--runs`` runs of each job,
  one after another, after 20 runs to warm up;
- per snapshot: ``--syncs`` syncs that each change one file, from the sync call until the run
  view holds the new snapshot (``Catalog.snapshot`` answers);
- per start: ``open_view`` + ``close_view`` of a fresh view (the mount made when RepoSync starts
  and detached at stop), 200 times; left out where the module does not exist.

It says whether ``data_dir/snapshots`` was a read-only mount, so the same script times the code
before the view too.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from overseer.actors.system import System

from overseer.config import parse_config

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@b")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, env=GIT_ENV, capture_output=True,
                          text=True).stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(repo: Path, files: int) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for i in range(files):
        path = repo / "data" / f"d{i % 50}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n")
    (repo / "scripts").mkdir()
    (repo / "scripts/t.sh").write_text("#!/bin/sh\nexit 0\n")
    (repo / "scripts/t.sh").chmod(0o755)
    (repo / "c.yml").write_text("command: 'true'\n")
    (repo / "s.yml").write_text("script: t.sh\n")
    commit(repo, "initial")


def iso(text: str) -> float:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_once(system: System, job: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    ident = system.trigger(job, {})["id"]
    while True:
        record = system.store.get_execution(job, ident)
        if record and record["state"] == "finished":
            break
        system.store.wait_commit(0.05)
    wall = time.perf_counter() - t0
    if record["status"] != "complete":
        raise RuntimeError(f"{job}/{ident}: {record['status']}")
    return iso(record["started_at"]) - iso(record["created_at"]), wall


def summary(name: str, values: list[float], unit: float = 1e3, suffix: str = "ms") -> None:
    print(f"  {name:<46} {statistics.median(values) * unit:8.3f} {suffix} "
          f"[{min(values) * unit:.3f}-{max(values) * unit:.3f}]  n={len(values)}")


def start_cost(work: Path) -> None:
    try:
        from overseer.repo.snapshot_view import close_view, open_view, trees_of
    except ImportError:
        print("  open_view + close_view              (no overseer/repo/snapshot_view.py here)")
        return
    view = work / "startcost" / "snapshots"
    trees = trees_of(view)
    trees.mkdir(parents=True)
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        open_view(view, trees)
        close_view(view)
        times.append(time.perf_counter() - t0)
    summary("open_view + close_view", times, 1e6, "us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--syncs", type=int, default=15)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapview-") as tmp:
        work = Path(tmp)
        repo = work / "jobs"
        make_repo(repo, args.files)
        config = parse_config({"repository": {"url": str(repo), "branch": "main", "poll_interval": 0},
                               "data_dir": str(work / "data"),
                               "server": {"host": "127.0.0.1", "port": 8080}})  # not listened on
        system = System(config).start()
        try:
            view = config.data_path / "snapshots"
            mounted = bool(os.statvfs(view).f_flag & os.ST_RDONLY)
            print(f"data_dir/snapshots read-only mount: {mounted}; {args.files} files")
            for job in ("c", "s"):
                for _ in range(20):
                    run_once(system, job)
            starts: dict[str, list[float]] = {"c": [], "s": []}
            walls: dict[str, list[float]] = {"c": [], "s": []}
            for _ in range(args.runs):
                for job in ("c", "s"):
                    start, wall = run_once(system, job)
                    starts[job].append(start)
                    walls[job].append(wall)
            print("per run:")
            for job, kind in (("c", "command"), ("s", "script from the snapshot")):
                summary(f"created->started ({kind})", starts[job])
                summary(f"trigger->finished ({kind})", walls[job])
            snaps = []
            for i in range(args.syncs):
                (repo / "data/d0/f0.txt").write_text(f"change {i}\n")
                sha = commit(repo, f"change {i}")
                t0 = time.perf_counter()
                system.sync()
                system.catalog.snapshot(sha)
                snaps.append(time.perf_counter() - t0)
                if not (view / sha / "data/d0/f0.txt").read_text() == f"change {i}\n":
                    raise RuntimeError("the view does not show the new snapshot")
            print("per snapshot (one changed file):")
            summary("sync -> snapshot in the view", snaps)
        finally:
            system.stop()
        print("per start:")
        start_cost(work)


if __name__ == "__main__":
    main()
