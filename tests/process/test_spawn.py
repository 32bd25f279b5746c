"""Starting job processes, on both paths: the native spawn (``clone3`` straight into the job's
cgroup, ``overseer/process/_spawn_clone.c``) and the Popen fallback. Real processes, real cgroups where a
cgroup2 hierarchy is writable; each path must give the job the same world."""
from __future__ import annotations

import errno
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from overseer.process import spawn
from overseer.process.job_process import ExitStatus, process_start_time
from overseer.process.runner import ProcessMonitor

from ..serving import alive
from ..waiting import wait_for

ENV = {b"PATH": b"/usr/bin:/bin", b"LANG": b"C"}
_names = iter(range(1 << 30))


@pytest.fixture(params=["native", "popen", "unbuilt"])
def monitor(request, monkeypatch):
    """A ProcessMonitor (with a cgroup per job where it can make one) on one spawn path:
    "unbuilt" is a machine without the extension (Popen, and reaping from Python)."""
    if request.param == "native" and not spawn.built():
        pytest.skip("overseer.process._spawn is not built here")
    monkeypatch.delenv("OVERSEER_NO_CGROUPS", raising=False)
    monkeypatch.delenv("OVERSEER_NO_NATIVE_SPAWN", raising=False)
    if request.param == "unbuilt":
        monkeypatch.setattr(spawn, "_built", False)
    m = ProcessMonitor(native_spawn=request.param == "native")
    m.kind = request.param
    try:
        if request.param == "native":
            run(m, ["/bin/true"])
            if not spawn.available():
                pytest.skip("this kernel refuses clone3 into a cgroup")
        yield m
    finally:
        if m.cgroup_root:  # the monitor removes a killed job's cgroup once its processes are gone
            wait_for(lambda: not job_cgroups(m), 10, "every job's cgroup removed")
        m.stop()
        if m.cgroup_root:
            m.cgroup_root.remove()  # shared with other tests' monitors in this process: may stay


class Run:
    """A started job and what it wrote; ``wait()`` for its end."""

    def __init__(self, monitor: ProcessMonitor, argv, cwd="/", env=None):
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.ended = threading.Event()
        self.status = None
        self.proc = monitor.start(argv, cwd, ENV if env is None else env, f"spawn-test-{next(_names)}",
                                  self._output, self._exit)

    def _output(self, stream: str, data: bytes) -> None:
        self.out[stream] += data

    def _exit(self, status: ExitStatus) -> None:
        self.status = status
        self.ended.set()

    def wait(self, timeout: float = 20) -> Run:
        assert self.ended.wait(timeout), "the job did not end"
        return self

    @property
    def stdout(self) -> bytes:
        return bytes(self.out["stdout"])

    @property
    def stderr(self) -> bytes:
        return bytes(self.out["stderr"])


def run(monitor: ProcessMonitor, argv, **kw) -> Run:
    return Run(monitor, argv, **kw).wait()


def sh(monitor: ProcessMonitor, command: str, **kw) -> Run:
    return run(monitor, ["/bin/sh", "-c", command], **kw)


def children() -> set[int]:
    """The pids of this process's children, zombies included."""
    me, found = str(os.getpid()), set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(") ", 1)[1].split()[1] == me:
                    found.add(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def job_cgroups(monitor: ProcessMonitor) -> list[Path]:
    """The cgroups of this file's jobs (the root is per server process, shared with other tests)."""
    return list(monitor.cgroup_root.path.glob("spawn-test-*"))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- the build ---------------------------------------------------------------------------------
def test_native_spawn_is_built_where_it_can_be():
    """CI must not lose the native path without notice: where a compiler and a supported
    platform are, a missing extension is a broken build."""
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")
            and shutil.which("gcc")):
        pytest.skip("no gcc, or a platform without the native spawn")
    assert spawn.built(), "overseer.process._spawn is not built: run scripts/bootstrap and read its output"


def test_the_environment_switch_selects_popen(monkeypatch):
    monkeypatch.setenv("OVERSEER_NO_NATIVE_SPAWN", "1")
    assert not spawn.available()
    m = ProcessMonitor(use_cgroups=False)
    try:
        r = Run(m, ["/bin/sleep", "0.2"])
        assert r.proc._popen is not None
        assert r.wait().status == ExitStatus(0, None)
    finally:
        m.stop()


# -- what the job gets -------------------------------------------------------------------------
def test_output_goes_to_its_stream(monitor):
    r = sh(monitor, "echo out; echo err >&2; printf more")
    assert (r.stdout, r.stderr) == (b"out\nmore", b"err\n")
    assert r.status == ExitStatus(0, None)


