/* slowsync: make fsync()/fdatasync() as slow as a gateway's SD card, to measure what a site feels.
 *
 *   cc -shared -fPIC -O2 -o slowsync.so slowsync.c -ldl   (bench/sdcard.py builds it itself)
 *   SLOWSYNC_MS=5 LD_PRELOAD=$PWD/slowsync.so python -m edged run -c etc/dev.toml
 *
 * Every fsync and fdatasync first does the real call, then sleeps SLOWSYNC_MS milliseconds
 * (default 5; fractions allowed). Nothing else changes. For benchmarks only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void pause_like_a_card(void) {
    const char *ms = getenv("SLOWSYNC_MS");
    double d = ms ? atof(ms) : 5.0;
    if (d <= 0) return;
    struct timespec ts = {(time_t)(d / 1000), (long)((d - 1000 * (time_t)(d / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    pause_like_a_card();
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    pause_like_a_card();
    return rc;
}
