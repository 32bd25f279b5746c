/* What the two files of overseer.process._spawn share. Private: neither installed nor exported.
 *
 * _spawn.c is the module: its Python functions, their argument parsing, the module definition.
 * _spawn_clone.c starts the process: clone3, the child's side, and start(), the common part of
 * spawn() and spawn_piped(). */
#ifndef OVERSEER_SPAWN_H
#define OVERSEER_SPAWN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#define NATIVE 1
#endif

/* Bound inside the .so: a symbol of the same name elsewhere in the process never takes their
 * place (default visibility would let the executable's or a global library's win). */
#pragma GCC visibility push(hidden)

extern PyObject *Unsupported;

#ifdef NATIVE
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
    int set_ids;             /* run as uid/gid with these supplementary groups (run_as) */
    unsigned uid, gid;
    size_t ngroups;
    const unsigned *groups;  /* gid_t */
};

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
    /* With c.set_ids, the cgroup made here is delegated to c.uid/c.gid (its directory and the
     * files a delegatee writes: cgroup.procs, cgroup.subtree_control, cgroup.threads, as systemd
     * delegates), so the job can make cgroups below its own but cannot leave it. */
};

/* A list of str/bytes as a NULL-terminated char* array; the bytes go into *keep. */
char **c_array(PyObject *seq, const char *what, PyObject **keep);

/* End (kill_it) and reap a child this module started, and close its pidfd. */
void end_child(long pid, int pidfd, int kill_it);

/* The common part of spawn() and spawn_piped(): c.fds are set; path_arg and cwd_arg name the
 * program and directory. Returns the pid (>= 0, *pidfd set) or -1 with a Python error set; then
 * nothing of it is left (no process, no fd, no cgroup made for it). */
long start(PyObject *path_arg, PyObject *argv_o, PyObject *envp_o, PyObject *cwd_arg,
           struct child *c, int cgroup_fd, int *pidfd, struct around *x);
#endif /* NATIVE */

#pragma GCC visibility pop

#endif /* OVERSEER_SPAWN_H */
