/* overseer.process._spawn: start job processes straight into their cgroup (spawn, spawn_piped), and
 * the calls around a running job that each take one release of the GIL (unwatch, reap, mkdirs, and
 * identify: who calls on the event socket), and a peek at what an HTTP connection has received
 * that takes none (peek).
 *
 * The start itself, clone3 and the child's side, is in _spawn_clone.c; _spawn.h holds what the
 * two files share.
 */
#include "_spawn.h"

PyObject *Unsupported;

#ifdef NATIVE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A list of str/bytes as a NULL-terminated char* array; the bytes go into *keep. */
char **c_array(PyObject *seq, const char *what, PyObject **keep) {
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

/* A sequence of gids (None: none) as an array of *n of them (never NULL: one spare element). */
static unsigned *gid_array(PyObject *seq, size_t *n) {
    PyObject *fast = seq == Py_None ? PyTuple_New(0) : PySequence_Fast(seq, "groups must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    unsigned *out = PyMem_Calloc((size_t)len + 1, sizeof(unsigned));
    if (!out) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        long long g = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (g < 0 || g >= 0xffffffffLL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a group is not a valid gid");
            Py_DECREF(fast);
            PyMem_Free(out);
            return NULL;
        }
        out[i] = (unsigned)g;
    }
    Py_DECREF(fast);
    *n = (size_t)len;
    return out;
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
    long long uid = -1, gid = -1;
    PyObject *groups_o = Py_None;
    unsigned *groups = NULL;
    if (!PyArg_ParseTuple(args, "OOOOiO|ipiLLO:spawn_piped", &path_arg, &argv_o, &envp_o, &cwd_arg,
                          &c.fds[0], &cgroup_arg, &x.epfd, &make_cgroup, &x.park_at, &uid, &gid,
                          &groups_o))
        return NULL;
    if (uid >= 0 || gid >= 0) {
        if (uid < 0 || gid < 0 || uid >= 0xffffffffLL || gid >= 0xffffffffLL) {
            PyErr_SetString(PyExc_ValueError, "uid and gid must be given together, each a valid id");
            return NULL;
        }
        if (!(groups = gid_array(groups_o, &c.ngroups)))
            return NULL;
        c.set_ids = 1;
        c.uid = (unsigned)uid;
        c.gid = (unsigned)gid;
        c.groups = groups;
    }
    if (cgroup_arg != Py_None && !PyUnicode_FSConverter(cgroup_arg, &cgroup_o)) {
        PyMem_Free(groups);
        return NULL;
    }
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
    PyMem_Free(groups);
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

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* Up to size-1 bytes of the file at path, NUL-terminated; the length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return n;
}

static int pidfd_peer_supported = 1;  /* 0 once a kernel refused SO_PEERPIDFD (before 6.5) */

/* identify(fd, with_cgroup) -> (pid, uid, gid, cgroup, session, gone): who is at the other end of
 * the accepted unix connection fd, in four system calls that never block, made holding the GIL
 * (as peek: releasing it hands it to whichever thread waits, and getting it back cost more than
 * the calls, 35 us a call in a busy server against 21), and with the cgroup three more, which
 * may wait for the kernel's cgroup lock and so are made without it. session: its session id (getsid: any process's, on Linux; -1 when it is gone);
 * cgroup: with with_cgroup, its cgroup v2 path as /proc/PID/cgroup shows it (bytes; None
 * otherwise or when unreadable); gone: the caller had ended by the time those were read (then
 * they may be another process's), as a pidfd of it (SO_PEERPIDFD) proves; False without one. */
static PyObject *identify(PyObject *self, PyObject *args) {
    int fd, with_cgroup;
    if (!PyArg_ParseTuple(args, "ip:identify", &fd, &with_cgroup))
        return NULL;
    struct ucred cred;
    socklen_t len = sizeof cred;
    char path[64], buf[4096];
    const char *cgroup = NULL;
    size_t cgroup_len = 0;
    long long session = -1;
    int gone = 0, err = 0, pidfd = -1;
    PyThreadState *released = with_cgroup ? PyEval_SaveThread() : NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        err = errno;
    } else {
        if (pidfd_peer_supported) {
            socklen_t plen = sizeof pidfd;
            if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &plen) < 0) {
                pidfd = -1;
                if (errno == ENOPROTOOPT)
                    pidfd_peer_supported = 0;
            }
        }
        session = getsid(cred.pid);
        if (with_cgroup) {
            snprintf(path, sizeof path, "/proc/%d/cgroup", (int)cred.pid);
            if (read_small(path, buf, sizeof buf) >= 0) {
                /* "0::PATH\n": the unified hierarchy's line, the first or after v1's */
                char *line = strncmp(buf, "0::", 3) == 0 ? buf : strstr(buf, "\n0::");
                if (line) {
                    line += line == buf ? 3 : 4;
                    char *end = strchr(line, '\n');
                    cgroup = line;
                    cgroup_len = end ? (size_t)(end - line) : strlen(line);
                }
            }
        }
        if (pidfd >= 0) {
            gone = syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 && errno == ESRCH;
            close(pidfd);
        }
    }
    if (released)
        PyEval_RestoreThread(released);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *cg = cgroup ? PyBytes_FromStringAndSize(cgroup, (Py_ssize_t)cgroup_len)
                          : (Py_INCREF(Py_None), Py_None);
    if (!cg)
        return NULL;
    return Py_BuildValue("(iIINLO)", (int)cred.pid, (unsigned)cred.uid, (unsigned)cred.gid, cg,
                         session, gone ? Py_True : Py_False);
}

