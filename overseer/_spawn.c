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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *Unsupported;

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#define NATIVE 1
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
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

/* Everything the child reads, made before the clone; and where it reports a failure. */
struct child {
    const char *path, *cwd;
    char *const *argv, *const *envp;
    int fds[3];
    int err;       /* errno of the failed step, 0 if it exec'd */
    int in_chdir;  /* the failed step was chdir(cwd) */
    unsigned unshare_below;  /* > 0: born sharing the server's fd table (CLONE_FILES); its first
                              * act is to take a copy of the fds below this number only */
    int no_unshare;          /* this kernel cannot (before 5.9): it exited touching nothing */
};

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

/* A list of str/bytes as a NULL-terminated char* array; the bytes go into *keep. */
static char **c_array(PyObject *seq, const char *what, PyObject **keep) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    *keep = PyList_New(n);
    if (!out || !*keep)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b;
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(fast, i), &b))
            goto error;
        PyList_SET_ITEM(*keep, i, b);
        out[i] = PyBytes_AS_STRING(b);
    }
    Py_DECREF(fast);
    return out;
error:
    Py_DECREF(fast);
    Py_CLEAR(*keep);
    PyMem_Free(out);
    if (!PyErr_Occurred())
        PyErr_NoMemory();
    return NULL;
}

/* What spawn_piped() does around the clone, with the GIL released for the clone anyway. */
struct around {
    const char *cgroup;    /* make this cgroup and start the job in it (NULL: none) */
    int cgroup_err;        /* errno when it could not be made or opened: the job runs without it */
    int made;              /* it was made here (and is removed here if the start fails) */
    int epfd;              /* add the pipes (watch[0..1]) and then the pidfd to this set (-1: no) */
    int watch[2];
    int epoll_err;
    long long start_time;  /* of the started process; -1 when unreadable */
    int park_at;           /* > 0: move the pipes and pidfd to the lowest free fds from here */
};

/* End (kill_it) and reap a child this module started, and close its pidfd. */
static void end_child(long pid, int pidfd, int kill_it) {
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

static long long start_time(long pid);

/* The common part of spawn() and spawn_piped(): c.fds are set; path_arg and cwd_arg name the
 * program and directory. Returns the pid (>= 0, *pidfd set) or -1 with a Python error set; then
 * nothing of it is left (no process, no fd, no cgroup made for it). */
static long start(PyObject *path_arg, PyObject *argv_o, PyObject *envp_o, PyObject *cwd_arg,
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
        }
        cgroup_fd = own_cgroup_fd;
    }
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

static PyObject *spawn(PyObject *self, PyObject *args) {
    PyObject *path_arg, *cwd_arg, *argv_o, *envp_o;
    struct child c;
    int cgroup_fd, pidfd = -1;

    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "OOOOiiii:spawn", &path_arg, &argv_o, &envp_o, &cwd_arg,
                          &c.fds[0], &c.fds[1], &c.fds[2], &cgroup_fd))
        return NULL;
    long pid = start(path_arg, argv_o, envp_o, cwd_arg, &c, cgroup_fd, &pidfd, NULL);
    return pid < 0 ? NULL : Py_BuildValue("(li)", pid, pidfd);
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

/* spawn() with the job's stdout and stderr made here as pipes, their read ends non-blocking; its
 * cgroup made here (make_cgroup) or given by path; then, when epfd >= 0, its pipes and pidfd
 * added to that epoll set (EPOLLIN, the fd as data), and its start time read. One call and one
 * release of the GIL, where the same steps from Python are twenty system calls that each hand
 * the GIL over to whichever thread waits for it. */
