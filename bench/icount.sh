#!/bin/sh
# usage: bench/icount.sh LUA NFDS [N [into]]: user-space instructions per
# round trip (ch:send + ch:recv + fd:close of each), callgrind run of N minus
# a run of 0; "into" reuses one table for the received fd objects. Finds
# the in-tree modules itself (build/lua5.4 for lua5.4, build/luajit for
# luajit, ...); BUILD= another build directory.
lua=$1 nfds=$2 n=${3:-2000} into=$4
case $lua in luajit) v=jit;; lua5.*) v=${lua#lua};; *) v=5.4;; esac
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/${BUILD:-build}/lua$v/?.so;;"
unset LUA_PATH_5_4 LUA_CPATH_5_4 LUA_PATH_5_3 LUA_CPATH_5_3 LUA_PATH_5_1 LUA_CPATH_5_1
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$lua" bench/icount.lua "$nfds" "$1" $into 2>&1 |
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
a=$(count 0) b=$(count "$n")
echo "$lua nfds=$nfds $into: $(( (b - a) / n )) instructions per round trip, $(( (b - a) / n / (nfds > 0 ? nfds : 1) )) per fd"
