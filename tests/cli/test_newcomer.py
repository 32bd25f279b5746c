"""A newcomer's path, as the README gives it: `overseer serve` with no config serves the
bundled examples on 127.0.0.1:8080, `overseer run <example> --follow` prints the output, and the
README's first session prints what the README shows."""
from __future__ import annotations

import doctest
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ..conftest import free_port

BIN = Path(sys.executable).parent
URL = "http://127.0.0.1:8080"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.slow
def test_embedded_default_serves_the_examples(tmp_path):
    if not _port_free(8080):
        pytest.skip("port 8080 is taken on this machine")
    server = subprocess.Popen([str(BIN / "overseer"), "serve"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_health(URL, server)
        names = {j["name"] for j in requests.get(URL + "/jobs", timeout=5).json()["jobs"]}
        assert {"hello", "greet", "countdown", "disk-report", "maintenance.tidy-tmp"} <= names
        env = dict(os.environ)
        env.pop("OVERSEER_URL", None)
        run = subprocess.run([str(BIN / "overseer"), "run", "hello", "--follow"], capture_output=True,
                             text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stderr
        assert "hello from hello execution 1" in run.stdout
        run = subprocess.run([str(BIN / "overseer"), "run", "greet", "who=Ada; rm -rf /", "shout=true",
                              "--follow"], capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0 and run.stdout.strip() == "HELLO, ADA; RM -RF /!", run.stdout
        run = subprocess.run([str(BIN / "overseer"), "run", "countdown", "seconds=2", "--follow"],
                             capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0 and run.stdout.split() == ["2", "1", "liftoff"], run.stdout + run.stderr
        meta = requests.get(URL + "/jobs/countdown/1", timeout=5).json()
        assert [e["source"] for e in meta["events"] if e["name"] == "half-way"] == ["job"]
        assert (tmp_path / "var" / "example-jobs" / ".git").is_dir()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                server.kill()


README = Path(__file__).resolve().parents[2] / "README.rst"
_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z")
_TOOK = re.compile(r"\b(\d+\.\ds|\d+m\d\ds|\d+h\d\dm)\b")
_COMMIT = re.compile(r"\b([0-9a-f]{40}|[0-9a-f]{12})\b")


def first_session() -> list[tuple[str, str]]:
    """The README's "A first session": each ``$ command`` (with its ``\\`` continuation lines) and
    the output shown under it."""
    text = README.read_text()
    section = text[text.index("A first session\n"):text.index("Running it for real\n")]
    steps: list[list[str]] = []
    for line in section.splitlines():
        if not line.startswith("    "):
            continue
        line = line[4:]
        if line.startswith("$ "):
            steps.append([line[2:], ""])
        elif steps and steps[-1][0].endswith("\\"):
            steps[-1][0] += "\n" + line
        elif steps:
            steps[-1][1] += line + "\n"
    return [(command, shown) for command, shown in steps]


def _normal(text: str, url: str) -> str:
    text = text.replace("http://127.0.0.1:8080", url)
    return _COMMIT.sub("<commit>", _TOOK.sub("<took>", _TIME.sub("<time>", text)))


@pytest.mark.slow
def test_the_readme_first_session_prints_what_the_readme_shows(tmp_path):
    """Every command of the README's first session, run as a user would, against the embedded
    default started in an empty directory as ``scripts/serve`` does (its port moved, so that a
    server on 8080 cannot get in the way): each exits 0 and prints what the README shows, with
    times, durations and commits as placeholders and ``...`` for text left out."""
    if shutil.which("curl") is None:
        pytest.skip("the session uses curl, which is not installed")
    steps = first_session()
    commands = [command for command, _ in steps]
    assert len(steps) >= 8 and "overseer event countdown " in " ".join(commands), commands
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "port.yaml"
    config.write_text(f"server:\n  port: {port}\n")
    server = subprocess.Popen([str(BIN / "overseer"), "serve", "-c", str(config)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSEER_")}
    env.update(OVERSEER_URL=url, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    checker = doctest.OutputChecker()
    try:
        _wait_for_health(url, server)
        for command, shown in steps:
            done = subprocess.run(command.replace(".venv/bin/overseer", str(BIN / "overseer"))
                                  .replace("http://127.0.0.1:8080", url),
                                  shell=True, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=120)
            assert done.returncode == 0, f"$ {command}\n{done.stdout}"
            if shown:
                want, got = _normal(shown, url), _normal(done.stdout, url)
                assert checker.check_output(want, got, doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE), \
                    f"$ {command}\nthe README shows:\n{want}\nit printed:\n{got}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                server.kill()


def _wait_for_health(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert server.poll() is None, server.stdout.read().decode()
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.1)