/* peek(fd, n): up to n bytes the socket fd has received, left in it (recv with MSG_PEEK and
 * MSG_DONTWAIT; it never blocks, so the GIL is kept); b"" at its end, None when nothing is there. */
static PyObject *peek(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "in:peek", &fd, &n))
        return NULL;
    if (n < 0)
        n = 0;
    PyObject *buf = PyBytes_FromStringAndSize(NULL, n);
    if (!buf)
        return NULL;
    ssize_t got = recv(fd, PyBytes_AS_STRING(buf), (size_t)n, MSG_PEEK | MSG_DONTWAIT);
    if (got < 0) {
        int e = errno;
        Py_DECREF(buf);
        if (e == EAGAIN || e == EWOULDBLOCK)
            Py_RETURN_NONE;
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (got != n && _PyBytes_Resize(&buf, got) < 0)
        return NULL;
    return buf;
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
     "            park_at=0, uid=-1, gid=-1, groups=None)\n"
     "    -> (pid, pidfd, stdout_r, stderr_r, start_time, cgroup_errno)\n\n"
     "spawn() with stdout and stderr as new pipes (their read ends returned, non-blocking), the\n"
     "cgroup given by its directory (None: none; made here with make_cgroup, and when that fails\n"
     "the job starts without it and cgroup_errno says why), the pidfd and read ends moved to the\n"
     "lowest free numbers >= park_at (when > 0) and added to the epoll set epfd (when >= 0), and\n"
     "the process's start time in clock ticks (None if unreadable). The child copies only the\n"
     "server's fds below its three sources. With uid and gid (>= 0) the child takes exactly the\n"
     "supplementary groups, gid and uid given before it changes directory and execs, and the\n"
     "cgroup made here is delegated to that uid (chown of it, its cgroup.procs,\n"
     "cgroup.subtree_control and cgroup.threads). When it raises, nothing of the start is left."},
    {"unwatch", unwatch, METH_VARARGS,
     "unwatch(epfd, fd): take fd out of the epoll set epfd and close it."},
    {"reap", reap, METH_VARARGS,
     "reap(pid, pidfd, epfd, cgroup_dir) -> None while pid runs, else (wait_status, removed)\n\n"
     "Reap pid (WNOHANG); once it ended, unwatch and close its pidfd, remove its cgroup when\n"
     "empty (removed: True, False while processes are left, None without a cgroup) and then\n"
     "kill its process group."},
    {"mkdirs", mkdirs, METH_VARARGS,
     "mkdirs(paths, mode) -> (made, errno): mkdir each in order until one fails."},
    {"identify", identify, METH_VARARGS,
     "identify(fd, with_cgroup) -> (pid, uid, gid, cgroup, session, gone)\n\n"
     "The peer of the accepted unix connection fd (SO_PEERCRED): its session id (getsid; -1 when\n"
     "gone), with with_cgroup its cgroup v2 path as /proc/PID/cgroup shows it (bytes; else None),\n"
     "and whether it had ended before they were read (a pidfd of it, SO_PEERPIDFD, says; False\n"
     "without one)."},
    {"peek", peek, METH_VARARGS,
     "peek(fd, n) -> bytes or None: up to n bytes the socket has received, left in it; b\"\" at\n"
     "its end, None when nothing is there. Never blocks."},
#endif
    {"available", available, METH_NOARGS, "True where this build has the native spawn."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "overseer.process._spawn",
    .m_doc = "Start job processes straight into their cgroup.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__spawn(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Unsupported = PyErr_NewExceptionWithDoc(
        "overseer.process._spawn.Unsupported",
        "clone3 with these flags is not available here (old kernel, seccomp): use subprocess.",
        PyExc_OSError, NULL);
    if (!Unsupported || PyModule_AddObject(m, "Unsupported", Unsupported) < 0) {
        Py_CLEAR(Unsupported);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(Unsupported);  /* the module's reference; ours stays in the global */
    return m;
}
