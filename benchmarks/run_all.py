"""Every benchmark of docs/performance.rst in one command, with its baselines in the same run.

    python benchmarks/run_all.py [--quick] [--only 1,2,...] [--json results.json]
                                 [--work DIR] [--keep] [--profile DIR]

Each case starts Overseer as a user starts it (``overseer serve -c CONFIG``, a
subprocess, its log in the work dir) with a config sized for the case, and runs its
baselines (adnanh/webhook, a bare ``subprocess.Popen`` / ``os.posix_spawn`` loop, raw
py-lmdb) in the same run, repetition by repetition. Prints a table of medians with min
and max over the repetitions, the ratio of the medians to each baseline and whether the
target is met, and writes the same as JSON. ``webhook`` is installed from Debian's
package when it is missing (``apt-get install -y webhook``, after ``apt-get update``
when needed).

Cases: 1 trigger-to-start latency, 2 executions per second, 3 output capture,
4 2,000 running at once, 5 scheduler accuracy, 6 repository scale, 7 reading output.
``--quick`` shrinks the sizes (256 MiB output, 500 sleepers, 1,000 schedule entries for
20 s, fewer repetitions); ``--profile DIR`` attaches py-spy to the server for the
measured part of each case and writes its raw (collapsed) stacks there.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cases as bc  # noqa: E402
import bench_lib as bl  # noqa: E402


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "nan"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(s: dict) -> str:
    if s["median"] is None:
        return "-"
    if s["n"] <= 1:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} [{_fmt(s['min'])}-{_fmt(s['max'])}]"


def finish_row(r: dict) -> dict:
    """Per-repetition values -> summaries, ratios of medians, the target's verdict."""
    out = dict(r)
    out["overseer"] = bl.summary(r["overseer"])
    out["overseer"]["values"] = r["overseer"]
    out["baselines"] = {}
    for name, values in r["baselines"].items():
        s = bl.summary(values)
        s["values"] = values
        med = out["overseer"]["median"]
        s["ratio"] = (med / s["median"]) if med is not None and s["median"] else None
        out["baselines"][name] = s
    target, med = r["target"], out["overseer"]["median"]
    met = None
    if target and med is not None:
        if "vs" in target:
            base = out["baselines"][target["vs"]]
            ratio = base["ratio"]
            op = "<=" if r["better"] == "lower" else ">="
            out["target_text"] = f"{op}{target['ratio']:g}x {target['vs']}"
            if target.get("stat") == "max":  # a bound: the largest of the repetitions on each side
                ratio = out["overseer"]["max"] / base["max"] if base["max"] else None
                base["ratio_of_max"] = ratio
                out["target_text"] += f" (max/max {_fmt(ratio)}x)"
            if ratio is not None:
                met = ratio <= target["ratio"] if r["better"] == "lower" else ratio >= target["ratio"]
        elif "max" in target:
            met = med <= target["max"]
            out["target_text"] = f"<= {target['max']:g} {r['unit']}".rstrip()
        elif "min" in target:
            met = med >= target["min"]
            out["target_text"] = f">= {target['min']:g} {r['unit']}".rstrip()
    out["met"] = met
    return out


def print_table(rows: list[dict], out=sys.stdout) -> None:
    head = f"{'#':>2}  {'measure':<52} {'unit':<5} {'overseer: median [min-max]':<28} " \
           f"{'baseline':<28} {'median [min-max]':<26} {'ratio':>6}  target"
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        verdict = {True: "met", False: "MISSED", None: ""}[r["met"]]
        target = f"{r.get('target_text', '')} {verdict}".strip()
        bases = list(r["baselines"].items()) or [("", None)]
        vs = (r["target"] or {}).get("vs")
        for i, (name, b) in enumerate(bases):
            first = i == 0
            show_target = name == vs if vs else first
            print(f"{r['case'] if first else '':>2}  {r['label'] if first else '':<52.52} "
                  f"{r['unit'] if first else '':<5} {_cell(r['overseer']) if first else '':<28} "
                  f"{name:<28.28} {_cell(b) if b else '':<26} "
                  f"{(_fmt(b['ratio']) + 'x') if b and b['ratio'] is not None else '':>6}  "
                  f"{target if show_target else ''}",
                  file=out)
    out.flush()


