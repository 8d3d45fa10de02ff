/* The OS kit (fdpass.os): process ids and signals, the environment, locks,
 * descriptor limits and counts, the monotonic clock, pipes and dup2. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "base.h"

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

/* fdpass.os.kill(pid, [signal="TERM"]) for processes this one did not start. */
static int l_kill(lua_State *L)
{
    lua_Integer pid = check_integer(L, 1);
    arg_check(L, pid > 0 && pid <= INT32_MAX, 1, "pid must be > 0");
    if (kill((pid_t)pid, check_signal(L, 2, 2, SIGTERM)) < 0)
        return push_error(L, "kill", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* fdpass.os.signals({"HUP", "USR2"}) -> fd object, newly: those signals
 * are blocked and arrive on this descriptor instead (signalfd), for a poll
 * loop; `newly` lists the ones this call blocked (not blocked before), so
 * that a caller giving up can put the mask back with unblock(newly).
 * Closing the descriptor leaves the mask alone. When the descriptor cannot
 * be made, the mask is as it was. */
static int l_signals(lua_State *L)
{
    check_table(L, 1);
    sigset_t set, old;
    sigemptyset(&set);
    for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, 1); i <= n; i++) {
        lua_rawgeti(L, 1, (int)i);
        int sig = check_signal(L, -1, 1, 0);
        if (sig == SIGKILL || sig == SIGSTOP || sig == 0) {
            const char *name = signal_name(sig);
            return arg_error(L, 1, lua_pushfstring(L, "SIG%s cannot be caught", name ? name : "0"));
        }
        sigaddset(&set, sig);
        lua_pop(L, 1);
    }
    fdp_fd *f = new_fd(L);
    if (sigprocmask(SIG_BLOCK, &set, &old) < 0)
        return push_error(L, "signals", -errno, NULL);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        return push_error(L, "signals", -e, NULL);
    }
    set_fd(L, -1, f, fd);
    lua_newtable(L);
    lua_Integer k = 0;
    for (int sig = 1; sig < NSIG; sig++) {
        const char *name;
        if (sigismember(&set, sig) == 1 && sigismember(&old, sig) == 0 && (name = signal_name(sig))) {
            lua_pushstring(L, name);
            lua_rawseti(L, -2, (int)++k);
        }
    }
    return 2;
}

/* fdpass.os.unblock({"HUP"}) -> true: unblocks those signals (what
 * signals() blocked, given back). */
static int l_unblock(lua_State *L)
{
    check_table(L, 1);
    sigset_t set;
    sigemptyset(&set);
    for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, 1); i <= n; i++) {
        lua_rawgeti(L, 1, (int)i);
        int sig = check_signal(L, -1, 1, 0);
        if (sig > 0)
            sigaddset(&set, sig);
        lua_pop(L, 1);
    }
    if (sigprocmask(SIG_UNBLOCK, &set, NULL) < 0)
        return push_error(L, "unblock", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* fdpass.os.readsignal(fd) -> "HUP" | nil, msg, "EAGAIN" */
static int l_readsignal(lua_State *L)
{
    int fd = check_fd(L, 1);
    struct signalfd_siginfo si;
    ssize_t n;
    do
        n = read(fd, &si, sizeof si);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return push_error(L, "readsignal", -errno, NULL);
    if (n != sizeof si)
        return push_error(L, "readsignal", -EIO, "short read from signalfd");
    const char *name = signal_name((int)si.ssi_signo);
    if (name)
        lua_pushstring(L, name);
    else
        lua_pushinteger(L, (lua_Integer)si.ssi_signo);
    return 1;
}

/* fdpass.os.setenv(name, value) / setenv(name, nil) unsets. */
static int l_setenv(lua_State *L)
{
    size_t nlen;
    const char *name = check_lstring(L, 1, &nlen);
    /* "A\0B" would set A: another variable than the one named */
    arg_check(L, name[0] && !strchr(name, '=') && strlen(name) == nlen, 1,
              "a name, without '=' or a NUL byte");
    int r;
    if (lua_isnoneornil(L, 2)) {
        r = unsetenv(name);
    } else {
        size_t len;
        const char *value = check_lstring(L, 2, &len);
        arg_check(L, strlen(value) == len, 2, "value contains a NUL byte");
        r = setenv(name, value, 1);
    }
    if (r < 0)
        return push_error(L, "setenv", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* fdpass.os.flock(path) -> fd object holding an exclusive lock on path
 * (created 0600 if missing) | nil, msg, "EWOULDBLOCK" when another holds
 * it. The kernel drops the lock when the holder closes it or dies. */
static int l_flock(lua_State *L)
{
    const char *path = check_string(L, 1);
    fdp_fd *f = new_fd(L);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "flock %s", path), -errno, NULL);
    int r;
    do
        r = flock(fd, LOCK_EX | LOCK_NB);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        close(fd);
        return push_error(L, lua_pushfstring(L, "flock %s", path), -e,
                          e == EWOULDBLOCK ? "held by another process" : NULL);
    }
    set_fd(L, -1, f, fd);
    return 1;
}

