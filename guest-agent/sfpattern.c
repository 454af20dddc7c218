/*
 * sfpattern - deterministic guest memory pattern tool for snowflock tests.
 *
 * Every 4 KiB page of an anonymous mapping is filled with content that
 * depends only on (seed, page index):
 *
 *   word 0      = seed
 *   word 1      = page index
 *   word 2      = SFP_MAGIC ^ seed ^ page
 *   word 3..511 = xorshift64 stream started from splitmix64(seed, page)
 *
 * so a page that ended up at the wrong place, or carries an old seed, is
 * identifiable from its first words.  All work is done on uint64_t words,
 * without divisions, so it stays fast under TCG.
 *
 * Usage:
 *   sfpattern serve --mib N --seed S [--fifo PATH]
 *       fill, print "SFPATTERN ready seed=S pages=P ms=T", then execute
 *       commands read line by line from PATH (default /run/sfpattern.fifo,
 *       created if missing; "-" means stdin, exit on EOF):
 *         fill S | verify S | mutate S | stop | status | ping | quit
 *   sfpattern once --mib N --seed S [--selftest-corrupt K]
 *       fill + verify, print the verify line, exit 0 iff no mismatches.
 *
 * Output lines (stdout, flushed per line):
 *   SFPATTERN ready seed=S pages=P ms=T
 *   SFPATTERN filled seed=S pages=P ms=T
 *   SFPATTERN verify seed=S pages=P mismatches=M ms=T
 *   SFPATTERN bad-pages K1 K2 ...            (only if M>0, at most 16)
 *   SFPATTERN bad-detail page=K found-seed=X found-page=Y first-bad-word=W
 *                                            (only if M>0, at most 4)
 *   SFPATTERN mutating seed=S
 *   SFPATTERN stopped seed=S passes=N
 *   SFPATTERN status seed=S pages=P mutating=0|1 passes=N
 *   SFPATTERN pong
 *   SFPATTERN bye
 *   SFPATTERN error ...
 *
 * Mutate semantics: a background thread rewrites the region page after page
 * with seed S, forever.  "stop" waits until at least one complete pass with
 * seed S has finished (so every page holds seed S) and then reports.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define SFP_PAGE_SIZE  4096u
#define SFP_PAGE_WORDS (SFP_PAGE_SIZE / 8u)
#define SFP_PAGE_SHIFT 12
#define SFP_MAGIC      UINT64_C(0x5346504154524e21) /* "SFPATRN!" */
#define SFP_K1         UINT64_C(0x9e3779b97f4a7c15)
#define SFP_K2         UINT64_C(0xc2b2ae3d27d4eb4f)
#define SFP_MAX_BAD    16
#define SFP_MAX_DETAIL 4

static uint64_t *region;
static uint64_t npages;

