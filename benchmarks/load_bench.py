"""Fresh starts of case 6's repository with and without the parse helper, interleaved.

    python benchmarks/load_bench.py [--files 10000] [--pairs 6]

Each pair starts ``overseer serve`` twice on a fresh data dir of the same repository (the job
files of ``run_all.py``'s case 6), once as a user starts it and once with
``OVERSEER_NO_PARSE_HELPER=1`` (every file parsed in the server), alternating which goes first,
and times the start to the first answer on ``/health`` (the first sync is done before the API
listens). It checks that every job loaded, and prints the medians with [min-max] and their
ratio: what the helper process (overseer/repo/parse_helper.py) gains on this machine now.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cases  # noqa: E402
import bench_lib as bl  # noqa: E402


def fresh_start(work: Path, repo: Path, name: str, files: int) -> float:
    data = work / name
    shutil.rmtree(data, ignore_errors=True)
    server = bl.Overseer(data, repo, {}).start()
    try:
        client = server.http()
        try:
            count = len(client.json("GET", "/jobs")["jobs"])
        finally:
            client.close()
        if count != files:
            raise RuntimeError(f"{count} of {files} jobs loaded")
        return server.ready_at - server.started_at
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--pairs", type=int, default=6)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="load-bench-"))
    try:
        repo = work / "jobs"
        bl.make_repo(repo, bench_cases._scale_files(args.files))
        got: dict[str, list[float]] = {"helper": [], "in-process only": []}
        for pair in range(args.pairs):
            for name in (list(got) if pair % 2 == 0 else list(got)[::-1]):
                if name == "helper":
                    os.environ.pop("OVERSEER_NO_PARSE_HELPER", None)
                else:
                    os.environ["OVERSEER_NO_PARSE_HELPER"] = "1"
                got[name].append(fresh_start(work, repo, f"server-{pair}", args.files))
        os.environ.pop("OVERSEER_NO_PARSE_HELPER", None)
        medians = {name: statistics.median(v) for name, v in got.items()}
        print(f"{args.files} job files, fresh data dir, start to /health ({args.pairs} interleaved pairs):")
        for name, values in got.items():
            print(f"  {name:>16}: {medians[name]:.2f} s [{min(values):.2f}-{max(values):.2f}]")
        print(f"  ratio: {medians['helper'] / medians['in-process only']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
