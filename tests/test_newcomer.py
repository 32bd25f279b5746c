"""A newcomer's path, as the README gives it: `overseer serve` with no config serves the
bundled examples on 127.0.0.1:8080, and `overseer run <example> --follow` prints the output."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

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
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(URL + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
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
