"""A run cannot change what another run executes: a commit's snapshot is read-only to its jobs, to
jobs running as root too (a read-only bind mount), and the hard links between the snapshots of
successive commits let no write through.

Each test runs a real ``overseer serve`` on a real git repository, with real jobs (as root, as
the tests are), which attack their own working directory the ways a job can: rewrite, append,
chmod, create, mkdir, rename into, rename inside and delete.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from ..conftest import mounts_under
from ..serving import Server
from ..waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks are those of a job running as root")

TREES = "snapshot-trees"   # data_dir/snapshot-trees: the snapshots' files, as the server writes them
TOOL = "#!/bin/sh\necho original\n"
TAMPERED = "#!/bin/sh\\necho tampered\\n"

# Each attack is one shell command run in the job's working directory (its snapshot).
ATTACKS = {
    "chmod": "chmod 0777 scripts/tool.sh",
    "rewrite": f"printf '{TAMPERED}' > scripts/tool.sh",
    "append": "echo 'echo tampered' >> scripts/tool.sh",
    "create": "touch scripts/planted.sh",
    "mkdir": "mkdir planted",
    "rename-into": f"t=$(mktemp) && printf '{TAMPERED}' > \"$t\" && chmod 0755 \"$t\" "
                   "&& { mv -f \"$t\" scripts/tool.sh || { rm -f \"$t\"; false; }; }",
    "rename-inside": "mv scripts/tool.sh scripts/moved.sh",
    "delete": "rm tool.yml",
}
# Every attack, each reported as "did NAME" or "refused NAME" (its errors on stderr).
TAMPER = "".join(f"if {{ {cmd}; }}; then echo did {name}; else echo refused {name}; fi\n"
                 for name, cmd in ATTACKS.items())
REFUSED = "".join(f"refused {name}\n" for name in ATTACKS).encode()

FILES = {
    "scripts/tool.sh": TOOL,
    "tool.yml": {"script": "tool.sh"},
    "tamper.yml": {"command": TAMPER},
    # The same attacks by a user other than the server's (nobody): refused by permissions alone.
    "tamper-as-nobody.yml": {"command": "exec setpriv --reuid=65534 --regid=65534 --clear-groups "
                                        "env TMPDIR=/tmp sh -c \"$ATTACKS\"",
                             "env": {"ATTACKS": TAMPER}},
}


def run(server: Server, job: str) -> tuple[dict, bytes]:
    """Run ``job`` to its end: its record and its stdout."""
    record = server.wait(job, server.run(job)["id"], timeout=60)
    out = server.get(f"/jobs/{job}/{record['id']}/stdout").content
    return record, out


def assert_untouched(server: Server, commit: str) -> None:
    """The snapshot of ``commit`` holds the commit's files as written, none writable."""
    for root in (server.data / "snapshots" / commit, server.data / TREES / commit):
        assert (root / "scripts/tool.sh").read_text() == TOOL
        assert sorted(p.name for p in (root / "scripts").iterdir()) == ["tool.sh"]
        assert not (root / "planted").exists() and (root / "tool.yml").is_file()
        assert_read_only_modes(root)


def assert_read_only_modes(root: Path) -> None:
    """No write bit on any file or directory under ``root``; every directory 0555."""
    for dirpath, _dirs, files in os.walk(root):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o555, dirpath
        for name in files:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            if not stat.S_ISLNK(mode):
                assert not mode & 0o222, (os.path.join(dirpath, name), oct(mode))


def commit_and_sync(server: Server, files: dict) -> str:
    """Commit ``files``, have the server load that commit and wait for its snapshot."""
    commit = server.repo.commit(files)
    r = server.req("POST", "/repo/sync")
    assert r.status_code == 202, r.text
    wait_for(lambda: server.get("/repo").json()["commit"] == commit, 30, f"the sync to {commit[:12]}")
    wait_for(lambda: (server.data / "snapshots" / commit).is_dir(), 30, f"the snapshot of {commit[:12]}")
    return commit


def attack(server: Server, job: str = "tamper") -> None:
    record, out = run(server, job)
    assert out == REFUSED, (out.decode(), server.get(f"/jobs/{job}/{record['id']}/stderr").text)


def test_a_root_job_cannot_change_its_snapshot_for_the_next_run_or_commit(tmp_path):
    server = Server(tmp_path / "s", FILES).start()
    try:
        first = server.get("/repo").json()["commit"]
        assert run(server, "tool")[1] == b"original\n"
        attack(server)
        assert_untouched(server, first)
        assert run(server, "tool")[1] == b"original\n"      # the next run of the same commit
        # The next commit's snapshot is made from this one (hard links, then the changed paths).
        second = commit_and_sync(server, {"other.txt": "x\n"})
        assert second != first
        record, out = run(server, "tool")
        assert record["commit"] == second and out == b"original\n"
        attack(server)
        assert_untouched(server, second)
        assert server.stop() == 0
        assert mounts_under(tmp_path) == []                  # a stopped server leaves no mount
        server.start()
        attack(server)
        assert run(server, "tool")[1] == b"original\n"      # and after a restart
        assert_untouched(server, second)
    finally:
        server.stop()
    assert mounts_under(tmp_path) == []