static uint64_t splitmix64(uint64_t x)
{
    x += SFP_K1;
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static inline uint64_t page_start_state(uint64_t seed, uint64_t page)
{
    uint64_t h = splitmix64(seed * SFP_K1 ^ page * SFP_K2);
    return h ? h : SFP_MAGIC; /* xorshift state must be non-zero */
}

static inline uint64_t *page_ptr(uint64_t page)
{
    return region + (page << (SFP_PAGE_SHIFT - 3));
}

static void fill_page(uint64_t seed, uint64_t page)
{
    uint64_t *w = page_ptr(page);
    uint64_t x = page_start_state(seed, page);
    unsigned i;

    w[0] = seed;
    w[1] = page;
    w[2] = SFP_MAGIC ^ seed ^ page;
    for (i = 3; i < SFP_PAGE_WORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
    }
}

/* Returns 0 if the page matches, else 1 + index of first bad word. */
static unsigned check_page(uint64_t seed, uint64_t page)
{
    const uint64_t *w = page_ptr(page);
    uint64_t x = page_start_state(seed, page);
    uint64_t diff;
    unsigned i;

    diff = (w[0] ^ seed) | (w[1] ^ page) | (w[2] ^ (SFP_MAGIC ^ seed ^ page));
    for (i = 3; i < SFP_PAGE_WORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        diff |= w[i] ^ x;
    }
    if (!diff) {
        return 0;
    }
    /* Slow path: locate the first bad word. */
    x = page_start_state(seed, page);
    if (w[0] != seed) {
        return 1;
    }
    if (w[1] != page) {
        return 2;
    }
    if (w[2] != (SFP_MAGIC ^ seed ^ page)) {
        return 3;
    }
    for (i = 3; i < SFP_PAGE_WORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (w[i] != x) {
            return i + 1;
        }
    }
    return SFP_PAGE_WORDS; /* not reached */
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_lock);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static void fill_all(uint64_t seed)
{
    uint64_t p;
    for (p = 0; p < npages; p++) {
        fill_page(seed, p);
    }
}

/* Verify everything, print result lines, return number of bad pages. */
static uint64_t verify_all(uint64_t seed)
{
    uint64_t bad[SFP_MAX_BAD];
    uint64_t p, mismatches = 0;
    unsigned nbad = 0, ndetail = 0;
    uint64_t t0 = now_ms();
    char line[SFP_MAX_BAD * 21 + 32];
    size_t len;
    unsigned i;

    for (p = 0; p < npages; p++) {
        unsigned r = check_page(seed, p);
        if (r) {
            const uint64_t *w = page_ptr(p);
            if (nbad < SFP_MAX_BAD) {
                bad[nbad++] = p;
            }
            if (ndetail < SFP_MAX_DETAIL) {
                ndetail++;
                out("SFPATTERN bad-detail page=%" PRIu64 " found-seed=%" PRIu64
                    " found-page=%" PRIu64 " first-bad-word=%u",
                    p, w[0], w[1], r - 1);
            }
            mismatches++;
        }
    }
    out("SFPATTERN verify seed=%" PRIu64 " pages=%" PRIu64
        " mismatches=%" PRIu64 " ms=%" PRIu64,
        seed, npages, mismatches, now_ms() - t0);
    if (nbad) {
        len = (size_t)snprintf(line, sizeof(line), "SFPATTERN bad-pages");
        for (i = 0; i < nbad; i++) {
            len += (size_t)snprintf(line + len, sizeof(line) - len, " %" PRIu64,
                                    bad[i]);
        }
        out("%s", line);
    }
    return mismatches;
}

/* ---- mutator thread ---------------------------------------------------- */

static pthread_t mut_thread;
static int mut_running; /* only touched by the main thread */
static uint64_t mut_seed;
static int mut_stop;        /* atomic */
static uint64_t mut_passes; /* atomic */
static uint64_t cur_seed;   /* seed the region is (being) set to */

static void *mutator(void *arg)
{
    uint64_t seed = mut_seed;
    uint64_t p;
    (void)arg;

    for (;;) {
        for (p = 0; p < npages; p++) {
            fill_page(seed, p);
            /* After the first complete pass every page holds seed. */
            if (__atomic_load_n(&mut_stop, __ATOMIC_ACQUIRE) &&
                __atomic_load_n(&mut_passes, __ATOMIC_ACQUIRE) > 0) {
                return NULL;
            }
        }
        __atomic_add_fetch(&mut_passes, 1, __ATOMIC_ACQ_REL);
        if (__atomic_load_n(&mut_stop, __ATOMIC_ACQUIRE)) {
            return NULL;
        }
    }
}

static void mutate_stop(void)
{
    if (!mut_running) {
        return;
    }
    __atomic_store_n(&mut_stop, 1, __ATOMIC_RELEASE);
    pthread_join(mut_thread, NULL);
    mut_running = 0;
    out("SFPATTERN stopped seed=%" PRIu64 " passes=%" PRIu64, mut_seed,
        __atomic_load_n(&mut_passes, __ATOMIC_ACQUIRE));
}

static int mutate_start(uint64_t seed)
{
    int err;

    mutate_stop();
    mut_seed = seed;
    cur_seed = seed;
    __atomic_store_n(&mut_stop, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&mut_passes, 0, __ATOMIC_RELEASE);
    err = pthread_create(&mut_thread, NULL, mutator, NULL);
    if (err) {
        out("SFPATTERN error pthread_create: %s", strerror(err));
        return -1;
    }
    mut_running = 1;
    out("SFPATTERN mutating seed=%" PRIu64, seed);
    return 0;
}

/* ---- setup / commands -------------------------------------------------- */

static int alloc_region(uint64_t mib)
{
    size_t bytes = (size_t)(mib << 20);
    void *p;

    if (mib == 0 || mib > (UINT64_C(1) << 24)) {
        fprintf(stderr, "sfpattern: bad --mib %" PRIu64 "\n", mib);
        return -1;
    }
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "sfpattern: mmap %" PRIu64 " MiB: %s\n", mib,
                strerror(errno));
        return -1;
    }
    region = p;
    npages = mib << (20 - SFP_PAGE_SHIFT);
    return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    if (!s || !*s) {
        return -1;
    }
    errno = 0;
    *v = strtoull(s, &end, 0);
    if (errno || *end) {
        return -1;
    }
    return 0;
}

static void do_fill(uint64_t seed, const char *what)
{
    uint64_t t0 = now_ms();
    fill_all(seed);
    cur_seed = seed;
    out("SFPATTERN %s seed=%" PRIu64 " pages=%" PRIu64 " ms=%" PRIu64, what,
        seed, npages, now_ms() - t0);
}

