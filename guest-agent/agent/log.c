/*
 * sf-agent log: stderr, line buffered, "sf-agent[SEC.MSEC]: ..." with
 * CLOCK_MONOTONIC, so lines from a parent and its clones (which share the
 * parent's monotonic clock up to the fork) can be laid side by side.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "log.h"

void agent_log(const char *fmt, ...)
{
    struct timespec ts;
    va_list ap;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    fprintf(stderr, "sf-agent[%lld.%03ld]: ", (long long)ts.tv_sec,
            ts.tv_nsec / 1000000);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
