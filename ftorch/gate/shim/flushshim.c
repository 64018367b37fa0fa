/* LD_PRELOAD shim for a recording QEMU: QEMU writes its replay log through stdio, so the file
 * grows in 4 KiB steps and a reader sees it up to a second late at idle. This wraps fopen64 for
 * the log named by FTORCH_RR_LOG and flushes that stream from a thread every
 * FTORCH_FLUSH_US microseconds (default 1000). QEMU writes the log with fwrite(), which takes
 * the stream lock, so fflush() from another thread is safe. fclose is wrapped so the thread
 * stops before the stream goes away.
 *
 * It also wakes the vCPU when the main loop has queued replay events (FTORCH_KICK=1): see
 * kick_if_queued below. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

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

/* Prompt inbound events in record mode (docs/qemu-notes.md, inbound latency). filter-replay and
 * blkreplay queue their events with replay_add_event(), whose qemu_cpu_kick() does not wake a
 * vCPU halted under icount: the queue is logged (and the frame or completion delivered) only
 * when the vCPU thread next goes round its loop, up to ~1 s later. QEMU's own timer code wakes
 * such a vCPU by queueing a no-op work item (qemu_timer_notify_cb); this does the same after
 * each main-loop dispatch that left events queued. Debian's QEMU is linked with
 * --export-dynamic, so the symbols are found at run time; ftorch checks the binary has them
 * before it starts a recorder (host/virt.py). A no-op on a replaying QEMU. */
typedef union { int host_int; unsigned long host_ulong; void *host_ptr; unsigned long long target_ptr; } run_data;
static int kick_ready;
static int *replay_mode_p;
typedef _Bool (*bool_fn)(void);
static bool_fn has_events, bql_held;
static void (*run_async)(void *cpu, void (*fn)(void *, run_data), run_data data);
static void **cpus_head;   /* QTAILQ_HEAD cpus_queue: its first field is the first CPU */
static void (*real_dispatch)(void *ctx);
enum { REPLAY_MODE_RECORD = 1 };

static void noop(void *cpu, run_data data) { (void)cpu; (void)data; }

/* LD_PRELOAD reaches every process the recorder's start runs, e.g. a wrapper script that then
 * execs QEMU (the shim loads again there): only a QEMU is judged. */
static int is_qemu(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 1;   /* cannot tell: judge it */
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    return strstr(base ? base + 1 : exe, "qemu") != NULL;
}

static int kick_init(void) {
    const char *on = getenv("FTORCH_KICK");
    if (!on || strcmp(on, "1") != 0 || !is_qemu()) return 0;
    replay_mode_p = dlsym(RTLD_DEFAULT, "replay_mode");
    has_events = (bool_fn)dlsym(RTLD_DEFAULT, "replay_has_events");
    bql_held = (bool_fn)dlsym(RTLD_DEFAULT, "bql_locked");
    run_async = dlsym(RTLD_DEFAULT, "async_run_on_cpu");
    cpus_head = dlsym(RTLD_DEFAULT, "cpus_queue");
    if (!replay_mode_p || !has_events || !bql_held || !run_async || !cpus_head) {
        fprintf(stderr, "ftorch shim: this QEMU does not export replay_mode, replay_has_events, "
                "bql_locked, async_run_on_cpu and cpus_queue, which the inbound kick needs "
                "(Debian's 10.0 build does); refusing to record (replay.inbound_kick: false "
                "runs without it)\n");
        _exit(78);
    }
    return 1;
}

/* At load, before QEMU runs: a recorder that cannot kick is refused, not silently slow. */
__attribute__((constructor)) static void kick_setup(void) { kick_ready = kick_init(); }

static void kick_if_queued(void) {
    if (!kick_ready || *replay_mode_p != REPLAY_MODE_RECORD || !bql_held() || !has_events())
        return;
    void *cpu = *cpus_head;
    if (cpu) run_async(cpu, noop, (run_data){ .host_ptr = NULL });
}

void g_main_context_dispatch(void *ctx) {
    if (!real_dispatch) real_dispatch = dlsym(RTLD_NEXT, "g_main_context_dispatch");
    real_dispatch(ctx);
    kick_if_queued();
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
