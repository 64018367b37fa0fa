/* LD_PRELOAD shim for a recording QEMU: QEMU writes its replay log through stdio, so the file
 * grows in 4 KiB steps and a reader sees it up to a second late at idle. This wraps fopen64 for
 * the log named by FTORCH_RR_LOG and flushes that stream from a thread every
 * FTORCH_FLUSH_US microseconds (default 1000). QEMU writes the log with fwrite(), which takes
 * the stream lock, so fflush() from another thread is safe. fclose is wrapped so the thread
 * stops before the stream goes away. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static FILE *(*real_fopen64)(const char *, const char *);
static int (*real_fclose)(FILE *);
static FILE *watched;
static volatile int stop;
static pthread_t flusher;

static void *flush_loop(void *arg) {
    const char *us = getenv("FTORCH_FLUSH_US");
    long period = us ? atol(us) : 1000;
    struct timespec ts = { period / 1000000, (period % 1000000) * 1000 };
    while (!stop) {
        fflush((FILE *)arg);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

FILE *fopen64(const char *path, const char *mode) {
    if (!real_fopen64) real_fopen64 = dlsym(RTLD_NEXT, "fopen64");
    FILE *f = real_fopen64(path, mode);
    const char *log = getenv("FTORCH_RR_LOG");
    if (f && !watched && log && strcmp(path, log) == 0 && strchr(mode, 'w')) {
        watched = f;
        stop = 0;
        if (pthread_create(&flusher, NULL, flush_loop, f) != 0) watched = NULL;
    }
    return f;
}

int fclose(FILE *f) {
    if (!real_fclose) real_fclose = dlsym(RTLD_NEXT, "fclose");
    if (f && f == watched) {
        stop = 1;
        pthread_join(flusher, NULL);
        watched = NULL;
    }
    return real_fclose(f);
}