def test_a_write_through_one_snapshot_never_reaches_another_commits(tmp_path):
    release = tmp_path / "release"
    files = dict(FILES, **{"hold.yml": {"command": f"while [ ! -e {release} ]; do sleep 0.05; done"}})
    server = Server(tmp_path / "s", files).start()
    try:
        first = server.get("/repo").json()["commit"]
        hold = server.run("hold")["id"]          # keeps the first commit's snapshot in use
        server.wait("hold", hold, state="running")
        second = commit_and_sync(server, {"other.txt": "x\n"})
        trees = server.data / TREES
        view = server.data / "snapshots"
        # The two snapshots share the script's inode: that is what a write must not get through.
        assert (os.stat(view / first / "scripts/tool.sh").st_ino
                == os.stat(view / second / "scripts/tool.sh").st_ino)
        attack(server)                            # from the second commit's snapshot
        assert_untouched(server, first)
        assert_untouched(server, second)
        release.touch()
        assert server.wait("hold", hold)["status"] == "complete"
        # Unused now: the next sync removes the first snapshot, mounted read-only as it is.
        third = commit_and_sync(server, {"other.txt": "y\n"})
        wait_for(lambda: not (trees / first).exists() and not (server.data / "snapshots" / first).exists(),
                 30, "the unused snapshot removed")
        wait_for(lambda: not [p for p in trees.iterdir() if p.name.startswith(".trash-")], 30,
                 "the removed snapshot deleted")
        record, out = run(server, "tool")
        assert record["commit"] == third and out == b"original\n"
    finally:
        release.touch()
        server.stop()
    assert mounts_under(tmp_path) == []


def test_a_sigkilled_server_with_its_snapshots_mounted_restarts_cleanly(tmp_path):
    server = Server(tmp_path / "s", FILES).start()
    view = server.data / "snapshots"
    try:
        assert run(server, "tool")[1] == b"original\n"
        assert mounts_under(server.data) == [str(view)]
        server.kill()
        assert mounts_under(server.data) == [str(view)]      # a crash leaves the mount behind
        server.start()
        assert mounts_under(server.data) == [str(view)]      # taken as it is: one mount, not two
        attack(server)
        assert run(server, "tool")[1] == b"original\n"
        assert "Traceback" not in server.log()
    finally:
        server.stop()
    assert mounts_under(tmp_path) == []
    shutil.rmtree(server.data)                                # nothing left that cannot be removed
    assert not server.data.exists()


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv to start a server that cannot mount")
def test_where_mounting_is_impossible_permissions_refuse_other_users_and_the_gap_is_logged(tmp_path):
    server = Server(tmp_path / "s", FILES)
    server.wrapper = ["setpriv", "--bounding-set", "-sys_admin", "--"]   # root without CAP_SYS_ADMIN
    server.start()
    try:
        warnings = [line for line in server.log().splitlines() if "cannot mount" in line]
        assert len(warnings) == 1, warnings
        assert "WARNING" in warnings[0] and "as root" in warnings[0] and "permissions" in warnings[0]
        commit = server.get("/repo").json()["commit"]
        assert run(server, "tool")[1] == b"original\n"
        attack(server, "tamper-as-nobody")
        assert_untouched(server, commit)
        assert mounts_under(tmp_path) == []
        second = commit_and_sync(server, {"other.txt": "x\n"})
        attack(server, "tamper-as-nobody")
        assert_untouched(server, second)
        assert len([line for line in server.log().splitlines() if "cannot mount" in line]) == 1  # once
    finally:
        server.stop()
    # The next start that can mount takes the same data dir over.
    server.wrapper = []
    server.start()
    try:
        attack(server)
        assert run(server, "tool")[1] == b"original\n"
        assert mounts_under(server.data) == [str(server.data / "snapshots")]
    finally:
        server.stop()
    assert mounts_under(tmp_path) == []


def test_trees_written_in_the_view_itself_are_made_anew_not_run(tmp_path):
    # A data dir whose snapshots/ holds the trees themselves, one of them changed by a job.
    server = Server(tmp_path / "s", FILES)
    commit = server.repo.commit({})
    old = server.data / "snapshots" / commit
    (old / "scripts").mkdir(parents=True)
    (old / "scripts/tool.sh").write_text(TAMPERED.replace("\\n", "\n"))
    (old / "scripts/tool.sh").chmod(0o755)
    (old / "tool.yml").write_text("script: tool.sh\n")
    server.start()
    try:
        assert run(server, "tool")[1] == b"original\n"
        assert mounts_under(server.data) == [str(server.data / "snapshots")]
        assert_untouched(server, commit)
        trees = server.data / TREES
        wait_for(lambda: not [p for p in trees.iterdir() if p.name.startswith(".trash-")], 30,
                 "the old trees deleted")
    finally:
        server.stop()
    assert mounts_under(tmp_path) == []
