/* What the files of the fdpass.core binding share. */
#ifndef FDPASS_BINDING_H
#define FDPASS_BINDING_H

#include "compat.h"
#include "fdpass.h"

#define FD_MT      "fdpass.fd"
#define CHANNEL_MT "fdpass.channel"
#define SERVER_MT  "fdpass.server"
#define PROCESS_MT "fdpass.process"
#define FDSET_MT   "fdpass.fdset"

/* Returns nil, "what: reason", "ERRNAME": Lua's convention for a failure
 * of the world (see luaL_fileresult). detail, if any, replaces the reason. */
int push_error(lua_State *L, const char *what, int err, const char *detail);

/* nil -> -1 (the socket's own mode); seconds -> milliseconds, rounded up. */
int check_timeout(lua_State *L, int idx);

/* The descriptor behind any value that names one: an integer, an fdpass
 * object, a Lua io file, or an object with getfd(), pollfd() or fileno().
 * Raises for anything else: a programming mistake. Borrowed, not owned. */
int check_fd(lua_State *L, int idx);
/* The same, with the fd metatable at stack index mt (luaL_getmetatable
 * once per list): what a list of descriptors uses. */
int check_fd_in(lua_State *L, int idx, int mt);

/* Pushes a new fd object owning fd. */
void push_fd(lua_State *L, int fd);
/* Pushes a table of fd objects for fds[0..n); each slot is set to -1 as its
 * object takes it, so that a memory error leaves the rest to close. */
void push_fd_list(lua_State *L, int *fds, size_t n);
/* Pushes one fd set holding fds[0..n), with the same -1 marking. */
void push_fd_set(lua_State *L, int *fds, size_t n);

/* Registers a metatable with __index = methods and __name = name. */
/* fd:nonblock / fd:cloexec: reads one flag (fcntl get/set commands, its
 * bit) and sets or clears it when the argument at 2 is given; returns
 * whether it is set now. */
int fd_flag(lua_State *L, const char *what, int get, int set, int bit);

/* Adds methods to the fd objects' class (after open_fd). */
void add_fd_methods(lua_State *L, const luaL_Reg *methods);

void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
               const luaL_Reg *meta);

int open_fd(lua_State *L);
int open_channel(lua_State *L);
int open_process(lua_State *L);
int open_netio(lua_State *L); /* after open_fd: adds fd methods */
int open_codec(lua_State *L);
int open_dgram(lua_State *L);   /* datagrams with descriptors (sd_notify) */
int open_environ(lua_State *L); /* after open_fd: setenv, fd:cloexec */
int open_epoll(lua_State *L);   /* epoll objects, pidfd_open */

#endif