static PyObject *spawn_piped(PyObject *self, PyObject *args) {
    PyObject *path_arg, *cwd_arg, *argv_o, *envp_o, *cgroup_arg, *cgroup_o = NULL, *result = NULL;
    struct child c;
    struct around x;
    int out[2] = {-1, -1}, err[2] = {-1, -1}, cgroup_fd = -1, pidfd = -1, make_cgroup = 0;

    memset(&c, 0, sizeof c);
    memset(&x, 0, sizeof x);
    x.epfd = -1;
    x.start_time = -1;
    if (!PyArg_ParseTuple(args, "OOOOiO|ipi:spawn_piped", &path_arg, &argv_o, &envp_o, &cwd_arg,
                          &c.fds[0], &cgroup_arg, &x.epfd, &make_cgroup, &x.park_at))
        return NULL;
    if (cgroup_arg != Py_None && !PyUnicode_FSConverter(cgroup_arg, &cgroup_o))
        return NULL;
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        fcntl(out[0], F_SETFL, O_NONBLOCK) < 0 || fcntl(err[0], F_SETFL, O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    if (cgroup_o && make_cgroup) {
        x.cgroup = PyBytes_AS_STRING(cgroup_o);
    } else if (cgroup_o &&
        (cgroup_fd = open(PyBytes_AS_STRING(cgroup_o), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, cgroup_arg);
        goto done;
    }
    c.fds[1] = out[1];
    c.fds[2] = err[1];
    x.watch[0] = out[0];
    x.watch[1] = err[0];
    long pid = start(path_arg, argv_o, envp_o, cwd_arg, &c, cgroup_fd, &pidfd, &x);
    out[0] = x.watch[0];  /* where they are now (parked) */
    err[0] = x.watch[1];
    if (pid >= 0) {
        PyObject *ticks = x.start_time < 0 ? (Py_INCREF(Py_None), Py_None)
                                           : PyLong_FromLongLong(x.start_time);
        if (ticks)
            result = Py_BuildValue("(liiiNi)", pid, pidfd, out[0], err[0], ticks, x.cgroup_err);
        if (result) {
            out[0] = err[0] = -1;  /* the caller's now */
        } else {
            /* Out of memory for the tuple: the caller cannot own it, so end it here. */
            end_child(pid, pidfd, 1);
            if (x.made)
                rmdir(x.cgroup);
        }
    }
done:
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    if (cgroup_fd >= 0)
        close(cgroup_fd);
    Py_XDECREF(cgroup_o);
    return result;
}

/* unwatch(epfd, fd): take fd out of the epoll set and close it, in one release of the GIL. */
static PyObject *unwatch(PyObject *self, PyObject *args) {
    int epfd, fd, rc;
    if (!PyArg_ParseTuple(args, "ii:unwatch", &epfd, &fd))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);  /* ENOENT: never watched; close is what counts */
    rc = close(fd);
    Py_END_ALLOW_THREADS
    if (rc < 0 && errno != EINTR)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* reap(pid, pidfd, epfd, cgroup_dir) -> None while pid has not ended, else (wait status,
 * cgroup removed). Once it ended: the pidfd is out of the epoll set and closed, the cgroup (if
 * any) removed when empty, and, when it was, the process group killed (nothing can be left in
 * it but a process that left the cgroup). All in one release of the GIL. */
static PyObject *reap(PyObject *self, PyObject *args) {
    long pid;
    int pidfd, epfd, status = 0, removed = 0;
    PyObject *cgroup_arg, *cgroup_o = NULL;
    pid_t got;
    if (!PyArg_ParseTuple(args, "liiO:reap", &pid, &pidfd, &epfd, &cgroup_arg))
        return NULL;
    if (cgroup_arg != Py_None && !PyUnicode_FSConverter(cgroup_arg, &cgroup_o))
        return NULL;
    const char *cgroup = cgroup_o ? PyBytes_AS_STRING(cgroup_o) : NULL;
    Py_BEGIN_ALLOW_THREADS
    do {
        got = waitpid((pid_t)pid, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {  /* ECHILD: reaped already; it has ended */
        got = (pid_t)pid;
        status = 0;
    }
    if (got != 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, pidfd, NULL);
        close(pidfd);
        if (cgroup) {
            removed = rmdir(cgroup) == 0 || errno == ENOENT;
            if (removed)
                kill(-(pid_t)pid, SIGKILL);
        }
    }
    Py_END_ALLOW_THREADS
    Py_XDECREF(cgroup_o);
    if (got == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(iO)", status, cgroup ? (removed ? Py_True : Py_False) : Py_None);
}

/* mkdirs(paths, mode) -> (made, errno): make the directories in order, in one release of the
 * GIL, stopping at the first that fails; made counts those made, errno is that failure's (0). */
static PyObject *mkdirs(PyObject *self, PyObject *args) {
    PyObject *paths_o, *keep = NULL;
    int mode, made = 0, error = 0;
    if (!PyArg_ParseTuple(args, "Oi:mkdirs", &paths_o, &mode))
        return NULL;
    char **paths = c_array(paths_o, "paths must be a sequence", &keep);
    if (!paths)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (; paths[made]; made++) {
        if (mkdir(paths[made], (mode_t)mode) < 0) {
            error = errno;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(paths);
    Py_XDECREF(keep);
    return Py_BuildValue("(ii)", made, error);
}
#endif /* NATIVE */

static PyObject *available(PyObject *self, PyObject *unused) {
#ifdef NATIVE
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
#ifdef NATIVE
    {"spawn", spawn, METH_VARARGS,
     "spawn(path, argv, envp, cwd, stdin_fd, stdout_fd, stderr_fd, cgroup_fd) -> (pid, pidfd)\n\n"
     "Start path in a new session with the three fds as 0-1-2, nothing else open, and, when\n"
     "cgroup_fd >= 0, inside that cgroup from its first instant."},
    {"spawn_piped", spawn_piped, METH_VARARGS,
     "spawn_piped(path, argv, envp, cwd, stdin_fd, cgroup_dir, epfd=-1, make_cgroup=False,\n"
     "            park_at=0) -> (pid, pidfd, stdout_r, stderr_r, start_time, cgroup_errno)\n\n"
     "spawn() with stdout and stderr as new pipes (their read ends returned, non-blocking), the\n"
     "cgroup given by its directory (None: none; made here with make_cgroup, and when that fails\n"
     "the job starts without it and cgroup_errno says why), the pidfd and read ends moved to the\n"
     "lowest free numbers >= park_at (when > 0) and added to the epoll set epfd (when >= 0), and\n"
     "the process's start time in clock ticks (None if unreadable). The child copies only the\n"
     "server's fds below its three sources. When it raises, nothing of the start is left."},
    {"unwatch", unwatch, METH_VARARGS,
     "unwatch(epfd, fd): take fd out of the epoll set epfd and close it."},
    {"reap", reap, METH_VARARGS,
     "reap(pid, pidfd, epfd, cgroup_dir) -> None while pid runs, else (wait_status, removed)\n\n"
     "Reap pid (WNOHANG); once it ended, unwatch and close its pidfd, remove its cgroup when\n"
     "empty (removed: True, False while processes are left, None without a cgroup) and then\n"
     "kill its process group."},
    {"mkdirs", mkdirs, METH_VARARGS,
     "mkdirs(paths, mode) -> (made, errno): mkdir each in order until one fails."},
#endif
    {"available", available, METH_NOARGS, "True where this build has the native spawn."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "overseer._spawn",
    .m_doc = "Start job processes straight into their cgroup.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__spawn(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Unsupported = PyErr_NewExceptionWithDoc(
        "overseer._spawn.Unsupported",
        "clone3 with these flags is not available here (old kernel, seccomp): use subprocess.",
        PyExc_OSError, NULL);
    if (!Unsupported || PyModule_AddObject(m, "Unsupported", Unsupported) < 0) {
        Py_CLEAR(Unsupported);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(Unsupported);  /* the module's reference; ours stays in the static */
    return m;
}
