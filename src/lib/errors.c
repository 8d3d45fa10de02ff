/* Names and texts for the negated error codes every call returns. */
#define _GNU_SOURCE
#include <string.h>
#include "fdpass.h"

static const struct {
    int code;
    const char *name, *text;
} own[] = {
    { FDPASS_EOF, "EOF", "peer closed the channel" },
    { FDPASS_ETRUNC, "ETRUNC", "peer closed the channel in the middle of a message" },
    { FDPASS_ECTRUNC, "ECTRUNC", "descriptors were dropped (more than the receiver takes, or it is at its descriptor limit)" },
    { FDPASS_EFDCOUNT, "EFDCOUNT", "descriptors received differ from the count the message announced" },
    { FDPASS_EBROKEN, "EBROKEN", "channel unusable after an earlier protocol error" },
};

const char *fdpass_strerror(int err)
{
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (own[i].code == err)
            return own[i].text;
    return strerror(-err);
}

const char *fdpass_errname(int err)
{
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (own[i].code == err)
            return own[i].name;
    const char *name = strerrorname_np(-err);
    return name ? name : "EUNKNOWN";
}