def test_exit_codes_and_signals(monitor):
    assert sh(monitor, "exit 3").status == ExitStatus(3, None)
    assert sh(monitor, "kill -TERM $$").status == ExitStatus(None, "SIGTERM")
    r = Run(monitor, ["/bin/sleep", "30"])
    r.proc.signal(signal.SIGKILL)
    assert r.wait().status == ExitStatus(None, "SIGKILL")


def test_own_session_and_process_group(monitor):
    r = sh(monitor, "echo $$; cut -d' ' -f5,6 /proc/$$/stat")
    pid, ids = r.stdout.decode().splitlines()
    assert int(pid) == r.proc.pid == r.proc.pgid
    assert ids.split() == [pid, pid]  # pgid == sid == pid


def test_stdin_is_dev_null(monitor):
    r = sh(monitor, "readlink /proc/$$/fd/0; cat")
    assert r.stdout == b"/dev/null\n"


def test_cwd(monitor, tmp_path):
    assert sh(monitor, "pwd -P", cwd=str(tmp_path)).stdout.decode().strip() == str(tmp_path.resolve())


def test_environment_is_exactly_the_one_given(monitor):
    env = {b"PATH": b"/usr/bin:/bin", b"ODD": b"a b\nc=d", b"EMPTY": b""}
    r = sh(monitor, "cat /proc/$$/environ", env=env)  # what exec was given, before sh adds PWD
    assert sorted(r.stdout.split(b"\0")[:-1]) == sorted(k + b"=" + v for k, v in env.items())


def test_no_fd_leaks_into_the_job(monitor):
    leak = os.open(os.devnull, os.O_RDONLY)  # inheritable, as a careless library leaves one
    os.set_inheritable(leak, True)
    try:
        r = run(monitor, ["/bin/ls", "/proc/self/fd"])
    finally:
        os.close(leak)
    assert sorted(r.stdout.split()) == [b"0", b"1", b"2", b"3"]  # 3: the directory ls reads


def test_running_jobs_fds_are_parked_high_and_none_reaches_a_new_job(monitor):
    """With jobs running, their pipes and pidfds sit from runner.park_fds_at() up (native path,
    where the open-file limit allows), and a job started meanwhile, born sharing the fd table, still
    sees only 0-2 of it: not the server's fds, not the running jobs' ones, even inheritable ones."""
    import resource

    from overseer.process import runner

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # as the server does at start
    monitor._park_at = runner.park_fds_at()
    leak = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leak, True)
    sleepers = [Run(monitor, ["/bin/sleep", "30"]) for _ in range(20)]
    try:
        r = run(monitor, ["/bin/ls", "/proc/self/fd"])
        assert sorted(r.stdout.split()) == [b"0", b"1", b"2", b"3"]
        if monitor.kind == "native" and monitor._park_at:
            for s in sleepers:
                fds = [fd for fd, (w, _) in list(monitor._fds.items()) if w.proc is s.proc]
                assert len(fds) == 3 and all(fd >= monitor._park_at for fd in fds), fds
    finally:
        os.close(leak)
        for s in sleepers:
            s.proc.signal(signal.SIGKILL)
        for s in sleepers:
            s.wait()


def test_signal_dispositions_are_the_defaults(monitor):
    old = signal.signal(signal.SIGUSR1, lambda *_: None)  # a Python handler must not survive
    try:
        r = run(monitor, ["/bin/cat", "/proc/self/status"])
    finally:
        signal.signal(signal.SIGUSR1, old)
    masks = dict(line.split(":\t") for line in r.stdout.decode().splitlines() if line.startswith("Sig"))
    with open("/proc/self/status") as f:
        ours = dict(line.split(":\t") for line in f.read().splitlines() if line.startswith("Sig"))
    restored = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    assert int(masks["SigIgn"], 16) == int(ours["SigIgn"], 16) & ~restored  # what was ignored stays
    assert int(masks["SigBlk"], 16) == 0
    assert int(masks["SigCgt"], 16) == 0


def test_sigpipe_is_default(monitor):
    started = time.monotonic()
    r = sh(monitor, "yes | head -1")
    assert (r.status, r.stdout) == (ExitStatus(0, None), b"y\n")
    assert time.monotonic() - started < 5


# -- the cgroup --------------------------------------------------------------------------------
def test_in_its_cgroup_from_the_first_instant(monitor):
    if monitor.cgroup_root is None:
        pytest.skip("no writable cgroup v2 hierarchy here")
    r = run(monitor, ["/bin/cat", "/proc/self/cgroup"])
    line = [x for x in r.stdout.decode().splitlines() if x.startswith("0::")][0]
    mount = monitor.cgroup_root.path.parent
    assert mount / line[3:].lstrip("/") == r.proc.cgroup.path
    assert r.proc._joined == (monitor.kind == "native")  # born there: never moved


