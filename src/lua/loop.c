/* The loop kit's C part (fdpass.loop): poll(2) over anything that names a
 * descriptor, with no FD_SETSIZE limit. The waits that yield to a host
 * loop are Lua (lua/fdpass/loop.lua). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include "base.h"

/* fdpass.loop.poll(readers, writers, [timeout]) -> readable, writable: the
 * same objects, those that are ready (a hang-up or an error counts as
 * readable, so that the read reports it). */
static int l_poll(lua_State *L)
{
    size_t nr = 0, nw = 0;
    if (!lua_isnoneornil(L, 1)) {
        check_table(L, 1);
        nr = (size_t)lua_rawlen(L, 1);
    }
    if (!lua_isnoneornil(L, 2)) {
        check_table(L, 2);
        nw = (size_t)lua_rawlen(L, 2);
    }
    int timeout = check_timeout(L, 3);
    size_t n = nr + nw;
    struct pollfd *p = compat_newuserdata(L, (n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        int list = i < nr ? 1 : 2;
        lua_rawgeti(L, list, (int)(i < nr ? i + 1 : i - nr + 1));
        p[i].fd = check_fd_at(L, -1, list);
        p[i].events = i < nr ? POLLIN : POLLOUT;
        p[i].revents = 0;
        lua_pop(L, 1);
    }
    int64_t until = timeout > 0 ? now_ms() + timeout : 0;
    int r;
    for (;;) {
        int wait = timeout;
        if (timeout > 0) {
            int64_t left = until - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        r = poll(p, (nfds_t)n, wait);
        if (r >= 0 || errno != EINTR)
            break;
    }
    if (r < 0)
        return push_error(L, "poll", -errno, NULL);
    lua_newtable(L);
    lua_newtable(L);
    int ri = 0, wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!p[i].revents)
            continue;
        int list = i < nr ? 1 : 2;
        lua_rawgeti(L, list, (int)(i < nr ? i + 1 : i - nr + 1));
        lua_rawseti(L, i < nr ? -3 : -2, i < nr ? ++ri : ++wi);
    }
    return 2;
}

int open_loop(lua_State *L)
{
    static const luaL_Reg funcs[] = { { "poll", l_poll }, { NULL, NULL } };
    set_funcs(L, funcs, "");
    return 0;
}
