/* Start a job process with clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD [| CLONE_INTO_CGROUP]).
 *
 * Why not fork/exec or posix_spawn: a child born in its cgroup (CLONE_INTO_CGROUP) is never
 * migrated, so it never waits for the RCU grace period that a write to cgroup.procs costs on a
 * cgroup2 mount without favordynmods, and it takes no cgroup-wide lock that blocks other forks.
 * CLONE_PIDFD hands back the pidfd the monitor needs, race-free and without pidfd_open.
 *
 * Why the assembly: with CLONE_VM the child must run on a stack of its own, and clone3 puts it
 * there right after the syscall instruction, inside the calling function. No C compiler can
 * express that, so the syscall and the child's first call live in one asm block (as in glibc's
 * clone3.S and musl's clone.s). Only x86_64 and aarch64 have it; elsewhere available() is
 * False and the caller uses subprocess.
 *
 * The child shares the parent's memory and, while the calling thread is suspended (CLONE_VFORK),
 * the other threads of the server keep running in it. So the child makes only system calls and
 * async-signal-safe libc calls: no allocation, no locks, no Python.
 *
 * This file is the start itself; _spawn.c is the module around it (_spawn.h: what they share).
 */
#include "_spawn.h"

#ifdef NATIVE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define CLOSE_RANGE_UNSHARE_ (1U << 1)
#define CLOSE_RANGE_CLOEXEC_ (1U << 2)
#define CLONE_PIDFD_ 0x00001000ULL
#define CLONE_INTO_CGROUP_ 0x200000000ULL

/* Our own copy of struct clone_args: the system's headers may predate the cgroup field. */
struct clone_args_ {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};
#define CLONE_ARGS_SIZE_VER0 64 /* without set_tid and cgroup: what clone3 took in 5.3 */
#define CLONE_ARGS_SIZE_VER2 88 /* with cgroup (5.7) */

#define CHILD_STACK (64 * 1024)

/* 0 once a kernel refused close_range(CLOSE_RANGE_UNSHARE): children then get a whole copy. */
static int share_files = 1;

static void child_exit(void) {
    for (;;)
        syscall(SYS_exit_group, 127);
}

static void child_main(void *arg) {
    struct child *c = arg;
    /* Born sharing the server's fd table, so the kernel copied none of it at the clone: take a
     * table of our own holding only the fds below unshare_below (0-2 and the three sources),
     * where a plain clone copies every one of the server's fds (three per running job) and the
     * exec then closes them one by one: 1.6 ms a start with 2,000 jobs running. Until this call
     * nothing here may touch an fd: the table is the server's. */
    if (c->unshare_below &&
        syscall(SYS_close_range, c->unshare_below, ~0U, CLOSE_RANGE_UNSHARE_) < 0) {
        c->no_unshare = 1;
        child_exit();
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;

    /* The parent's handlers are Python's: they must never run here (as _posixsubprocess). The
     * disposition table is the child's own (no CLONE_SIGHAND), so this does not touch the parent.
     * Errors are the C library's internal signals: skip them. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0)
            continue;
        void *h = (sa.sa_flags & SA_SIGINFO) ? (void *)sa.sa_sigaction : (void *)sa.sa_handler;
        if (h != (void *)SIG_IGN && h != (void *)SIG_DFL)
            sigaction(sig, &dfl, NULL);
    }
    /* Python ignores these; an ignored disposition survives exec (subprocess' restore_signals). */
    sigaction(SIGPIPE, &dfl, NULL);
    sigaction(SIGXFSZ, &dfl, NULL);

    if (setsid() < 0)
        goto fail;

    /* Move sources that sit on 0-2 out of the way first, so no dup2 overwrites one still needed
     * (the server may run with 0-2 closed, and then its pipes get those numbers). */
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = c->fds[i];
        if (fds[i] < 3 && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
            goto fail;
    }
    for (int i = 0; i < 3; i++)  /* dup2 clears close-on-exec on the target */
        if (dup2(fds[i], i) < 0)
            goto fail;
    /* Nothing of the server's reaches the job. Failure means an old kernel, where every fd Python
     * opens is close-on-exec anyway. */
    syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC_);

    /* run_as: groups, then gid, then uid (after which nothing else could be changed). Raw
     * system calls: glibc's setgroups/setresgid/setresuid make every thread of the process
     * change (a signal to each), and this child shares the server's memory, so they would take
     * the server's threads for its own. Before the chdir and the exec, so that both are checked
     * against the job's permissions. */
    if (c->set_ids && (syscall(SYS_setgroups, c->ngroups, c->groups) < 0 ||
                       syscall(SYS_setresgid, c->gid, c->gid, c->gid) < 0 ||
                       syscall(SYS_setresuid, c->uid, c->uid, c->uid) < 0))
        goto fail;

    if (c->cwd && chdir(c->cwd) < 0) {
        c->in_chdir = 1;
        goto fail;
    }
    /* Last, so a signal that came meanwhile meets default dispositions only. */
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none);
    execve(c->path, c->argv, c->envp);
fail:
    c->err = errno ? errno : EINVAL;  /* errno is the suspended caller's: shared TLS, harmless */
    child_exit();
}

