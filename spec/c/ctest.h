/* A minimal test harness for the C specs: TAP output ("ok N - name"), which
 * spec/run.lua counts together with the Lua specs. */
#ifndef CTEST_H
#define CTEST_H
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ctest_n, ctest_failed, ctest_case_failed;

#define CHECK(cond) do { if (!(cond)) { \
    printf("# %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    ctest_case_failed = 1; return; } } while (0)
#define CHECK_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) { printf("# %s:%d: %s == %lld, expected %s == %lld\n", \
        __FILE__, __LINE__, #a, a_, #b, b_); ctest_case_failed = 1; return; } } while (0)

static int ctest_fdcount(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n - 1;
}

/* A test named in FDPASS_SKIP (space-separated; `make valgrind` sets it)
 * reports "# SKIP" with the reason in FDPASS_SKIP_WHY instead of running. */
static int ctest_skipped(const char *name)
{
    const char *list = getenv("FDPASS_SKIP"), *p = list;
    size_t n = strlen(name);
    for (; p && (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == 0 || p[n] == ' '))
            return 1;
    return 0;
}

/* A test that cannot run here (say, one that needs root) says why and
 * returns: it is reported "# SKIP", counted as neither passed nor failed.
 * Call it before the test has opened anything. */
static const char *ctest_skip_why;
#define SKIP(why) do { ctest_skip_why = (why); return; } while (0)

/* Every test also checks that it leaves no descriptor behind. */
#define RUN(fn) do { if (ctest_skipped(#fn)) { printf("ok %d # SKIP %s: %s\n", ++ctest_n, #fn, \
        getenv("FDPASS_SKIP_WHY") ? getenv("FDPASS_SKIP_WHY") : "in FDPASS_SKIP"); break; } \
    int before_ = ctest_fdcount(); ctest_case_failed = 0; ctest_skip_why = NULL; fn(); \
    if (ctest_skip_why && !ctest_case_failed) { \
        printf("ok %d # SKIP %s: %s\n", ++ctest_n, #fn, ctest_skip_why); break; } \
    int after_ = ctest_fdcount(); \
    if (!ctest_case_failed && after_ != before_) { \
        printf("# %s leaked %d descriptor(s)\n", #fn, after_ - before_); ctest_case_failed = 1; } \
    printf("%sok %d - %s\n", ctest_case_failed ? "not " : "", ++ctest_n, #fn); \
    ctest_failed += ctest_case_failed; } while (0)

#define CTEST_END() do { printf("1..%d\n", ctest_n); return ctest_failed ? 1 : 0; } while (0)
#endif