/* fdpass.os.nofile([soft]) -> soft, hard: RLIMIT_NOFILE, read or set. */
static int l_nofile(lua_State *L)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return push_error(L, "nofile", -errno, NULL);
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer soft = check_integer(L, 1);
        arg_check(L, soft >= 0, 1, "limit must be >= 0");
        rl.rlim_cur = (rlim_t)soft;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return push_error(L, "nofile", -errno, NULL);
    }
    lua_pushinteger(L, (lua_Integer)rl.rlim_cur);
    lua_pushinteger(L, (lua_Integer)rl.rlim_max);
    return 2;
}

/* Descriptors open in this process: what leak checks compare. */
static int l_fdcount(lua_State *L)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return push_error(L, "fdcount", -errno, NULL);
    lua_Integer n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    lua_pushinteger(L, n - 1); /* the directory's own descriptor */
    return 1;
}

/* fdpass.os.monotonic() -> seconds (a float) on CLOCK_MONOTONIC. */
static int l_monotonic(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)now_seconds());
    return 1;
}

/* fdpass.os.pipe() -> r, w: fd objects, close-on-exec, blocking. */
static int l_pipe(lua_State *L)
{
    fdp_fd *r = new_fd(L), *w = new_fd(L);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return push_error(L, "pipe", -errno, NULL);
    set_fd(L, -2, r, p[0]);
    set_fd(L, -1, w, p[1]);
    return 2;
}

/* fdpass.os.pidfd_open(pid) -> fd object that polls readable once the
 * process has exited (a zombie counts); nil, msg, "ENOSYS" before Linux
 * 5.3, "ESRCH" when there is no such process. */
static int l_pidfd_open(lua_State *L)
{
    lua_Integer pid = check_integer(L, 1);
    arg_check(L, pid > 0 && pid <= INT32_MAX, 1, "pid must be a positive integer");
#ifdef SYS_pidfd_open
    fdp_fd *f = new_fd(L);
    int fd = (int)syscall(SYS_pidfd_open, (int)pid, 0); /* always close-on-exec */
    if (fd < 0)
        return push_error(L, "pidfd_open", -errno, NULL);
    set_fd(L, -1, f, fd);
    return 1;
#else
    return push_error(L, "pidfd_open", -ENOSYS, NULL);
#endif
}

/* fdpass.os.dup2(x, n): makes descriptor n refer to x's file (not
 * close-on-exec), e.g. to put an inherited stderr back on 2. */
static int l_dup2(lua_State *L)
{
    int fd = check_fd(L, 1);
    lua_Integer n = check_integer(L, 2);
    arg_check(L, n >= 0 && n <= INT32_MAX, 2, "descriptor must be >= 0");
    int r;
    do
        r = dup2(fd, (int)n);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return push_error(L, "dup2", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

int open_os(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "getpid", l_getpid },   { "kill", l_kill },       { "signals", l_signals },
        { "unblock", l_unblock },
        { "readsignal", l_readsignal }, { "setenv", l_setenv }, { "flock", l_flock },
        { "nofile", l_nofile },   { "fdcount", l_fdcount }, { "monotonic", l_monotonic },
        { "pipe", l_pipe },       { "dup2", l_dup2 },       { "pidfd_open", l_pidfd_open },
        { NULL, NULL } };
    set_funcs(L, funcs, "");
    return 0;
}