/* Returns 1 to quit. */
static int handle_command(char *line)
{
    char *cmd, *arg, *save = NULL;
    uint64_t seed = 0;
    int has_arg;

    cmd = strtok_r(line, " \t\r\n", &save);
    if (!cmd) {
        return 0;
    }
    arg = strtok_r(NULL, " \t\r\n", &save);
    has_arg = arg && parse_u64(arg, &seed) == 0;

    if (!strcmp(cmd, "fill") || !strcmp(cmd, "verify") ||
        !strcmp(cmd, "mutate")) {
        if (!has_arg) {
            out("SFPATTERN error %s needs a numeric seed", cmd);
            return 0;
        }
    }
    if (!strcmp(cmd, "fill")) {
        mutate_stop();
        do_fill(seed, "filled");
    } else if (!strcmp(cmd, "verify")) {
        /* Does not stop a running mutator: send "stop" first if needed. */
        verify_all(seed);
    } else if (!strcmp(cmd, "mutate")) {
        mutate_start(seed);
    } else if (!strcmp(cmd, "stop")) {
        if (mut_running) {
            mutate_stop();
        } else {
            out("SFPATTERN stopped seed=%" PRIu64 " passes=0", cur_seed);
        }
    } else if (!strcmp(cmd, "status")) {
        out("SFPATTERN status seed=%" PRIu64 " pages=%" PRIu64
            " mutating=%d passes=%" PRIu64,
            cur_seed, npages, mut_running,
            mut_running ? __atomic_load_n(&mut_passes, __ATOMIC_ACQUIRE) : 0);
    } else if (!strcmp(cmd, "ping")) {
        out("SFPATTERN pong");
    } else if (!strcmp(cmd, "quit")) {
        mutate_stop();
        out("SFPATTERN bye");
        return 1;
    } else {
        out("SFPATTERN error unknown-command %s", cmd);
    }
    return 0;
}

static FILE *open_cmd_stream(const char *path)
{
    struct stat st;
    int fd;

    if (!strcmp(path, "-")) {
        return stdin;
    }
    if (stat(path, &st) == 0) {
        if (!S_ISFIFO(st.st_mode)) {
            fprintf(stderr, "sfpattern: %s exists and is not a FIFO\n", path);
            return NULL;
        }
    } else if (mkfifo(path, 0600) < 0 && errno != EEXIST) {
        fprintf(stderr, "sfpattern: mkfifo %s: %s\n", path, strerror(errno));
        return NULL;
    }
    /* Blocks until the first writer; reopened on EOF by the caller. */
    do {
        fd = open(path, O_RDONLY);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        fprintf(stderr, "sfpattern: open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    return fdopen(fd, "r");
}

static int serve(const char *fifo)
{
    char line[256];
    FILE *f;

    for (;;) {
        f = open_cmd_stream(fifo);
        if (!f) {
            return 1;
        }
        while (fgets(line, sizeof(line), f)) {
            if (handle_command(line)) {
                if (f != stdin) {
                    fclose(f);
                }
                return 0;
            }
        }
        if (f == stdin) {
            mutate_stop();
            return 0;
        }
        fclose(f);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: sfpattern serve --mib N --seed S [--fifo PATH|-]\n"
                    "       sfpattern once --mib N --seed S\n");
}

int main(int argc, char **argv)
{
    const char *mode, *fifo = "/run/sfpattern.fifo";
    uint64_t mib = 0, seed = 0, corrupt = 0;
    int have_mib = 0, have_seed = 0, have_corrupt = 0;
    int i;

    if (argc < 2) {
        usage();
        return 2;
    }
    mode = argv[1];
    for (i = 2; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--mib") && parse_u64(v, &mib) == 0) {
            have_mib = 1;
        } else if (!strcmp(argv[i], "--seed") && parse_u64(v, &seed) == 0) {
            have_seed = 1;
        } else if (!strcmp(argv[i], "--fifo") && v) {
            fifo = v;
        } else if (!strcmp(argv[i], "--selftest-corrupt") &&
                   parse_u64(v, &corrupt) == 0) {
            have_corrupt = 1;
        } else {
            fprintf(stderr, "sfpattern: bad argument '%s'\n", argv[i]);
            usage();
            return 2;
        }
        i++;
    }
    if (!have_mib || !have_seed) {
        usage();
        return 2;
    }
    if (alloc_region(mib) < 0) {
        return 1;
    }

    if (!strcmp(mode, "once")) {
        do_fill(seed, "filled");
        if (have_corrupt) {
            if (corrupt >= npages) {
                fprintf(stderr, "sfpattern: corrupt page out of range\n");
                return 2;
            }
            /* Flip one byte in the middle of page K. */
            ((volatile unsigned char *)page_ptr(corrupt))[1234] ^= 0x5a;
        }
        return verify_all(seed) ? 1 : 0;
    } else if (!strcmp(mode, "serve")) {
        uint64_t t0 = now_ms();
        fill_all(seed);
        cur_seed = seed;
        out("SFPATTERN ready seed=%" PRIu64 " pages=%" PRIu64 " ms=%" PRIu64,
            seed, npages, now_ms() - t0);
        return serve(fifo);
    }
    usage();
    return 2;
}
