/* The binding's objects, as every file of src/lua sees them: one struct per
 * class, and where each class's metatable is found. Structs only: whoever
 * reads an object's descriptor reads the field of its own struct. */
#ifndef FDPASS_OBJECTS_H
#define FDPASS_OBJECTS_H

#include <stddef.h>
#include <sys/types.h>
#include "fdpass.h"

/* Every object starts with its class's tag (CLASS_TAG): a type check reads
 * the word behind a userdata of at least that size, which costs a fraction
 * of a metatable comparison. The tags are this library's static addresses:
 * only C code that copies them on purpose can forge one. */
extern const char fdp_classes[];
#define CLASS_TAG(uv) ((const void *)&fdp_classes[(uv)])

/* fdpass.fd: one owned descriptor, -1 once closed or given away. */
typedef struct {
    const void *cls;
    int fd;
} fdp_fd;

/* fdpass.fdset: the descriptors of one message, -1 where taken or closed. */
typedef struct {
    const void *cls;
    size_t n;
    int fds[];
} fdp_fdset;

/* fdpass.channel: a connected AF_UNIX socket and its framing state. */
typedef struct {
    const void *cls;
    int fd;
    fdpass_chan *chan;
    int *handoff;        /* received descriptors not yet owned by an object */
    size_t handoff_n;
    char *rbuf;          /* recvmsg's buffer, kept (up to 64 KiB) from call */
    size_t rcap;         /* to call: a new one each time cost more than the call */
    int raw[FDPASS_MAX_FDS_PER_SENDMSG];
} fdp_channel;

/* fdpass.server: a listening AF_UNIX socket. */
typedef struct {
    const void *cls;
    int fd;
    int type;            /* SOCK_SEQPACKET or SOCK_STREAM */
    dev_t dev;           /* the socket file, for unlink(): 0 when none */
    ino_t ino;
    char addr[110];      /* "/path" or "@name" */
} fdp_server;

/* fdpass.epoll: an epoll descriptor and the Lua keys of what it watches. */
typedef struct {
    const void *cls;
    int fd;              /* -1 once closed */
    int keys;            /* registry reference of the fd -> key table */
} fdp_epoll;

/* fdpass.process: a child started by spawn. */
typedef struct {
    const void *cls;
    pid_t pid;
    int reaped;
} fdp_process;

/* Every C function of the binding carries the classes' metatables as its
 * first upvalues (base.c: set_funcs), so that a new object gets its
 * metatable without a lookup by name; the last upvalue is the function's
 * name, for its argument errors. A closed fd object has a metatable of its
 * own without __gc: the collector has nothing to do for it. */
enum {
    UV_FD = 1,      /* fdpass.fd, open */
    UV_FD_CLOSED,   /* fdpass.fd, closed or given away */
    UV_FDSET,
    UV_CHANNEL,
    UV_SERVER,
    UV_PROCESS,
    UV_EPOLL,
    UV_NAME,
    UV_COUNT = UV_NAME
};

#define FD_MT        "fdpass.fd"
#define FD_CLOSED_MT "fdpass.fd (closed)"
#define FDSET_MT     "fdpass.fdset"
#define CHANNEL_MT   "fdpass.channel"
#define SERVER_MT    "fdpass.server"
#define PROCESS_MT   "fdpass.process"
#define EPOLL_MT     "fdpass.epoll"

#endif