def test_a_setsid_child_forked_at_once_is_killed_with_the_cgroup(monitor):
    if monitor.cgroup_root is None:
        pytest.skip("no writable cgroup v2 hierarchy here")
    r = Run(monitor, ["/bin/sh", "-c", "setsid sleep 30 >/dev/null 2>&1 & echo $!; sleep 30"])
    escaped = int(wait_for(lambda: r.stdout.strip(), 10, "the setsid child's pid"))
    assert r.proc.cgroup.pids()
    r.proc.signal(signal.SIGKILL)  # cgroup.kill
    assert r.wait().status == ExitStatus(None, "SIGKILL")
    wait_for(lambda: not alive(escaped), 10, "the setsid child killed")


# -- failures to start -------------------------------------------------------------------------
def _fails(monitor, argv, cwd="/") -> OSError:
    before_children, before_fds = children(), open_fds()
    with pytest.raises(OSError) as info:
        Run(monitor, argv, cwd=cwd)
    assert children() <= before_children, "a failed start left a child (zombie) behind"
    assert open_fds() <= before_fds, "a failed start left an fd open"  # others' may close meanwhile
    if monitor.cgroup_root:
        assert not job_cgroups(monitor), "a failed start left its cgroup"
    return info.value


def test_a_missing_binary(monitor, tmp_path):
    e = _fails(monitor, [str(tmp_path / "missing")])
    assert e.errno == errno.ENOENT and e.filename == str(tmp_path / "missing")


def test_a_file_that_is_not_executable(monitor, tmp_path):
    script = tmp_path / "plain"
    script.write_text("#!/bin/sh\necho hi\n")
    e = _fails(monitor, [str(script)])
    assert e.errno == errno.EACCES and e.filename == str(script)


def test_a_missing_cwd(monitor, tmp_path):
    e = _fails(monitor, ["/bin/true"], cwd=str(tmp_path / "gone"))
    assert e.errno == errno.ENOENT and e.filename == str(tmp_path / "gone")


def test_a_script_whose_interpreter_is_missing(monitor, tmp_path):
    script = tmp_path / "orphan"
    script.write_text("#!/no/such/interpreter\necho hi\n")
    script.chmod(0o755)
    e = _fails(monitor, [str(script)])
    assert e.errno == errno.ENOENT and e.filename == str(script)
    assert "/no/such/interpreter" in str(e)


def test_a_command_name_is_searched_in_the_jobs_path(monitor, tmp_path):
    if monitor.kind != "native" and monitor.cgroup_root:
        pytest.skip("the Popen path's cgroup wrapper takes paths only (as every job gives)")
    (tmp_path / "hello").write_text("#!/bin/sh\necho found in the PATH given\n")
    (tmp_path / "hello").chmod(0o755)
    r = run(monitor, ["hello"], env={b"PATH": os.fsencode(tmp_path) + b":/usr/bin:/bin"})
    assert (r.status, r.stdout) == (ExitStatus(0, None), b"found in the PATH given\n")


@pytest.mark.parametrize("built", [True, False])
def test_mkdirs_makes_in_order_and_stops_at_the_first_failure(tmp_path, monkeypatch, built):
    if built and not spawn.built():
        pytest.skip("overseer.process._spawn is not built here")
    monkeypatch.setattr(spawn, "_built", built)
    paths = [str(tmp_path / "a"), str(tmp_path / "missing" / "b"), str(tmp_path / "c")]
    assert spawn.mkdirs(paths, 0o700) == (1, errno.ENOENT)
    assert (tmp_path / "a").is_dir() and not (tmp_path / "c").exists()
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert spawn.mkdirs([str(tmp_path / "c"), str(tmp_path / "d")], 0o700) == (2, 0)