/* clone3, with the child calling fn(arg) on its own stack and never coming back here.
 * Returns the pid, or -errno. */
static long clone3_call(struct clone_args_ *args, size_t size, void (*fn)(void *), void *arg) {
#if defined(__x86_64__)
    long ret = SYS_clone3;
    register void *r8 __asm__("r8") = arg;  /* survives the syscall into the child */
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        /* child: outermost frame, psABI stack alignment, fn(arg), never return */
        "xor %%ebp, %%ebp\n\t"
        "and $-16, %%rsp\n\t"
        "mov %%r8, %%rdi\n\t"
        "call *%%rdx\n\t"
        "mov $127, %%edi\n\t"
        "mov %[exit_group], %%eax\n\t"
        "syscall\n\t"
        "hlt\n"
        "1:"
        : "+a"(ret)
        : "D"(args), "S"(size), "d"(fn), "r"(r8),
          [exit_group] "i"(SYS_exit_group)
        : "rcx", "r11", "memory", "cc");
    return ret;
#else /* aarch64 */
    register long x0 __asm__("x0") = (long)args;
    register long x1 __asm__("x1") = (long)size;
    register void (*x2)(void *) __asm__("x2") = fn;  /* all but x0 survive the svc */
    register void *x3 __asm__("x3") = arg;
    register long x8 __asm__("x8") = SYS_clone3;
    __asm__ volatile(
        "svc #0\n\t"
        "cbnz x0, 1f\n\t"
        "mov x29, xzr\n\t"
        "mov x30, xzr\n\t"
        "mov x0, x3\n\t"
        "blr x2\n\t"
        "mov x0, #127\n\t"
        "mov x8, %[exit_group]\n\t"
        "svc #0\n\t"
        "brk #0\n"
        "1:"
        : "+r"(x0)
        : "r"(x1), "r"(x2), "r"(x3), "r"(x8), [exit_group] "i"(SYS_exit_group)
        : "memory", "cc");
    return x0;
#endif
}

/* End (kill_it) and reap a child this module started, and close its pidfd. */
void end_child(long pid, int pidfd, int kill_it) {
    int status;
    if (kill_it)
        kill((pid_t)pid, SIGKILL);
    while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(pidfd);
}

/* fd moved to the lowest free number >= at (close-on-exec), or left where it is if it cannot. */
static int park(int fd, int at) {
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, at);
    if (moved < 0)
        return fd;
    close(fd);
    return moved;
}

/* The started process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or
 * -1 when it cannot be read. */
static long long start_time(long pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');  /* the name may hold spaces and parentheses: the last ')' */
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    for (int field = 0; field < 19; field++) {  /* from the state (field 3) to starttime (22) */
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    char *end;
    long long ticks = strtoll(p, &end, 10);
    return end == p ? -1 : ticks;
}

#define MAX_DESCENDANTS "256" /* as overseer/process/cgroups.py MAX_DESCENDANTS */

/* The cgroup dirfd given to uid/gid as systemd delegates one: the directory (so the job can make
 * cgroups below it) and the files a delegatee writes. Its own cgroup.procs lets it move its
 * processes between its cgroups, never out: a move needs write access to the common ancestor's
 * cgroup.procs too, and above this cgroup everything stays root's. A chown that fails (never, as
 * root on cgroupfs) leaves the job unable to make cgroups of its own, nothing more. */
static void delegate(int dirfd, unsigned uid, unsigned gid) {
    static const char *const files[] = {"cgroup.procs", "cgroup.subtree_control", "cgroup.threads"};
    /* Bound what the job can make below it (cgroups.MAX_DESCENDANTS; the file stays root's). */
    int fd = openat(dirfd, "cgroup.max.descendants", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, MAX_DESCENDANTS, sizeof MAX_DESCENDANTS - 1) < 0) {
            /* an older kernel without the file's limit: the job's tree is unbounded, no more */
        }
        close(fd);
    }
    if (fchown(dirfd, uid, gid) < 0)
        return;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        fchownat(dirfd, files[i], uid, gid, 0);
}

/* The common part of spawn() and spawn_piped(): c.fds are set; path_arg and cwd_arg name the
 * program and directory. Returns the pid (>= 0, *pidfd set) or -1 with a Python error set; then
 * nothing of it is left (no process, no fd, no cgroup made for it). */
