/*
 * sf-agent log: one line per event on stderr, prefixed with the agent's
 * CLOCK_MONOTONIC time.  The bottom of the agent: every other file may
 * log, this one calls nothing of ours.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_AGENT_LOG_H
#define SF_AGENT_LOG_H

void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
