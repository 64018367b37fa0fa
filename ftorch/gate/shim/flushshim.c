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
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

static FILE *(*real_fopen64)(const char *, const char *);
static int (*real_fclose)(FILE *);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
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

/* The output rule: a frame the guest sends may leave the host only after the backup has every
 * log byte recorded before it. QEMU's stream netdev writes each frame with sendmsg(); flushing
 * the log here, before the frame reaches the agent, makes the log file's size when the agent
 * reads the frame cover every event up to it. FTORCH_NET_SOCK names the netdev's socket. */
static int is_net_socket(int fd) {
    const char *want = getenv("FTORCH_NET_SOCK");
    struct sockaddr_un a;
    socklen_t n = sizeof a;
    if (!want || getsockname(fd, (struct sockaddr *)&a, &n) != 0 || a.sun_family != AF_UNIX)
        return 0;
    return strncmp(a.sun_path, want, sizeof a.sun_path) == 0;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    if (!real_sendmsg) real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
    FILE *w = watched;
    if (w && is_net_socket(fd)) fflush(w);
    return real_sendmsg(fd, msg, flags);
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