def machine() -> dict:
    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return None
    root = Path(__file__).resolve().parent.parent
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "webhook": bl.webhook_version(shutil.which("webhook") or "webhook"),
            "overseer_commit": cmd("git", "-C", str(root), "rev-parse", "--short", "HEAD"),
            "overseer_tree_dirty": bool(cmd("git", "-C", str(root), "status", "--porcelain", "--", "overseer",
                                            "actors"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes: the whole run in a few minutes")
    p.add_argument("--only", help="comma-separated case numbers (1-7)")
    p.add_argument("--size", action="append", default=[], metavar="NAME=N",
                   help="override one size, e.g. --size schedule_entries=300 (names: the JSON's \"sizes\")")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--work", type=Path, help="scratch dir (default: a new temp dir, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (server logs, stores)")
    p.add_argument("--profile", type=Path, help="record py-spy profiles of the server here")
    p.add_argument("--profile-mode", choices=["gil", "wall", "active"], default="gil",
                   help="py-spy sampling: the GIL holder (default), every thread, or py-spy's active threads")
    p.add_argument("--table", type=Path, metavar="JSON",
                   help="print the table of an earlier run's --json file and exit")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="the server's --log-level (default: as a user starts it, info)")
    args = p.parse_args(argv)
    if args.table:
        old = json.loads(args.table.read_text())
        rows = []
        for r in old["rows"]:
            raw = dict(r, overseer=r["overseer"]["values"],
                       baselines={k: v["values"] for k, v in r["baselines"].items()})
            rows.append(finish_row(raw))
        print_table(rows)
        return 0
    cases = sorted({int(x) for x in args.only.split(",")}) if args.only else list(bc.CASES)
    if any(c not in bc.CASES for c in cases):
        p.error("--only takes case numbers 1 to 7")
    sizes = bc.QUICK if args.quick else bc.FULL
    for item in args.size:
        name, _, value = item.partition("=")
        if name not in vars(sizes) or not value.isdigit():
            p.error(f"--size {item}: expected NAME=N with NAME one of {', '.join(vars(sizes))}")
        sizes = dataclasses.replace(sizes, **{name: int(value)})
    bc.PROFILE_MODE[0] = args.profile_mode
    if any(c in (1, 2) for c in cases):
        bl.ensure_webhook()
    work = Path(tempfile.mkdtemp(prefix="overseer-bench-", dir=args.work))
    ctx = bc.Context(sizes=sizes, work=work, profile_dir=args.profile, log_level=args.log_level)
    results = {"quick": args.quick, "sizes": vars(sizes), "machine": machine(), "cases": {}, "rows": []}
    began = time.monotonic()
    failed = []
    todo = list(cases)
    if 3 in todo and 7 in todo:  # one server and one stored output serve both
        todo.remove(7)
    for case in todo:
        fn = bc.CASES[case]
        if case == 3 and 7 in cases:
            fn = bc.case_output
        t0 = time.monotonic()
        also = " and 7" if fn is bc.case_output else ""
        print(f"== case {case}{also}: {fn.__name__}", file=sys.stderr, flush=True)
        try:
            rows = [finish_row(r) for r in fn(ctx)]
        except Exception as e:  # noqa: BLE001 - one failing case must not hide the others' figures
            traceback.print_exc()
            failed.append(case)
            results["cases"][str(case)] = {"error": f"{type(e).__name__}: {e}"}
            continue
        results["cases"][str(case)] = {"seconds": time.monotonic() - t0}
        results["rows"] += rows
        print_table(rows, sys.stderr)
    results["seconds"] = time.monotonic() - began
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["notes"] = {k: v for k, v in ctx.notes.items() if not k.endswith("_samples")}
    results["rows"].sort(key=lambda r: r["case"])
    print()
    print(f"Overseer benchmarks ({'quick' if args.quick else 'full'}; {results['seconds']:.0f} s; "
          f"{os.cpu_count()} CPUs; medians over repetitions with [min-max]; "
          f"ratio = overseer median / baseline median)")
    print_table(results["rows"])
    if failed:
        print(f"FAILED cases: {failed}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.keep:
        print(f"scratch dir kept: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
