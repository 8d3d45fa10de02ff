/* Sockets (pairs, listeners on paths and abstract names, accept, connect,
 * peer credentials), fdinfo, spawn/wait and the error names. */
#include "testutil.h"
#include <arpa/inet.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/un.h>

static char dir[64];     /* a private directory for path sockets */
static char abs_base[64]; /* "@fdpass-ctest-<pid>" */

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static void abstract_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s-%s", abs_base, name);
}

static int mode_of(const char *path)
{
    struct stat st;
    return lstat(path, &st) < 0 ? -1 : (int)(st.st_mode & 07777);
}

/* Connected and accepted ends pass a descriptor to each other. */
static int exchange_works(int a, int b)
{
    int fd = tagged_fd(123), got = -1;
    size_t n = 0;
    char ch;
    ssize_t r = fdpass_sendmsg(a, "k", 1, &fd, 1, 1000);
    close(fd);
    if (r != 1)
        return 0;
    if (fdpass_recvmsg(b, &ch, 1, &got, 1, &n, 1000) != 1 || n != 1)
        return 0;
    int tag = tag_of(got);
    close(got);
    return tag == 123;
}

/* Connects to addr and accepts that connection on l, both within a
 * second: 0, or -1 with nothing left open. */
static int connect_accept(const char *addr, int type, int l, int *c, int *a)
{
    *c = fdpass_connect(addr, type, 1000);
    if (*c < 0)
        return -1;
    *a = fdpass_accept(l, 1000);
    if (*a < 0) {
        close(*c);
        return -1;
    }
    return 0;
}

static void sockets_socketpair(void)
{
    static const int types[] = { SOCK_SEQPACKET, SOCK_STREAM };
    for (size_t t = 0; t < 2; t++) {
        int sv[2] = { -1, -1 };
        CHECK_EQ(fdpass_socketpair(types[t], sv), 0);
        for (int i = 0; i < 2; i++) {
            CHECK_EQ(getfdflags(sv[i]) & FD_CLOEXEC, FD_CLOEXEC);
            CHECK_EQ(getfl(sv[i]) & O_NONBLOCK, 0);
            int type;
            socklen_t tl = sizeof type;
            CHECK_EQ(getsockopt(sv[i], SOL_SOCKET, SO_TYPE, &type, &tl), 0);
            CHECK_EQ(type, types[t]);
        }
        CHECK(exchange_works(sv[0], sv[1]));
        CHECK(exchange_works(sv[1], sv[0]));
        close_fds(sv, 2);
    }
    int sv[2] = { -1, -1 };
    CHECK_EQ(fdpass_socketpair(SOCK_DGRAM, sv), -EPROTOTYPE);
    CHECK_EQ(sv[0], -1);
}

static void sockets_abstract_listen_connect(void)
{
    char name[96];
    abstract_of(name, sizeof name, "abs");
    int l = fdpass_listen(name, SOCK_SEQPACKET, 8, 0);
    CHECK(l >= 0);
    CHECK_EQ(getfl(l) & O_NONBLOCK, O_NONBLOCK);
    CHECK_EQ(getfdflags(l) & FD_CLOEXEC, FD_CLOEXEC);
    CHECK_EQ(fdpass_listen(name, SOCK_SEQPACKET, 8, 0), -EADDRINUSE);
    int c, a;
    CHECK_EQ(connect_accept(name, SOCK_SEQPACKET, l, &c, &a), 0);
    CHECK_EQ(getfl(a) & O_NONBLOCK, 0);
    CHECK_EQ(getfdflags(a) & FD_CLOEXEC, FD_CLOEXEC);
    CHECK_EQ(getfl(c) & O_NONBLOCK, 0);
    CHECK_EQ(getfdflags(c) & FD_CLOEXEC, FD_CLOEXEC);
    CHECK(exchange_works(c, a));
    CHECK(exchange_works(a, c));
    fdpass_fdinfo fi;
    CHECK_EQ(fdpass_fdinfo_get(c, &fi), 0);
    CHECK_STR(fi.peer, name);
    CHECK_EQ(fi.listening, 0);
    close(a);
    close(c);
    close(l);
    /* the name is free again once the listener is gone */
    l = fdpass_listen(name, SOCK_STREAM, 8, 0);
    CHECK(l >= 0);
    close(l);
}

/* Abstract names may use all of sun_path (no NUL): 107 characters after
 * the "@"; one more is too long. */
