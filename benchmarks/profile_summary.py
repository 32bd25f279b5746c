"""Summarise a py-spy raw profile (``run_all.py --profile DIR`` writes them).

    python benchmarks/profile_summary.py DIR/2-throughput.txt [--top 25] [--thread NAME]

Prints the share of samples per thread kind (thread names with numbers stripped), then
the functions with the most samples on top of the stack (self) and anywhere in the stack
(inclusive), as percentages of all samples (or of one thread kind's with ``--thread``).
Only active samples are recorded by py-spy (idle threads are left out), so 100 % is the
CPU-busy Python time of the server during the measured part.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?):\d+\)$")


def _kind(thread: str) -> str:
    name = thread.split(";", 1)[0]
    name = re.sub(r"^thread \(\d+\): ?", "", name)
    name = re.sub(r"[-:].*$|\s*\d+$", "", name)  # "CP Server Thread-19" -> "CP Server Thread"
    return name or "?"


def _frame(text: str) -> str:
    m = _FRAME.match(text.strip())
    if not m:
        return text.strip()
    file = m.group("file")
    for cut in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if cut in file:
            file = file.split(cut, 1)[1]
    return f"{m.group('fn')} ({file})"


def load(path: Path) -> list[tuple[str, list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        parts = stack.split(";")
        out.append((_kind(parts[0]), [_frame(f) for f in parts[1:]], int(count)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", help="only threads whose kind starts with this")
    args = p.parse_args(argv)
    samples = load(args.profile)
    if args.thread:
        samples = [s for s in samples if s[0].startswith(args.thread)]
    total = sum(c for _, _, c in samples) or 1
    kinds, selfs, incl = Counter(), Counter(), Counter()
    for kind, frames, count in samples:
        kinds[kind] += count
        if frames:
            selfs[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"{args.profile}: {total} samples")
    print("\nby thread kind:")
    for k, c in kinds.most_common():
        print(f"  {100 * c / total:5.1f}%  {k}")
    print(f"\ntop {args.top} self:")
    for f, c in selfs.most_common(args.top):
        print(f"  {100 * c / total:5.1f}%  {f}")
    print(f"\ntop {args.top} inclusive:")
    for f, c in incl.most_common(args.top):
        print(f"  {100 * c / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
