/*
 * sf-randlog: draw from the kernel RNG at a steady pace and log every
 * draw, to see whether clones of a VM (and their parent) ever hand out
 * the same random bytes after a fork.
 *
 *   sf-randlog [-n COUNT] [-p PERIOD_US] [-b BYTES] [-o FILE]
 *
 * Every PERIOD_US (default 1000) it calls getrandom(BYTES (default 8),
 * flags 0) and writes one line:
 *
 *   INDEX BEGIN_NS END_NS REALTIME_NS HEX
 *
 * BEGIN and END are CLOCK_MONOTONIC right before and right after the
 * draw, REALTIME is CLOCK_REALTIME read with BEGIN.  A draw preempted
 * around getrandom() may span a reseed (or the fork): the kernel served
 * it somewhere in [BEGIN, END], so a draw that must come after an event
 * is one that BEGAN after it, and a line that ENDED after the fork is
 * not its parent's, whatever its bytes.
 * COUNT 0 (the default) runs until killed.  Each line is one write(2),
 * so the file is complete up to the last draw whenever it is read, and a
 * clone's copy of it is its parent's up to the fork instant: the lines
 * after the fork are the draws to compare (tests/integration/randlog.py).
 * Deadlines are absolute (TIMER_ABSTIME) and never bunch up: after a
 * stall the next draw is one period after now.
 *
 * flags 0 blocks until the kernel's CRNG is initialised, so the first
 * draw also makes sure it is (a VM without an RNG device or RDRAND
 * otherwise leaves it uninitialised, and then no reseed happens).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAX_BYTES 32

static int64_t ns(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static long parse(const char *arg, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < min || v > max) {
        fprintf(stderr, "sf-randlog: bad number '%s' (%ld..%ld)\n", arg, min,
                max);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long count = 0, period_us = 1000, nbytes = 8;
    struct timespec next;
    int fd = 1, o;

    while ((o = getopt(argc, argv, "n:p:b:o:")) != -1) {
        switch (o) {
        case 'n':
            count = parse(optarg, 0, 1L << 40);
            break;
        case 'p':
            period_us = parse(optarg, 0, 10000000);
            break;
        case 'b':
            nbytes = parse(optarg, 1, MAX_BYTES);
            break;
        case 'o':
            fd = open(optarg, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0) {
                fprintf(stderr, "sf-randlog: %s: %s\n", optarg,
                        strerror(errno));
                return 1;
            }
            break;
        default:
            fprintf(stderr, "usage: sf-randlog [-n COUNT] [-p PERIOD_US] "
                            "[-b BYTES] [-o FILE]\n");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long i = 0; count == 0 || i < count; i++) {
        uint8_t buf[MAX_BYTES];
        char line[96 + 2 * MAX_BYTES];
        int64_t mono, real, end;
        int len;

        mono = ns(CLOCK_MONOTONIC);
        real = ns(CLOCK_REALTIME);
        if (getrandom(buf, nbytes, 0) != nbytes) {
            fprintf(stderr, "sf-randlog: getrandom: %s\n", strerror(errno));
            return 1;
        }
        end = ns(CLOCK_MONOTONIC);
        len = snprintf(line, sizeof(line), "%ld %lld %lld %lld ", i,
                       (long long)mono, (long long)end, (long long)real);
        for (long b = 0; b < nbytes; b++) {
            len += snprintf(line + len, sizeof(line) - len, "%02x", buf[b]);
        }
        line[len++] = '\n';
        if (write(fd, line, len) != len) {
            fprintf(stderr, "sf-randlog: write: %s\n", strerror(errno));
            return 1;
        }
        if (!period_us) {
            continue;
        }
        next.tv_nsec += period_us * 1000;
        while (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        if (next.tv_sec * 1000000000ll + next.tv_nsec < mono) {
            next.tv_sec = mono / 1000000000;
            next.tv_nsec = mono % 1000000000;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) ==
               EINTR) {
        }
    }
    return 0;
}
