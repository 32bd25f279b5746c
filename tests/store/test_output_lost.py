"""Output the store could not keep is told: a job flooding its output onto a disk that fills up (a
real tmpfs of a few MiB holding the whole data dir) ends with the event ``output-lost`` naming how
many bytes of which stream were not stored and why, and ``output_lost`` in its metadata; what was
stored and what was lost add up to what the job wrote."""
from __future__ import annotations

import subprocess

import pytest

from ..waiting import wait_finished

pytestmark = pytest.mark.slow

WRITTEN = 40_000_000  # bytes the job writes to stdout: five times the disk


@pytest.fixture
def small_disk(tmp_path):
    """``tmp_path/data`` on a tmpfs of 8 MiB (root only); unmounted after the test's system stops."""
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield data
    subprocess.run(["umount", "-l", str(data)], check=False)


def test_output_a_full_disk_could_not_keep_is_told_in_an_event_and_the_metadata(small_disk, system_factory,
                                                                               receiver):
    s = system_factory({"flood.yml": {"command": f"head -c {WRITTEN} /dev/zero; echo done >&2"}},
                       hooks={"output-lost": [receiver.url + "/lost"]})
    s.trigger("flood", {})
    done = wait_finished(s, "flood", 1, timeout=120)
    assert done["status"] == "complete" and done["exit_code"] == 0
    lost = done["output_lost"]
    stored = s.store.output_size("flood", 1, "stdout")
    assert lost["stdout"] > 0 and stored + lost["stdout"] == WRITTEN
    assert s.store.output_size("flood", 1, "stderr") + lost["stderr"] == len(b"done\n")
    names = [e["name"] for e in done["events"]]
    assert names[-2:] == ["output-lost", "complete"]  # told before the run's end, by the system
    event = done["events"][-2]
    assert event["source"] == "system"
    assert f"{lost['stdout']} bytes of stdout" in event["cause"] and "not stored" in event["cause"]
    assert "the store could not write" in event["cause"]
    got = receiver.wait(lambda r: r)
    assert got[0][1]["status"] == "output-lost" and got[0][1]["cause"] == event["cause"]


def test_a_run_whose_output_was_all_stored_says_nothing_of_loss(system_factory):
    s = system_factory({"quiet.yml": {"command": "head -c 100000 /dev/zero"}})
    s.trigger("quiet", {})
    done = wait_finished(s, "quiet", 1)
    assert "output_lost" not in done and "output-lost" not in [e["name"] for e in done["events"]]
    assert s.store.output_size("quiet", 1, "stdout") == 100000