# -- many at once ------------------------------------------------------------------------------
def test_concurrent_starts(monitor):
    runs: list[Run] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def starter() -> None:
        try:
            for _ in range(25):
                r = Run(monitor, ["/bin/sh", "-c", "echo $$"])
                with lock:
                    runs.append(r)
        except BaseException as e:  # noqa: B036 - reported below
            errors.append(e)

    threads = [threading.Thread(target=starter) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(runs) == 200
    for r in runs:
        r.wait(60)
        assert r.status == ExitStatus(0, None)
        assert int(r.stdout) == r.proc.pid
    wait_for(lambda: not (children() & {r.proc.pid for r in runs}), 10, "every job reaped")


# -- the extension itself ----------------------------------------------------------------------
@pytest.mark.skipif(not spawn.built(), reason="overseer.process._spawn is not built here")
def test_source_fds_already_on_0_1_2(tmp_path):
    """A server started with 0-2 closed gets its pipes on those numbers; the child must still see
    each stream where it belongs (here stdout's source is fd 2 and stderr's is fd 1)."""
    report = tmp_path / "report"
    code = f"""if True:
        import os
        from overseer.process import _spawn
        for fd in (0, 1, 2):
            os.close(fd)
        os.open(os.devnull, os.O_RDONLY)           # 0
        a_r, a_w = os.pipe()                        # 1, 2
        b_r, b_w = os.pipe()                        # 3, 4
        a_r = os.dup(a_r); os.dup2(b_w, 1); os.close(b_w)   # fd 1: pipe b, fd 2: pipe a
        pid, pidfd = _spawn.spawn(b"/bin/sh", [b"sh", b"-c", b"echo out; echo err >&2"], [],
                                  None, 0, 2, 1, -1)
        os.close(1); os.close(2)
        _, status = os.waitpid(pid, 0)
        with open({str(report)!r}, "wb") as f:
            f.write(os.read(a_r, 100) + b"|" + os.read(b_r, 100) + b"|" + str(status).encode())
        """
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert Path(report).read_bytes() == b"out\n|err\n|0"


@pytest.mark.skipif(not spawn.available(), reason="no native spawn here")
def test_spawn_piped_watches_its_fds_and_reads_its_start_time():
    """With an epoll fd the native spawn hands back its pipes and pidfd already in that set
    (EPOLLIN, the fd as data), and the start time /proc gives for the pid."""
    ep = select.epoll()
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pid, pidfd, out_r, err_r, started, cgroup_error = spawn.spawn_piped(
            ["/bin/sh", "-c", "echo out; echo err >&2; read x"], "/", ENV, devnull, None, ep.fileno())
        assert cgroup_error == 0
        try:
            assert started == process_start_time(pid) and isinstance(started, int)
            seen: set = set()
            deadline = time.monotonic() + 10
            while seen != {out_r, err_r, pidfd} and time.monotonic() < deadline:
                seen.update(fd for fd, _ in ep.poll(1))
            assert seen == {out_r, err_r, pidfd}  # output on both pipes, then the exit
            assert os.read(out_r, 100) == b"out\n" and os.read(err_r, 100) == b"err\n"
            with pytest.raises(FileExistsError):
                ep.register(pidfd, select.EPOLLIN)  # in the set already
        finally:
            os.waitpid(pid, 0)
            for fd in (pidfd, out_r, err_r):
                os.close(fd)
    finally:
        os.close(devnull)
        ep.close()


@pytest.mark.skipif(not spawn.available(), reason="no native spawn here")
def test_spawn_piped_makes_the_cgroup_and_leaves_nothing_when_the_start_fails(tmp_path):
    """make_cgroup: the cgroup is made and the job born in it; one that cannot be made is said
    (its errno) and the job runs without it; a start that fails removes the cgroup it made."""
    m = ProcessMonitor(native_spawn=True)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if m.cgroup_root is None:
            pytest.skip("no writable cgroup2 hierarchy here")
        made = m.cgroup_root.path / f"spawn-test-made-{os.getpid()}"
        pid, pidfd, out_r, err_r, _, error = spawn.spawn_piped(
            ["/bin/sh", "-c", "cat /proc/self/cgroup"], "/", ENV, devnull, made, -1, True)
        os.waitpid(pid, 0)
        assert error == 0 and os.read(out_r, 4096).decode().strip().endswith("/" + made.name)
        for fd in (pidfd, out_r, err_r):
            os.close(fd)
        made.rmdir()

        nowhere = m.cgroup_root.path / "no-such-parent" / "x"
        pid, pidfd, out_r, err_r, _, error = spawn.spawn_piped(
            ["/bin/sh", "-c", "echo ran"], "/", ENV, devnull, nowhere, -1, True)
        os.waitpid(pid, 0)
        assert error == errno.ENOENT and os.read(out_r, 100) == b"ran\n"
        for fd in (pidfd, out_r, err_r):
            os.close(fd)

        with pytest.raises(FileNotFoundError):
            spawn.spawn_piped([str(tmp_path / "missing")], "/", ENV, devnull, made, -1, True)
        assert not made.exists()  # made for the start, removed with it
    finally:
        os.close(devnull)
        m.stop()


SECCOMP_WRAPPER = r"""
/* Run argv[1..] under a seccomp filter that makes some system calls fail (RULES below), as an
 * older kernel or a container's seccomp profile would. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        RULES
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
        return 126;
    execv(argv[1], argv + 1);
    return 127;
}
"""
# clone3 (435) fails with ENOSYS (38): the C library then makes its threads with clone, as there.
NO_CLONE3 = """BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 435, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 38),"""
# close_range (436) with CLOSE_RANGE_UNSHARE (2) fails with EINVAL (22), as before Linux 5.9.
NO_UNSHARE = """BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 436, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 22),"""


def seccomp_wrapper(tmp_path: Path, rules: str) -> str:
    """A compiled SECCOMP_WRAPPER with ``rules``: the path of a program running its arguments."""
    source, binary = tmp_path / "wrapper.c", tmp_path / "wrapper"
    source.write_text(SECCOMP_WRAPPER.replace("RULES", rules))
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True, timeout=60)
    return str(binary)


