/*
 * sf-agent configuration: where the agent keeps its files and what it
 * acts on.  Filled once by main.c from the command line, then only read
 * (by identity.c, freeze.c and main.c); a plain struct, no code.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_AGENT_CONFIG_H
#define SF_AGENT_CONFIG_H

typedef struct AgentConfig {
    const char *run_dir;     /* /run/snowflock */
    const char *root;        /* "/"; prefix for /etc/... */
    const char *iface;       /* eth0 */
    const char *dry_run;     /* record identity steps here instead */
    int script_timeout;      /* seconds per post-clone script */
    const char *cgroup_root; /* /sys/fs/cgroup (cgroup v2) */
    const char *workload;    /* sf-workload: the cgroup freeze acts on */
} AgentConfig;

#endif
