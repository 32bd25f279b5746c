"""The ``overseer`` command's parser and entry point, and its serve and validate commands (SPEC §1);
the client commands are in client.py."""
from __future__ import annotations

import argparse
import gc
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

from overseer.exceptions import ConfigError, OverseerError


def _serve(args: argparse.Namespace) -> int:
    listener = _log_through_queue(args.log_level)
    try:
        return _run_server(args)
    finally:
        listener.stop()


LOG_GATHER = 0.05  # seconds a burst of log lines gathers before it is written


class _LogWriter(threading.Thread):
    """Writes the queued log lines to stderr, a burst at a time: woken by the first line after
    a quiet spell, it lets the lines of the next ``LOG_GATHER`` seconds gather and writes them
    with one call. A busy server so wakes it a few times a second instead of once per line
    (three lines a run: the request, the start, the end), each wake a thread hand-over the runs
    would pay for. Lines reach stderr at most ``LOG_GATHER`` late; on SIGKILL the last ones are
    lost (the Store, not the log, is what survives a crash)."""

    _STOP = object()

    def __init__(self, lines: queue.SimpleQueue, handler: logging.Handler):
        super().__init__(name="log-writer", daemon=True)
        self.lines, self.handler = lines, handler

    def run(self) -> None:
        while True:
            batch = [self.lines.get()]
            if batch[0] is not self._STOP:
                time.sleep(LOG_GATHER)
            try:
                while True:
                    batch.append(self.lines.get_nowait())
            except queue.Empty:
                pass
            records = [r for r in batch if r is not self._STOP]
            if records:
                self._write(records)
            if len(records) < len(batch):
                return

    def _write(self, records: list) -> None:
        text = []
        for record in records:
            try:
                text.append(self.handler.format(record) + "\n")
            except Exception:  # a record that cannot be formatted must not lose the others
                self.handler.handleError(record)
        try:
            self.handler.stream.write("".join(text))
            self.handler.stream.flush()
        except (OSError, ValueError):  # stderr closed: nothing to do about it
            pass

    def stop(self) -> None:
        self.lines.put(self._STOP)
        self.join(5)


def _log_through_queue(level: str) -> _LogWriter:
    """Log lines are written to stderr by one thread of their own (``_LogWriter``): the threads
    that run jobs and answer requests only queue them (under load they queued up on the
    handler's lock)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The format names no process or thread: a record need not look them up (getpid is a system
    # call, and every request and run logs).
    logging.logProcesses = logging.logMultiprocessing = logging.logThreads = False
    lines: queue.SimpleQueue = queue.SimpleQueue()
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper()))
    root.addHandler(logging.handlers.QueueHandler(lines))
    writer = _LogWriter(lines, handler)
    writer.start()
    return writer


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _stop_signals() -> int:
    """Catch SIGTERM and SIGINT from now on; the fd :func:`_wait_for_stop` reads them from.

    Python runs a signal's handler in the main thread only once that thread wakes, and a thread
    asleep in a lock (``Event.wait``) wakes only if the kernel delivered the signal to it, not to
    one of the server's other threads: now and then, under load, a SIGTERM was never acted on.
    The wakeup fd gets each signal's number from whichever thread the signal reached."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: None)   # the wakeup fd is written for signals with a handler
    return read_end


def _wait_for_stop(fd: int) -> None:
    while not any(number in _STOP_SIGNALS for number in os.read(fd, 64)):
        pass


def _refuse(*problems: str) -> int:
    for problem in problems:
        print(f"overseer: {problem}", file=sys.stderr)
    return 2


def _run_server(args: argparse.Namespace) -> int:
    from overseer.actors.system import System, serves
    from overseer.config import load_config
    from overseer.data_lock import DataDirLock
    from overseer.embedded import with_repository
    from overseer.http.server import HttpServer, check_bind, check_port

    log = logging.getLogger("overseer")
    try:
        config = load_config(args.config)
        check_bind(config)
        if config.execution.run_as is not None:
            from overseer.process.run_as import check_server
            check_server()  # a server that is not root cannot start jobs as others: nothing is made
    except ConfigError as e:
        return _refuse(*e.problems)
    # Before anything touches the data dir: a second server on it is refused here, naming the
    # first; then a taken port is refused before the recovery could end anybody's runs.
    try:
        lock = DataDirLock.acquire(config.data_path, serves(config))
    except OverseerError as e:
        return _refuse(str(e))
    try:
        check_port(config)
    except OSError as e:
        lock.release()
        return _refuse(f"cannot listen on {config.server.host}:{config.server.port}: {e}")
    try:
        config = with_repository(config)
    except ConfigError as e:
        lock.release()
        return _refuse(*e.problems)
    stop_signals = _stop_signals()
    system = System(config, lock=lock, subreaper=True)  # it owns this process (overseer.orphans)
    try:
        system.start()
    except OverseerError as e:
        print(f"overseer: {e}", file=sys.stderr)
        system.stop()
        return 2
    http = HttpServer(system, config)
    try:
        http.start()
    except Exception as e:
        print(f"overseer: cannot listen on {config.server.host}:{config.server.port}: {e}", file=sys.stderr)
        system.stop()
        return 2
    log.info("listening on %s (jobs from %s, data in %s)", config.base_url,
             system.repo_info()["url"], config.data_path)
    # What the start made (modules, the HTTP server, the actors) lives as long as the server: out
    # of the collector's sight, a full collection scans only what came since (26 ms against 0.1
    # here; it ran in the middle of a request now and then). Collected first, so that no garbage
    # of the start is frozen with it. The first job set is frozen too: when a sync replaces it,
    # refcounting frees it, and what cycles it holds stay (once, and bounded by one job set).
    gc.collect()
    gc.freeze()
    if args.config is None:
        print(f"Overseer is running the bundled example jobs on {config.base_url}\n"
              f"  try: curl {config.base_url}/jobs\n"
              f"       overseer run hello --follow\n"
              f"Stop it with Ctrl-C.", file=sys.stderr, flush=True)
    _wait_for_stop(stop_signals)
    log.info("stopping")
    http.stop()
    system.stop()
    log.info("stopped")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from overseer.repo.load import load_repository

    root = Path(args.path)
    if not root.is_dir():
        print(f"{args.path}: not a directory", file=sys.stderr)
        return 2
    try:
        jobs, errors = load_repository(root)
    except OSError as e:
        print(f"{args.path}: cannot read: {e.strerror}", file=sys.stderr)
        return 2
    if args.all_problems:
        from overseer.repo.problems import all_problems

        errors = all_problems(root, errors)
    for file, message in errors:
        print(f"{file}: {message}")
    if not args.quiet:
        files = f" in {len({file for file, _ in errors})} file(s)" if args.all_problems and errors else ""
        print(f"{len(jobs)} valid job(s), {len(errors)} problem(s){files}", file=sys.stderr)
    return 1 if errors else 0


def parser() -> argparse.ArgumentParser:
    from overseer import __version__
    from overseer.cli import client

    p = argparse.ArgumentParser(prog="overseer", description="A git-backed job runner.")
    p.add_argument("--version", action="version", version=f"overseer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="run the server in the foreground")
    serve.add_argument("-c", "--config", help="config file (default: the embedded default)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)
    validate = sub.add_parser("validate", help="check a job repository working tree")
    validate.add_argument("path")
    validate.add_argument("-q", "--quiet", action="store_true", help="print only the problems")
    validate.add_argument("-a", "--all-problems", action="store_true",
                          help="every problem of each file, not only the first")
    validate.set_defaults(func=_validate)
    client.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)