@pytest.mark.skipif(not spawn.built() or not shutil.which("gcc"), reason="needs the extension and gcc")
def test_without_clone3_the_monitor_falls_back_to_popen(tmp_path):
    wrapper = seccomp_wrapper(tmp_path, NO_CLONE3)
    code = """if True:
        import os, threading
        from overseer.process import spawn
        from overseer.process.runner import ProcessMonitor
        m = ProcessMonitor(use_cgroups=False)
        for _ in range(2):
            done, out = threading.Event(), []
            p = m.start(["/bin/sh", "-c", "echo hi; exit 4"], "/", {b"PATH": b"/usr/bin:/bin"}, "x",
                        lambda stream, data: out.append(data), lambda st: (out.append(st), done.set()))
            assert done.wait(10)
            print(out, p._popen is not None, spawn.available())
        m.stop()
        """
    r = subprocess.run([wrapper, sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = "[b'hi\\n', ExitStatus(exit_code=4, signal=None)] True False"
    assert r.stdout.splitlines() == [line, line]


@pytest.mark.skipif(not spawn.built() or not shutil.which("gcc"), reason="needs the extension and gcc")
def test_without_close_range_unshare_a_job_gets_a_whole_copy_and_still_nothing_leaks(tmp_path):
    """A kernel that refuses CLOSE_RANGE_UNSHARE: the first child exits before it touches the
    shared table, the start is made again with a copy, and every later start goes that way."""
    wrapper = seccomp_wrapper(tmp_path, NO_UNSHARE)
    code = """if True:
        import os
        from overseer.process import spawn
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        leak = os.open(os.devnull, os.O_RDONLY)
        os.set_inheritable(leak, True)
        for _ in range(2):
            pid, pidfd, out_r, err_r, _, _ = spawn.spawn_piped(
                ["/bin/ls", "/proc/self/fd"], "/", {b"PATH": b"/usr/bin:/bin"}, devnull, None)
            _, status = os.waitpid(pid, 0)
            os.set_blocking(out_r, True)
            print(sorted(os.read(out_r, 4096).split()), status)
            for fd in (pidfd, out_r, err_r):
                os.close(fd)
        """
    r = subprocess.run([wrapper, sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = "[b'0', b'1', b'2', b'3'] 0"
    assert r.stdout.splitlines() == [line, line]


def test_a_dead_servers_busy_cgroups_are_left_and_reported_in_one_line(caplog):
    from overseer.process import cgroups

    root = cgroups.CgroupRoot.find()
    if root is None:
        pytest.skip("no writable cgroup2 hierarchy here")
    mount = root.path.parent
    root.remove()
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{pid}"))
    parent = mount / f"overseer-{dead}"
    sleepers = []
    try:
        for i in range(8):
            (parent / f"job-{i}").mkdir(parents=True)
            sleeper = subprocess.Popen(["sleep", "30"])
            sleepers.append(sleeper)
            (parent / f"job-{i}" / "cgroup.procs").write_text(str(sleeper.pid))
        (parent / "idle").mkdir()
        caplog.set_level("WARNING", logger="overseer.process.cgroups")
        assert cgroups.remove_stale(mount) == []
        assert not (parent / "idle").exists() and (parent / "job-0").exists()
        (line,) = [r.getMessage() for r in caplog.records if "still holds processes" in r.getMessage()]
        assert "in 8 cgroups (job-0, job-1, job-2, job-3, job-4 and 3 more)" in line
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        wait_for(lambda: cgroups.remove_stale(mount) == [parent], 10, "the dead server's cgroup removed")
