/* What every file of the binding shares, depending on nothing but Lua,
 * fdpass.h and the object structs: errors, argument checks that name the
 * function, option tables, the classes' functions and upvalues, fd objects
 * and descriptors from any value, one clock, one signal table. */
#ifndef FDPASS_BASE_H
#define FDPASS_BASE_H

#include <stdint.h>
#include <stdio.h>
#include "compat.h"
#include "fdpass.h"
#include "objects.h"

/* ---- failures of the world: nil, "what: why", "ERRNAME" ----------------- */

/* err is negative (-errno or FDPASS_E*); detail, if any, replaces the
 * reason. Returns 3, what a C function returns. */
int push_error(lua_State *L, const char *what, int err, const char *detail);

/* ---- programming mistakes: raise, naming the function ------------------
 * "bad argument #2 to 'tcp_listen' (port must be 0 .. 65535)". The name is
 * the function's upvalue (set_funcs), so 5.1 and LuaJIT say it too; a
 * method ("channel:send") numbers its arguments after self. */

int arg_error(lua_State *L, int arg, const char *msg);
int type_error(lua_State *L, int arg, const char *expected);
#define arg_check(L, cond, arg, msg) ((void)((cond) || arg_error((L), (arg), (msg))))

lua_Integer check_integer(lua_State *L, int arg);
lua_Integer opt_integer(lua_State *L, int arg, lua_Integer def);
lua_Number check_number(lua_State *L, int arg);
const char *check_lstring(lua_State *L, int arg, size_t *len);
#define check_string(L, arg) check_lstring((L), (arg), NULL)
const char *opt_string(lua_State *L, int arg, const char *def);
void check_table(lua_State *L, int arg);
int check_option(lua_State *L, int arg, const char *def, const char *const names[]);

/* An option table at arg (nil: none): raises naming the first key that is
 * not in names. Returns whether there is a table. */
int check_options(lua_State *L, int arg, const char *const names[]);

/* nil -> -1 (the socket's own mode); seconds -> milliseconds, rounded up. */
int check_timeout(lua_State *L, int arg);

/* ---- classes ------------------------------------------------------------- */

/* Creates the metatables of every class (objects.h), empty but for
 * __name, in the registry: first thing luaopen does. */
void new_classes(lua_State *L);
/* Sets the functions of l into the table on top, each with the classes'
 * metatables and its name ("prefix" .. name) as upvalues. */
void set_funcs(lua_State *L, const luaL_Reg *l, const char *prefix);
/* Fills a class's metatable: methods go to __index (shared with the
 * closed-fd metatable for FD_MT), meta are metamethods. */
void set_class(lua_State *L, const char *name, const luaL_Reg *methods,
               const luaL_Reg *meta);

/* The object at idx if it is of class uv (its tag, objects.h), else NULL;
 * a closed fd object is still one (fd -1). */
void *to_object(lua_State *L, int idx, int uv);
/* The same, raising for anything else ("fdpass.channel expected"). */
void *check_object(lua_State *L, int idx, int uv);

/* ---- fd objects and descriptors ------------------------------------------ */

/* Pushes a closed fd object: the caller acquires the descriptor after, and
 * stores it with set_fd, so that a memory error cannot leak it. */
fdp_fd *new_fd(lua_State *L);
/* Gives the closed fd object f (at idx) its descriptor. */
void set_fd(lua_State *L, int idx, fdp_fd *f, int fd);
/* Marks the fd object at idx closed (its metatable without __gc). */
void fd_closed(lua_State *L, int idx, fdp_fd *f);

/* Pushes a table of fd objects for fds[0..n) -- or fills the table at
 * stack index into (when not 0), clearing what it held beyond n. Each slot
 * is set to -1 as its object takes it, so that a memory error leaves the
 * rest to whoever holds fds. */
void push_fd_list(lua_State *L, int *fds, size_t n, int into);
/* Pushes an empty fd set with room for cap descriptors (it closes the
 * first n when collected). */
fdp_fdset *new_fdset(lua_State *L, size_t cap);
/* Pushes one fd set holding fds[0..n), with the same -1 marking. */
void push_fd_set(lua_State *L, int *fds, size_t n);
/* Pushes an fd object that takes *slot (then -1). */
void push_fd_take(lua_State *L, int *slot);

/* The descriptor behind any value that names one: an integer, an fdpass
 * object, a Lua io file, or an object with getfd(), pollfd() or fileno().
 * Raises for anything else. Borrowed, not owned. */
int check_fd(lua_State *L, int arg);
/* The same for the value at idx (an element of the list at arg). */
int check_fd_at(lua_State *L, int idx, int arg);

/* ---- channels -------------------------------------------------------------- */

/* Pushes a closed channel object: the socket comes after (as for new_fd). */
fdp_channel *new_channel(lua_State *L);
/* Gives the channel its connected socket: 0, or -errno with fd untouched
 * (the caller still owns it). */
int open_channel_on(fdp_channel *c, int fd);

/* ---- Lua io files: the FILE * first in the userdata (5.1: FILE **;
 * LuaJIT: IOFileUD; 5.2+: luaL_Stream) under the registry name "FILE*" -- */

/* 1 and the io file's FILE * in *f (NULL when it is closed), or 0 when the
 * value at idx is no io file. */
int compat_tofile(lua_State *L, int idx, FILE **f);
/* Pushes an io file that is closed until compat_setfile gives it a FILE *,
 * or returns 0 with errno set and nothing pushed. 5.1 and LuaJIT have no
 * API to make one: there the io library opens /dev/null and compat_setfile
 * exchanges its FILE * for the caller's. */
int compat_newfile(lua_State *L);
/* Gives the io file at idx its FILE *, or with f == NULL closes it again. */
void compat_setfile(lua_State *L, int idx, FILE *f);

/* ---- clock and signals ---------------------------------------------------- */

int64_t now_ms(void); /* CLOCK_MONOTONIC */
double now_seconds(void);

/* The signal named ("TERM", "SIGTERM") or numbered by the value at idx;
 * def when nil and def > 0. Raises for a name it does not know, naming
 * argument arg. */
int check_signal(lua_State *L, int idx, int arg, int def);
const char *signal_name(int sig); /* "TERM", or NULL */

#endif