static void sockets_abstract_full_length(void)
{
    char name[120];
    memset(name, 'n', sizeof name);
    size_t base = strlen(abs_base);
    memcpy(name, abs_base, base);
    name[108] = 0;
    int l = fdpass_listen(name, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    int c, a;
    CHECK_EQ(connect_accept(name, SOCK_STREAM, l, &c, &a), 0);
    fdpass_fdinfo fi;
    CHECK_EQ(fdpass_fdinfo_get(l, &fi), 0);
    CHECK_STR(fi.addr, name);
    close(a);
    close(c);
    close(l);
    name[108] = 'n';
    name[109] = 0;
    CHECK_EQ(fdpass_listen(name, SOCK_STREAM, 4, 0), -ENAMETOOLONG);
    CHECK_EQ(fdpass_connect(name, SOCK_STREAM, 0), -ENAMETOOLONG);
}

static void sockets_bad_addresses(void)
{
    CHECK_EQ(fdpass_listen("", SOCK_STREAM, 4, 0), -EINVAL);
    CHECK_EQ(fdpass_listen("@", SOCK_STREAM, 4, 0), -EINVAL);
    CHECK_EQ(fdpass_connect("", SOCK_STREAM, 0), -EINVAL);
    CHECK_EQ(fdpass_connect("@", SOCK_STREAM, 0), -EINVAL);
    char name[96];
    abstract_of(name, sizeof name, "dgram");
    CHECK_EQ(fdpass_listen(name, SOCK_DGRAM, 4, 0), -EPROTOTYPE);
    CHECK_EQ(fdpass_connect(name, SOCK_DGRAM, 0), -EPROTOTYPE);
    char path[200];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[108] = 0; /* 108 characters + NUL do not fit in sun_path */
    CHECK_EQ(fdpass_listen(path, SOCK_STREAM, 4, 0), -ENAMETOOLONG);
    CHECK_EQ(fdpass_connect(path, SOCK_STREAM, 0), -ENAMETOOLONG);
    char missing[160];
    path_of(missing, sizeof missing, "no/such/dir/sock");
    CHECK_EQ(fdpass_listen(missing, SOCK_STREAM, 4, 0), -ENOENT);
}

static void sockets_path_listen_connect(void)
{
    char path[160];
    path_of(path, sizeof path, "path.sock");
    int l = fdpass_listen(path, SOCK_STREAM, 8, 0);
    CHECK(l >= 0);
    CHECK_EQ(getfl(l) & O_NONBLOCK, O_NONBLOCK);
    CHECK_EQ(getfdflags(l) & FD_CLOEXEC, FD_CLOEXEC);
    struct stat st;
    CHECK_EQ(lstat(path, &st), 0);
    CHECK(S_ISSOCK(st.st_mode));
    int c, a;
    CHECK_EQ(connect_accept(path, SOCK_STREAM, l, &c, &a), 0);
    CHECK_EQ(getfl(a) & O_NONBLOCK, 0);
    CHECK(exchange_works(c, a));
    fdpass_fdinfo fi;
    CHECK_EQ(fdpass_fdinfo_get(l, &fi), 0);
    CHECK_STR(fi.addr, path);
    CHECK_EQ(fi.listening, 1);
    CHECK_STR(fi.socktype, "stream");
    CHECK_EQ(fdpass_fdinfo_get(c, &fi), 0);
    CHECK_STR(fi.peer, path);
    CHECK_STR(fi.addr, "");
    CHECK_EQ(fdpass_fdinfo_get(a, &fi), 0);
    CHECK_STR(fi.addr, path);
    close(a);
    close(c);
    close(l);
    unlink(path);
}

/* The file has exactly the mode asked for (0600 by default), whatever the
 * umask, and the umask is left as it was. */
static void sockets_path_mode(void)
{
    static const struct { mode_t umask; unsigned mode; int want; } cases[] = {
        { 0, 0, 0600 }, { 077, 0, 0600 }, { 022, 0, 0600 }, { 022, 0660, 0660 },
        { 077, 0660, 0660 }, { 0, 0660, 0660 }, { 077, 0666, 0666 }, { 0, 0700, 0700 },
    };
    char path[160];
    path_of(path, sizeof path, "mode.sock");
    mode_t saved = umask(022);
    for (size_t i = 0; i < NELEM(cases); i++) {
        umask(cases[i].umask);
        int l = fdpass_listen(path, SOCK_SEQPACKET, 4, cases[i].mode);
        mode_t after = umask(022);
        int m = mode_of(path);
        if (l >= 0)
            close(l);
        unlink(path);
        if (m != cases[i].want)
            printf("# umask %03o, mode %03o: got %03o, expected %03o\n",
                   (unsigned)cases[i].umask, cases[i].mode, (unsigned)m, (unsigned)cases[i].want);
        CHECK(l >= 0);
        CHECK_EQ(m, cases[i].want);
        CHECK_EQ(after, cases[i].umask);
    }
    umask(saved);
}

/* A socket file nobody listens on is replaced. */
static void sockets_stale_replaced(void)
{
    char path[160];
    path_of(path, sizeof path, "stale.sock");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, path);
    CHECK_EQ(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_EQ(listen(s, 1), 0);
    close(s); /* the file stays, dead */
    CHECK_EQ(lstat(path, &(struct stat){ 0 }), 0);
    CHECK_EQ(fdpass_connect(path, SOCK_STREAM, 0), -ECONNREFUSED);
    int l = fdpass_listen(path, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    CHECK_EQ(mode_of(path), 0600);
    int c, a;
    CHECK_EQ(connect_accept(path, SOCK_STREAM, l, &c, &a), 0);
    CHECK(exchange_works(c, a));
    close(a);
    close(c);
    close(l);
    unlink(path);
}

/* A live listener is not replaced, whatever type the second one asks for. */
static void sockets_live_eaddrinuse(void)
{
    char path[160];
    path_of(path, sizeof path, "live.sock");
    int l = fdpass_listen(path, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    struct stat before;
    CHECK_EQ(lstat(path, &before), 0);
    CHECK_EQ(fdpass_listen(path, SOCK_STREAM, 4, 0), -EADDRINUSE);
    CHECK_EQ(fdpass_listen(path, SOCK_SEQPACKET, 4, 0), -EADDRINUSE);
    struct stat after;
    CHECK_EQ(lstat(path, &after), 0);
    CHECK_EQ(after.st_ino, before.st_ino);
    /* and it still answers */
    int c, a;
    CHECK_EQ(connect_accept(path, SOCK_STREAM, l, &c, &a), 0);
    CHECK(exchange_works(a, c));
    close(a);
    close(c);
    close(l);
    unlink(path);
}

/* Anything that is not a socket is left alone: -EEXIST. */
static void sockets_not_a_socket_eexist(void)
{
    char path[160];
    path_of(path, sizeof path, "regular");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK_EQ(write(fd, "keep me", 7), 7);
    close(fd);
    CHECK_EQ(chmod(path, 0644), 0);
    struct stat before, after;
    CHECK_EQ(lstat(path, &before), 0);
    CHECK_EQ(fdpass_listen(path, SOCK_STREAM, 4, 0), -EEXIST);
    CHECK_EQ(fdpass_listen(path, SOCK_SEQPACKET, 4, 0660), -EEXIST);
    CHECK_EQ(lstat(path, &after), 0);
    CHECK_EQ(after.st_ino, before.st_ino);
    CHECK_EQ(after.st_mode, before.st_mode);
    CHECK_EQ(after.st_size, 7);
    char buf[16];
    fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    CHECK_EQ(n, 7);
    CHECK(memcmp(buf, "keep me", 7) == 0);
    CHECK_EQ(fdpass_connect(path, SOCK_STREAM, 0), -ECONNREFUSED);
    unlink(path);
    /* a directory, and a symlink to a socket, too */
    path_of(path, sizeof path, "subdir");
    CHECK_EQ(mkdir(path, 0700), 0);
    CHECK_EQ(fdpass_listen(path, SOCK_STREAM, 4, 0), -EEXIST);
    CHECK_EQ(rmdir(path), 0);
    char target[160];
    path_of(target, sizeof target, "target.sock");
    path_of(path, sizeof path, "link.sock");
    int l = fdpass_listen(target, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    CHECK_EQ(symlink(target, path), 0);
    CHECK_EQ(fdpass_listen(path, SOCK_STREAM, 4, 0), -EEXIST);
    CHECK_EQ(lstat(path, &after), 0);
    CHECK(S_ISLNK(after.st_mode));
    close(l);
    unlink(path);
    unlink(target);
}

static void sockets_accept_timeout(void)
{
    char name[96];
    abstract_of(name, sizeof name, "acc");
    int l = fdpass_listen(name, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    int fl = getfl(l);
    long long t0 = now_ms();
    CHECK_EQ(fdpass_accept(l, 0), -EAGAIN);
    CHECK(now_ms() - t0 < 20);
    t0 = now_ms();
    CHECK_EQ(fdpass_accept(l, 50), -ETIMEDOUT);
    long long took = now_ms() - t0;
    CHECK(took >= 50);
    CHECK(took < 1000);
    CHECK_EQ(getfl(l), fl);
    /* a blocking listener (one inherited, say) too: the timeout holds and
     * 0 never waits. In a child: a wrong implementation blocks forever. */
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (set_nonblock(l, 0) < 0)
            _exit(1);
        long long s0 = now_ms();
        if (fdpass_accept(l, 50) != -ETIMEDOUT || now_ms() - s0 < 50)
            _exit(2);
        if (fdpass_accept(l, 0) != -EAGAIN)
            _exit(3);
        _exit(getfl(l) & O_NONBLOCK ? 4 : 0);
    }
    int code = wait_child_ms(pid, 3000);
    CHECK_EQ(getfl(l), fl & ~O_NONBLOCK); /* the child's change, shared */
    close(l);
    CHECK_EQ(code, 0);
    int p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    CHECK(fdpass_accept(p[0], 0) < 0);
    close_fds(p, 2);
}

/* accept with no timeout waits (the listener is non-blocking), through
 * signals without SA_RESTART, until a child connects. */
static void sockets_accept_forever_eintr(void)
{
    char name[96];
    abstract_of(name, sizeof name, "accwait");
    int l = fdpass_listen(name, SOCK_SEQPACKET, 4, 0);
    CHECK(l >= 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        sleep_ms(250);
        int c = fdpass_connect(name, SOCK_SEQPACKET, 1000);
        if (c < 0)
            _exit(1);
        _exit(fdpass_sendmsg(c, "hi", 2, NULL, 0, 1000) == 2 ? 0 : 2);
    }
    struct sigaction old;
    alarm_every(30, 30, &old);
    long long t0 = now_ms();
    int a = fdpass_accept(l, -1);
    long long took = now_ms() - t0;
    alarm_off(&old);
    int seen = alarms;
    char buf[4];
    ssize_t r = a >= 0 ? fdpass_recvmsg(a, buf, sizeof buf, NULL, 0, NULL, 2000) : -1;
    int code = wait_child(pid);
    if (a >= 0)
        close(a);
    close(l);
    CHECK(a >= 0);
    CHECK_EQ(r, 2);
    CHECK(seen >= 3);
    CHECK(took >= 200);
    CHECK_EQ(code, 0);
}

static void sockets_connect_errors(void)
{
    char path[160], name[96];
    path_of(path, sizeof path, "missing.sock");
    CHECK_EQ(fdpass_connect(path, SOCK_STREAM, 1000), -ENOENT);
    CHECK_EQ(fdpass_connect(path, SOCK_SEQPACKET, -1), -ENOENT);
    abstract_of(name, sizeof name, "nobody-here");
    CHECK_EQ(fdpass_connect(name, SOCK_STREAM, 1000), -ECONNREFUSED);
    CHECK_EQ(fdpass_connect(name, SOCK_SEQPACKET, 0), -ECONNREFUSED);
    /* a listener of the other type: a path says so, an abstract name is
     * looked up with its type and is just not there */
    path_of(path, sizeof path, "typed.sock");
    int l = fdpass_listen(path, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    CHECK_EQ(fdpass_connect(path, SOCK_SEQPACKET, 1000), -EPROTOTYPE);
    close(l);
    unlink(path);
    abstract_of(name, sizeof name, "typed");
    l = fdpass_listen(name, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    CHECK_EQ(fdpass_connect(name, SOCK_SEQPACKET, 1000), -ECONNREFUSED);
    close(l);
    /* a regular file at the path */
    path_of(path, sizeof path, "plain");
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ(fdpass_connect(path, SOCK_STREAM, 1000), -ECONNREFUSED);
    unlink(path);
}

/* A full backlog: connect waits at most its timeout (-ETIMEDOUT), or
 * answers -EAGAIN at once with timeout 0. */
static void sockets_connect_backlog_timeout(void)
{
    char name[96];
    abstract_of(name, sizeof name, "backlog");
    int l = fdpass_listen(name, SOCK_STREAM, 1, 0);
    CHECK(l >= 0);
    int conns[16], n = 0, r = 0;
    long long took = 0;
    while (n < 16) {
        long long t0 = now_ms();
        r = fdpass_connect(name, SOCK_STREAM, 100);
        took = now_ms() - t0;
        if (r < 0)
            break;
        conns[n++] = r;
    }
    CHECK_EQ(r, -ETIMEDOUT);
    CHECK(n >= 1);
    CHECK(took >= 100);
    CHECK(took < 1000);
    long long t0 = now_ms();
    int r0 = fdpass_connect(name, SOCK_STREAM, 0);
    took = now_ms() - t0;
    /* one accepted frees a slot */
    int a = fdpass_accept(l, 1000);
    int c = fdpass_connect(name, SOCK_STREAM, 1000);
    close_fds(conns, (size_t)n);
    if (a >= 0)
        close(a);
    if (c >= 0)
        close(c);
    if (r0 >= 0)
        close(r0);
    close(l);
    CHECK_EQ(r0, -EAGAIN);
    CHECK(took < 50);
    CHECK(a >= 0);
    CHECK(c >= 0);
}

/* SO_PEERCRED across fork: the child (as nobody when as_other) connects;
 * each side sees the other's pid, uid and gid. */
static void peercred_from_child(int as_other)
{
    char name[96];
    abstract_of(name, sizeof name, as_other ? "cred-other" : "cred");
    int l = fdpass_listen(name, SOCK_STREAM, 4, 0);
    CHECK(l >= 0);
    uid_t want_uid = as_other ? 65534 : getuid();
    gid_t want_gid = as_other ? 65534 : getgid();
    pid_t parent = getpid();
    uid_t parent_uid = geteuid();
    gid_t parent_gid = getegid();
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (as_other && (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0))
            _exit(1);
        int c = fdpass_connect(name, SOCK_STREAM, 2000);
        if (c < 0)
            _exit(2);
        pid_t p;
        uid_t u;
        gid_t g;
        if (fdpass_peercred(c, &p, &u, &g) != 0)
            _exit(3);
        if (p != parent || u != parent_uid || g != parent_gid)
            _exit(4);
        char ch;
        if (fdpass_recvmsg(c, &ch, 1, NULL, 0, NULL, 5000) != 1) /* stay until asked */
            _exit(5);
        _exit(0);
    }
    int a = fdpass_accept(l, 5000);
    pid_t p = 0;
    uid_t u = 1;
    gid_t g = 1;
    int r = a >= 0 ? fdpass_peercred(a, &p, &u, &g) : a;
    if (a >= 0)
        fdpass_sendmsg(a, "x", 1, NULL, 0, 1000);
    int code = wait_child(pid);
    if (a >= 0)
        close(a);
    close(l);
    CHECK_EQ(r, 0);
    CHECK_EQ(p, pid);
    CHECK_EQ(u, want_uid);
    CHECK_EQ(g, want_gid);
    CHECK_EQ(code, 0);
}

/* A child of another uid: only root can make one. */
static void sockets_peercred_other_uid(void)
{
    if (geteuid() != 0)
        SKIP("needs root to run a peer as nobody");
    peercred_from_child(1);
}

static void sockets_peercred_fork(void)
{
    peercred_from_child(0);
    if (ctest_case_failed)
        return;
    /* a socketpair: ourselves; NULL outputs are allowed */
    pid_t p = 0;
    uid_t u = 1;
    gid_t g = 1;
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    CHECK_EQ(fdpass_peercred(sv[0], &p, NULL, NULL), 0);
    CHECK_EQ(p, getpid());
    CHECK_EQ(fdpass_peercred(sv[1], NULL, &u, &g), 0);
    CHECK_EQ(u, getuid());
    CHECK_EQ(g, getgid());
    close_fds(sv, 2);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK_EQ(fdpass_peercred(fd, &p, &u, &g), -ENOTSOCK);
    close(fd);
}

/* ---- fdinfo --------------------------------------------------------------- */

static void fdinfo_regular_file(void)
{
    char path[160];
    path_of(path, sizeof path, "file.txt");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK_EQ(write(fd, "12345", 5), 5);
    fdpass_fdinfo fi;
    memset(&fi, 0x55, sizeof fi);
    CHECK_EQ(fdpass_fdinfo_get(fd, &fi), 0);
    CHECK_STR(fi.kind, "file");
    CHECK_EQ(fi.size, 5);
    CHECK_EQ(fi.cloexec, 1);
    CHECK_EQ(fi.nonblock, 0);
    CHECK_STR(fi.path, path);
    CHECK(fi.family == NULL);
    CHECK(fi.socktype == NULL);
    CHECK_EQ(fi.listening, 0);
    CHECK_STR(fi.addr, "");
    CHECK_EQ(fcntl(fd, F_SETFD, 0), 0);
    CHECK_EQ(set_nonblock(fd, 1), 0);
    CHECK_EQ(fdpass_fdinfo_get(fd, &fi), 0);
    CHECK_EQ(fi.cloexec, 0);
    CHECK_EQ(fi.nonblock, 1);
    close(fd);
    unlink(path);
    /* other kinds */
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK_EQ(fdpass_fdinfo_get(fd, &fi), 0);
    CHECK_STR(fi.kind, "char");
    CHECK_STR(fi.path, "/dev/null");
    CHECK_EQ(fi.size, -1);
    close(fd);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK_EQ(fdpass_fdinfo_get(fd, &fi), 0);
    CHECK_STR(fi.kind, "dir");
    CHECK_STR(fi.path, dir);
    close(fd);
}

static void fdinfo_pipe(void)
{
    int p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    fdpass_fdinfo fi;
    CHECK_EQ(fdpass_fdinfo_get(p[0], &fi), 0);
    CHECK_STR(fi.kind, "pipe");
    CHECK_EQ(fi.nonblock, 1);
    CHECK_EQ(fi.cloexec, 1);
    CHECK_EQ(fi.size, -1);
    CHECK(strncmp(fi.path, "pipe:[", 6) == 0);
    CHECK(fi.family == NULL);
    CHECK_EQ(set_nonblock(p[1], 0), 0);
    CHECK_EQ(fdpass_fdinfo_get(p[1], &fi), 0);
    CHECK_EQ(fi.nonblock, 0);
    close_fds(p, 2);
}

static void fdinfo_unix_sockets(void)
{
    char name[96];
    abstract_of(name, sizeof name, "info");
    int l = fdpass_listen(name, SOCK_SEQPACKET, 4, 0);
    CHECK(l >= 0);
    fdpass_fdinfo fi;
    CHECK_EQ(fdpass_fdinfo_get(l, &fi), 0);
    CHECK_STR(fi.kind, "socket");
    CHECK_STR(fi.family, "unix");
    CHECK_STR(fi.socktype, "seqpacket");
    CHECK_EQ(fi.listening, 1);
    CHECK_STR(fi.addr, name);
    CHECK_STR(fi.peer, "");
    CHECK_EQ(fi.nonblock, 1);
    CHECK_EQ(fi.cloexec, 1);
    CHECK(strncmp(fi.path, "socket:[", 8) == 0);
    int c, a;
    CHECK_EQ(connect_accept(name, SOCK_SEQPACKET, l, &c, &a), 0);
    CHECK_EQ(fdpass_fdinfo_get(a, &fi), 0);
    CHECK_EQ(fi.listening, 0);
    CHECK_STR(fi.addr, name);
    CHECK_STR(fi.peer, "");
    CHECK_EQ(fi.nonblock, 0);
    close(a);
    close(c);
    close(l);
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_STREAM, sv), 0);
    CHECK_EQ(fdpass_fdinfo_get(sv[0], &fi), 0);
    CHECK_STR(fi.socktype, "stream");
    CHECK_STR(fi.addr, "");
    CHECK_STR(fi.peer, "");
    close_fds(sv, 2);
    int d = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK_EQ(fdpass_fdinfo_get(d, &fi), 0);
    CHECK_STR(fi.socktype, "dgram");
    close(d);
}

static void fdinfo_tcp(void)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_EQ(listen(l, 4), 0);
    socklen_t sl = sizeof sa;
    CHECK_EQ(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", ntohs(sa.sin_port));
    fdpass_fdinfo fi;
    CHECK_EQ(fdpass_fdinfo_get(l, &fi), 0);
    CHECK_STR(fi.kind, "socket");
    CHECK_STR(fi.family, "inet");
    CHECK_STR(fi.socktype, "stream");
    CHECK_EQ(fi.listening, 1);
    CHECK_STR(fi.addr, want);
    CHECK_STR(fi.peer, "");
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(c >= 0);
    CHECK_EQ(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_EQ(fdpass_fdinfo_get(c, &fi), 0);
    CHECK_EQ(fi.listening, 0);
    CHECK_STR(fi.peer, want);
    CHECK(strncmp(fi.addr, "127.0.0.1:", 10) == 0);
    close(c);
    close(l);
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(u >= 0);
    CHECK_EQ(fdpass_fdinfo_get(u, &fi), 0);
    CHECK_STR(fi.socktype, "dgram");
    CHECK_STR(fi.family, "inet");
    close(u);
}

static void fdinfo_changes_nothing_and_bad_fd(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_STREAM, sv), 0);
    CHECK_EQ(set_nonblock(sv[0], 1), 0);
    int fl = getfl(sv[0]), fd = getfdflags(sv[0]);
    fdpass_fdinfo fi;
    CHECK_EQ(fdpass_fdinfo_get(sv[0], &fi), 0);
    CHECK_EQ(getfl(sv[0]), fl);
    CHECK_EQ(getfdflags(sv[0]), fd);
    close_fds(sv, 2);
    CHECK_EQ(fdpass_fdinfo_get(sv[0], &fi), -EBADF);
    CHECK_EQ(fdpass_fdinfo_get(-1, &fi), -EBADF);
}

/* ---- spawn and wait -------------------------------------------------------- */

static void spawn_maps_descriptor(void)
{
    int p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    char *argv[] = { "sh", "-c", "echo hi >&5", NULL };
    const int map[][2] = { { 5, p[1] } };
    pid_t pid = -1;
    CHECK_EQ(fdpass_spawn(&pid, "/bin/sh", argv, NULL, map, 1), 0);
    CHECK(pid > 0);
    close(p[1]);
    char buf[32];
    ssize_t n = read_all_ms(p[0], buf, sizeof buf, 5000);
    close(p[0]);
    int st = -1;
    CHECK_EQ(fdpass_wait(pid, 5000, &st), 0);
    CHECK_EQ(n, 3);
    CHECK_STR(buf, "hi\n");
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
}

/* Mapped descriptors are there (not close-on-exec), close-on-exec ones that
 * were not mapped are not, envp is the child's environment. */
static void spawn_only_mapped_and_env(void)
{
    int p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    int hidden = fcntl(p[1], F_DUPFD_CLOEXEC, 40);
    CHECK(hidden >= 40);
    char script[256];
    snprintf(script, sizeof script,
             "[ -e /proc/self/fd/%d ] && exit 1; [ -e /proc/self/fd/7 ] || exit 2; "
             "echo \"$FDPASS_X $0 $1\" >&7", hidden);
    char *argv[] = { "sh", "-c", script, "zero", "one", NULL };
    char *envp[] = { "FDPASS_X=42", "PATH=/usr/bin:/bin", NULL };
    const int map[][2] = { { 7, p[1] } };
    pid_t pid = -1;
    CHECK_EQ(fdpass_spawn(&pid, "sh", argv, envp, map, 1), 0);
    close(p[1]);
    close(hidden);
    char buf[64];
    read_all_ms(p[0], buf, sizeof buf, 5000);
    close(p[0]);
    int st = -1;
    CHECK_EQ(fdpass_wait(pid, 5000, &st), 0);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
    CHECK_STR(buf, "42 zero one\n");
    /* the parent's descriptors kept their close-on-exec flag */
}

/* A permutation: parent fds A and B become B and A in the child. */
static void spawn_permutation(void)
{
    int pa[2], pb[2];
    CHECK_EQ(pipe2(pa, O_CLOEXEC), 0);
    CHECK_EQ(pipe2(pb, O_CLOEXEC), 0);
    int a = -1; /* two free single-digit slots, for sh's ">&N" */
    for (int i = 3; i < 9; i++)
        if (fcntl(i, F_GETFD) < 0 && fcntl(i + 1, F_GETFD) < 0) {
            a = i;
            break;
        }
    CHECK(a >= 0);
    int b = a + 1;
    CHECK_EQ(dup3(pa[1], a, O_CLOEXEC), a);
    CHECK_EQ(dup3(pb[1], b, O_CLOEXEC), b);
    close(pa[1]);
    close(pb[1]);
    char script[64];
    snprintf(script, sizeof script, "echo A >&%d; echo B >&%d", a, b);
    char *argv[] = { "sh", "-c", script, NULL };
    const int map[][2] = { { a, b }, { b, a } };
    pid_t pid = -1;
    int r = fdpass_spawn(&pid, "/bin/sh", argv, NULL, map, 2);
    CHECK_EQ(getfdflags(a) & FD_CLOEXEC, FD_CLOEXEC); /* untouched here */
    close(a);
    close(b);
    CHECK_EQ(r, 0);
    char ba[16], bb[16];
    read_all_ms(pa[0], ba, sizeof ba, 5000);
    read_all_ms(pb[0], bb, sizeof bb, 5000);
    close(pa[0]);
    close(pb[0]);
    int st = -1;
    CHECK_EQ(fdpass_wait(pid, 5000, &st), 0);
    CHECK_EQ(WEXITSTATUS(st), 0);
    CHECK_STR(bb, "A\n"); /* child fd a is parent's b */
    CHECK_STR(ba, "B\n");
}

static void spawn_missing_program(void)
{
    char *argv[] = { "nope", NULL };
    pid_t pid = -1;
    int before = ctest_fdcount();
    CHECK_EQ(fdpass_spawn(&pid, "/nonexistent/fdpass-nope", argv, NULL, NULL, 0), -ENOENT);
    CHECK_EQ(ctest_fdcount(), before);
    int st;
    CHECK_EQ(waitpid(-1, &st, WNOHANG), -1); /* no child left behind */
    CHECK_EQ(errno, ECHILD);
    /* a bad descriptor in the map */
    char *sh[] = { "sh", "-c", "exit 0", NULL };
    const int map[][2] = { { 5, 999 } };
    CHECK_EQ(fdpass_spawn(&pid, "/bin/sh", sh, NULL, map, 1), -EBADF);
}

static void wait_timeout_then_kill(void)
{
    char *argv[] = { "sleep", "5", NULL };
    pid_t pid = -1;
    CHECK_EQ(fdpass_spawn(&pid, "sleep", argv, NULL, NULL, 0), 0);
    int st = -1;
    long long t0 = now_ms();
    int r = fdpass_wait(pid, 100, &st);
    long long took = now_ms() - t0;
    int r0 = fdpass_wait(pid, 0, &st);
    kill(pid, SIGKILL);
    int r2 = fdpass_wait(pid, 5000, &st);
    CHECK_EQ(r, -ETIMEDOUT);
    CHECK(took >= 100);
    CHECK(took < 1000);
    CHECK_EQ(r0, -ETIMEDOUT);
    CHECK_EQ(r2, 0);
    CHECK(WIFSIGNALED(st));
    CHECK_EQ(WTERMSIG(st), SIGKILL);
    /* reaped: there is nothing left to wait for */
    CHECK_EQ(fdpass_wait(pid, -1, &st), -ECHILD);
    CHECK_EQ(fdpass_wait(pid, 100, &st), -ECHILD);
}

static void wait_exit_status_and_eintr(void)
{
    char *argv[] = { "sh", "-c", "sleep 0.3; exit 3", NULL };
    for (int forever = 0; forever < 2; forever++) {
        pid_t pid = -1;
        CHECK_EQ(fdpass_spawn(&pid, "/bin/sh", argv, NULL, NULL, 0), 0);
        struct sigaction old;
        alarm_every(30, 30, &old);
        int st = -1;
        int r = fdpass_wait(pid, forever ? -1 : 5000, &st);
        alarm_off(&old);
        int seen = alarms;
        if (r != 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        CHECK_EQ(r, 0);
        CHECK(seen >= 3);
        CHECK(WIFEXITED(st));
        CHECK_EQ(WEXITSTATUS(st), 3);
    }
    /* not our child */
    CHECK_EQ(fdpass_wait(1, -1, NULL), -ECHILD);
    CHECK_EQ(fdpass_wait(1, 0, NULL), -ECHILD);
}

/* Without pidfd_open (Linux < 5.3, valgrind, a seccomp sandbox: ENOSYS)
 * fdpass_wait with a timeout still waits, times out and reaps: it used to
 * answer -ENOSYS at once. A seccomp filter in a child takes the call away. */
static int wait_without_pidfd_child(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { sizeof f / sizeof f[0], f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        return 2;
    if (syscall(SYS_pidfd_open, getpid(), 0) >= 0 || errno != ENOSYS)
        return 3;
    char *argv[] = { "sh", "-c", "sleep 0.3; exit 4", NULL };
    pid_t pid = -1;
    if (fdpass_spawn(&pid, "/bin/sh", argv, NULL, NULL, 0) != 0)
        return 4;
    int st = -1;
    long long t0 = now_ms();
    int r = fdpass_wait(pid, 50, &st);
    long long took = now_ms() - t0;
    if (r != -ETIMEDOUT || took < 50 || took > 1000)
        return 5;
    if (fdpass_wait(pid, 0, &st) != -ETIMEDOUT)
        return 6;
    if (fdpass_wait(pid, 5000, &st) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 4)
        return 7;
    if (fdpass_wait(pid, 100, &st) != -ECHILD || fdpass_wait(1, 100, &st) != -ECHILD)
        return 8;
    return 0;
}

static void wait_without_pidfd_open(void)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(wait_without_pidfd_child());
    CHECK_EQ(wait_child(pid), 0);
}

/* ---- error names ------------------------------------------------------------- */

static void error_names(void)
{
    CHECK_STR(fdpass_errname(FDPASS_EOF), "EOF");
    CHECK_STR(fdpass_errname(FDPASS_ETRUNC), "ETRUNC");
    CHECK_STR(fdpass_errname(FDPASS_ECTRUNC), "ECTRUNC");
    CHECK_STR(fdpass_errname(FDPASS_EFDCOUNT), "EFDCOUNT");
    CHECK_STR(fdpass_errname(FDPASS_EBROKEN), "EBROKEN");
    CHECK_STR(fdpass_errname(-EAGAIN), "EAGAIN");
    CHECK_STR(fdpass_errname(-ETIMEDOUT), "ETIMEDOUT");
    CHECK_STR(fdpass_errname(-EPIPE), "EPIPE");
    CHECK_STR(fdpass_errname(-EMSGSIZE), "EMSGSIZE");
    CHECK_STR(fdpass_errname(-EPROTO), "EPROTO");
    CHECK_STR(fdpass_errname(-EADDRINUSE), "EADDRINUSE");
    CHECK_STR(fdpass_errname(-99999), "EUNKNOWN");
    CHECK_STR(fdpass_strerror(-ENOENT), strerror(ENOENT));
    CHECK_STR(fdpass_strerror(-EINVAL), strerror(EINVAL));
    CHECK_STR(fdpass_strerror(FDPASS_EOF), "peer closed the channel");
    CHECK(strstr(fdpass_strerror(FDPASS_ECTRUNC), "descriptors") != NULL);
    static const int own[] = { FDPASS_EOF, FDPASS_ETRUNC, FDPASS_ECTRUNC, FDPASS_EFDCOUNT, FDPASS_EBROKEN };
    for (size_t i = 0; i < NELEM(own); i++) {
        CHECK(own[i] < -4095);
        CHECK(fdpass_strerror(own[i]) != NULL);
        CHECK(strncmp(fdpass_strerror(own[i]), "Unknown error", 13) != 0);
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(fdpass_strerror(own[i]), fdpass_strerror(own[j])) != 0);
            CHECK(strcmp(fdpass_errname(own[i]), fdpass_errname(own[j])) != 0);
        }
    }
    CHECK(fdpass_strerror(-99999) != NULL);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (make_tmpdir(dir, sizeof dir) < 0)
        return 1;
    snprintf(abs_base, sizeof abs_base, "@fdpass-ctest-%d", (int)getpid());
    RUN(sockets_socketpair);
    RUN(sockets_abstract_listen_connect);
    RUN(sockets_abstract_full_length);
    RUN(sockets_bad_addresses);
    RUN(sockets_path_listen_connect);
    RUN(sockets_path_mode);
    RUN(sockets_stale_replaced);
    RUN(sockets_live_eaddrinuse);
    RUN(sockets_not_a_socket_eexist);
    RUN(sockets_accept_timeout);
    RUN(sockets_accept_forever_eintr);
    RUN(sockets_connect_errors);
    RUN(sockets_connect_backlog_timeout);
    RUN(sockets_peercred_fork);
    RUN(sockets_peercred_other_uid);
    RUN(fdinfo_regular_file);
    RUN(fdinfo_pipe);
    RUN(fdinfo_unix_sockets);
    RUN(fdinfo_tcp);
    RUN(fdinfo_changes_nothing_and_bad_fd);
    RUN(spawn_maps_descriptor);
    RUN(spawn_only_mapped_and_env);
    RUN(spawn_permutation);
    RUN(spawn_missing_program);
    RUN(wait_timeout_then_kill);
    RUN(wait_exit_status_and_eintr);
    RUN(wait_without_pidfd_open);
    RUN(error_names);
    remove_tmpdir(dir);
    CTEST_END();
}