long start(PyObject *path_arg, PyObject *argv_o, PyObject *envp_o, PyObject *cwd_arg,
           struct child *c, int cgroup_fd, int *pidfd, struct around *x) {
    PyObject *path_o = NULL, *cwd_o = NULL, *argv_keep = NULL, *envp_keep = NULL;
    char **argv = NULL, **envp = NULL;
    long pid = -1;

    if (!PyUnicode_FSConverter(path_arg, &path_o) ||
        (cwd_arg != Py_None && !PyUnicode_FSConverter(cwd_arg, &cwd_o)))
        goto done;
    if (!(argv = c_array(argv_o, "argv must be a sequence", &argv_keep)) ||
        !(envp = c_array(envp_o, "envp must be a sequence", &envp_keep)))
        goto done;
    if (!argv[0]) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        goto done;
    }
    c->path = PyBytes_AS_STRING(path_o);
    c->cwd = cwd_o ? PyBytes_AS_STRING(cwd_o) : NULL;
    c->argv = argv;
    c->envp = envp;

    /* The child's stack: this frame, idle until the child has exec'd or exited (CLONE_VFORK). */
    _Alignas(16) char stack[CHILD_STACK];
    struct clone_args_ ca;
    long got;
    int watched = 0;
    Py_BEGIN_ALLOW_THREADS
    int own_cgroup_fd = -1;
    if (x && x->cgroup) {
        if (mkdir(x->cgroup, 0755) < 0) {
            x->cgroup_err = errno;
        } else if ((own_cgroup_fd = open(x->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
            x->cgroup_err = errno;
            rmdir(x->cgroup);
        } else {
            x->made = 1;
            if (c->set_ids)
                delegate(own_cgroup_fd, c->uid, c->gid);
        }
        cgroup_fd = own_cgroup_fd;
    }
    /* A child that changes its ids marks the memory it shares with the server not dumpable
     * (commit_creds); the server's own flag is put back once the child has exec'd. */
    int dumpable = c->set_ids ? prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) : -1;
    for (;;) {
        memset(&ca, 0, sizeof ca);
        ca.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD_;
        ca.pidfd = (uint64_t)(uintptr_t)pidfd;
        ca.exit_signal = SIGCHLD;
        ca.stack = (uint64_t)(uintptr_t)stack;
        ca.stack_size = sizeof stack;
        size_t size = CLONE_ARGS_SIZE_VER0;  /* lets a 5.3 kernel take a spawn without cgroup */
        if (cgroup_fd >= 0) {
            ca.flags |= CLONE_INTO_CGROUP_;
            ca.cgroup = (uint64_t)cgroup_fd;
            size = CLONE_ARGS_SIZE_VER2;
        }
        c->unshare_below = 0;
        if (x && share_files) {
            int top = c->fds[0] > c->fds[1] ? c->fds[0] : c->fds[1];
            top = top > c->fds[2] ? top : c->fds[2];
            c->unshare_below = (unsigned)(top < 3 ? 3 : top + 1);
            ca.flags |= CLONE_FILES;
        }
        /* No signal handler may run in the child before it has reset them; the child unblocks. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        got = clone3_call(&ca, size, child_main, c);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (got < 0 || !c->no_unshare)
            break;
        /* A kernel without CLOSE_RANGE_UNSHARE: the child exited at once; again, with a copy. */
        end_child(got, *pidfd, 0);
        share_files = 0;
        c->no_unshare = 0;
    }
    if (dumpable > 0 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dumpable)
        prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
    if (own_cgroup_fd >= 0)
        close(own_cgroup_fd);
    if (got >= 0 && !c->err && x) {
        x->start_time = start_time(got);
        if (x->park_at > 0) {  /* leave the low numbers free for the next start's pipes */
            x->watch[0] = park(x->watch[0], x->park_at);
            x->watch[1] = park(x->watch[1], x->park_at);
            *pidfd = park(*pidfd, x->park_at);
        }
        if (x->epfd >= 0) {
            /* The pipes first, the pidfd last: the monitor reaps only once both pipes are in. */
            int order[3] = {x->watch[0], x->watch[1], *pidfd};
            for (; watched < 3; watched++) {
                struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = order[watched]}};
                if (epoll_ctl(x->epfd, EPOLL_CTL_ADD, order[watched], &ev) < 0) {
                    x->epoll_err = errno;
                    break;
                }
            }
        }
    }
    Py_END_ALLOW_THREADS

    if (got < 0) {
        int e = (int)-got;
        /* No clone3, flags this kernel lacks, or a seccomp filter: the caller stops trying. */
        PyObject *type = (e == ENOSYS || e == EINVAL || e == EPERM || e == E2BIG) ? Unsupported
                                                                                  : PyExc_OSError;
        PyObject *exc = PyObject_CallFunction(type, "is", e, strerror(e));
        if (exc) {
            PyErr_SetObject(type, exc);
            Py_DECREF(exc);
        }
        goto done;
    }
    if (c->err || (x && x->epoll_err)) {
        /* It failed before exec and has exited, or (short of ENOMEM, never) it cannot be
         * watched: end and reap it, then raise what Popen would. Closing the pidfd (and the
         * pipes, by the caller) takes them out of epoll. */
        end_child(got, *pidfd, !c->err);
        if (c->err) {
            errno = c->err;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, c->in_chdir ? cwd_arg : path_arg);
        } else {
            errno = x->epoll_err;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        goto done;
    }
    pid = got;
done:
    if (pid < 0 && x && x->made)
        rmdir(x->cgroup);  /* empty: its only process, if any, is reaped */
    PyMem_Free(argv);
    PyMem_Free(envp);
    Py_XDECREF(argv_keep);
    Py_XDECREF(envp_keep);
    Py_XDECREF(path_o);
    Py_XDECREF(cwd_o);
    return pid;
}
#endif /* NATIVE */
