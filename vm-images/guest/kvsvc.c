/* ftorch guest service: a TCP key-value store whose writes are durable before they are
 * acknowledged. "PUT k v" appends a 512-byte record to the raw data disk, fdatasync()s it and
 * only then answers "OK <seq>"; "GET k" answers "VAL <v>" or "NONE"; "PING" answers "PONG".
 * Records survive a restart: the disk is scanned at start-up. One process, poll() loop.
 * "STRESS s" answers "OK stress" and has a child work on its own until s seconds from now, as
 * a batch job would: it fills 64 KiB blocks by computation and writes each to the scratch area
 * behind the records with fdatasync(), then prints "stress: done <blocks>" on the console.
 * Another STRESS moves the end (the guest's clock is not the client's: a client renews it
 * while it wants the load); "STRESS 0" ends it. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REC 512
#define MAXREC 131072 /* the 64 MiB data disk; table pages are touched only as records come */
#define MAXCLI 32
#define FIELD 200
#define MAGIC 0x46544b56u /* "FTKV" */
#define SCRATCH ((off_t)MAXREC * REC) /* the STRESS job's area: 8 MiB behind the records */
#define BLOCK 65536
#define BLOCKS 128
#define ROUNDS 8     /* computation per block: ~1 M instructions */

struct rec { uint32_t magic, seq; uint16_t klen, vlen; char kv[REC - 12]; };
struct cli { int fd; char buf[1024]; size_t n; };

static int disk;
static uint32_t nrec;
static struct rec *table; /* in memory copy of every record, index = seq - 1 */

static void load(void) {
    table = calloc(MAXREC, sizeof *table);
    for (nrec = 0; nrec < MAXREC; nrec++) {
        struct rec *r = &table[nrec];
        if (pread(disk, r, REC, (off_t)nrec * REC) != REC || r->magic != MAGIC || r->seq != nrec + 1)
            break;
    }
}

static const struct rec *find(const char *k, size_t kl) {
    for (uint32_t i = nrec; i-- > 0;)
        if (table[i].klen == kl && memcmp(table[i].kv, k, kl) == 0) return &table[i];
    return NULL;
}

static void reply(int fd, const char *s) {
    size_t n = strlen(s);
    while (n) { ssize_t w = write(fd, s, n); if (w <= 0) return; s += w; n -= w; }
}

static volatile time_t *stress_until; /* shared with the STRESS child */
static pid_t stress_pid;

static void stress(int seconds) {
    *stress_until = seconds ? time(NULL) + seconds : 0;
    if (!seconds || (stress_pid > 0 && kill(stress_pid, 0) == 0)) return;
    if ((stress_pid = fork()) != 0) return;
    for (int f = 3; f < 1024; f++) if (f != disk) close(f);
    static uint32_t buf[BLOCK / 4];
    uint32_t x = 2463534242u, sum = 0;
    unsigned long n = 0;
    while (time(NULL) < *stress_until) {
        for (int r = 0; r < ROUNDS; r++)
            for (size_t i = 0; i < BLOCK / 4; i++) {
                x ^= x << 13; x ^= x >> 17; x ^= x << 5;
                buf[i] = x + sum; sum += buf[i];
            }
        if (pwrite(disk, buf, BLOCK, SCRATCH + (off_t)(n % BLOCKS) * BLOCK) != BLOCK ||
            fdatasync(disk) != 0) { printf("stress: io error\n"); _exit(1); }
        n++;
    }
    printf("stress: done %lu\n", n); fflush(stdout);
    _exit(0);
}

static void handle(int fd, char *line) {
    char out[FIELD + 16];
    char *cmd = strtok(line, " "), *k = strtok(NULL, " "), *v = strtok(NULL, "");
    if (cmd && !strcmp(cmd, "PING")) { reply(fd, "PONG\n"); return; }
    if (cmd && !strcmp(cmd, "STRESS") && k && atoi(k) >= 0) {
        stress(atoi(k)); reply(fd, "OK stress\n"); return;
    }
    if (cmd && !strcmp(cmd, "GET") && k) {
        const struct rec *r = find(k, strlen(k));
        if (!r) { reply(fd, "NONE\n"); return; }
        snprintf(out, sizeof out, "VAL %.*s\n", r->vlen, r->kv + r->klen);
        reply(fd, out); return;
    }
    if (cmd && !strcmp(cmd, "PUT") && k && v && strlen(k) <= FIELD && strlen(v) <= FIELD) {
        if (nrec == MAXREC) { reply(fd, "ERR full\n"); return; }
        struct rec *r = &table[nrec];
        memset(r, 0, sizeof *r);
        r->magic = MAGIC; r->seq = nrec + 1;
        r->klen = strlen(k); r->vlen = strlen(v);
        memcpy(r->kv, k, r->klen); memcpy(r->kv + r->klen, v, r->vlen);
        if (pwrite(disk, r, REC, (off_t)nrec * REC) != REC || fdatasync(disk) != 0) {
            reply(fd, "ERR io\n"); return;
        }
        nrec++;
        snprintf(out, sizeof out, "OK %u\n", r->seq);
        reply(fd, out); return;
    }
    reply(fd, "ERR usage: PUT k v | GET k | PING | STRESS seconds\n");
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: kvsvc DEVICE PORT\n"); return 2; }
    disk = open(argv[1], O_RDWR);
    if (disk < 0) { perror(argv[1]); return 1; }
    load();
    signal(SIGCHLD, SIG_IGN);   /* STRESS children are never waited for */
    stress_until = mmap(NULL, sizeof *stress_until, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 16)) { perror("listen"); return 1; }
    printf("kvsvc: %u records, listening on %s\n", nrec, argv[2]); fflush(stdout);
    struct cli c[MAXCLI]; struct pollfd p[MAXCLI + 1]; int nc = 0;
    for (;;) {
        p[0].fd = ls; p[0].events = POLLIN;
        for (int i = 0; i < nc; i++) { p[i + 1].fd = c[i].fd; p[i + 1].events = POLLIN; }
        if (poll(p, nc + 1, -1) < 0) { if (errno == EINTR) continue; return 1; }
        for (int i = nc - 1; i >= 0; i--) {
            if (!(p[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = read(c[i].fd, c[i].buf + c[i].n, sizeof c[i].buf - 1 - c[i].n);
            if (r <= 0) { close(c[i].fd); c[i] = c[--nc]; continue; }
            c[i].n += r;
            char *nl;
            while ((nl = memchr(c[i].buf, '\n', c[i].n))) {
                *nl = 0;
                if (nl > c[i].buf && nl[-1] == '\r') nl[-1] = 0;
                handle(c[i].fd, c[i].buf);
                c[i].n -= nl + 1 - c[i].buf;
                memmove(c[i].buf, nl + 1, c[i].n);
            }
            if (c[i].n == sizeof c[i].buf - 1) { reply(c[i].fd, "ERR line too long\n"); c[i].n = 0; }
        }
        if (p[0].revents & POLLIN) {
            int fd = accept(ls, NULL, NULL);
            if (fd < 0) continue;
            if (nc == MAXCLI) { close(fd); continue; }
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c[nc].fd = fd; c[nc].n = 0; nc++;
        }
    }
}
