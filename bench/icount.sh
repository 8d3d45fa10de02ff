#!/bin/sh
# usage: bench/icount.sh LUA NFDS [N [into]]: user-space instructions per
# round trip (ch:send + ch:recv + fd:close of each), callgrind run of N minus
# a run of 0; "into" reuses one table for the received fd objects.
lua=$1 nfds=$2 n=${3:-2000} into=$4
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$lua" bench/icount.lua "$nfds" "$1" $into 2>&1 |
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
a=$(count 0) b=$(count "$n")
echo "$lua nfds=$nfds $into: $(( (b - a) / n )) instructions per round trip, $(( (b - a) / n / (nfds > 0 ? nfds : 1) )) per fd"
