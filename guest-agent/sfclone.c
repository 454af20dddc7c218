/*
 * sfclone - run a command in N clones of this VM and collect their ends.
 *
 *   sfclone [-n N] [-q] [-F] -- CMD [ARGS...]
 *
 * Asks for a ticket for N clones (default 1) and forks the VM.  Each
 * clone runs CMD with SF_CLONE_ID set and reports the command's exit
 * (or signal) with sf_exit_wait(); the parent waits with sf_join() and
 * prints one line per clone:
 *
 *   clone 1: exited 0
 *   clone 2: killed by signal 9
 *   clone 3: crashed | lost | killed
 *
 * Exit status: 0 when every clone exited 0, 1 when one did not,
 * 2 for a usage error, 3 when the ticket or the fork failed.
 * -q drops the lines of clones that exited 0 and the note printed when
 * fewer than N clones were granted.  -F freezes the workload cgroup
 * around the fork (SF_CLONE_FREEZE): sfclone must run in it, and CMD
 * starts in a clone only after the clone's identity is in place (as it
 * does anyway; -F holds the rest of the workload too).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sf.h"

enum { EXIT_CLONE_FAILED = 1, EXIT_USAGE = 2, EXIT_FORK = 3 };

static void usage(FILE *f)
{
    fprintf(f, "usage: sfclone [-n N] [-q] [-F] -- CMD [ARGS...]\n");
}

/* In a clone: run the command, report how it ended, never return. */
static void run_clone(int id, char **cmd)
{
    char idbuf[16];
    pid_t pid;
    int ws;

    snprintf(idbuf, sizeof(idbuf), "%d", id);
    pid = fork();
    if (pid < 0) {
        perror("sfclone: fork");
        sf_exit(127);
        _exit(127);
    }
    if (pid == 0) {
        setenv("SF_CLONE_ID", idbuf, 1);
        execvp(cmd[0], cmd);
        fprintf(stderr, "sfclone: %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    while (waitpid(pid, &ws, 0) < 0) {
        if (errno != EINTR) {
            perror("sfclone: waitpid");
            sf_exit(127);
            _exit(127);
        }
    }
    sf_exit_wait(ws);
    fprintf(stderr, "sfclone: clone %d: %s\n", id, sf_last_error());
    _exit(WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws));
}

static bool report(const sf_status_t *s, bool quiet)
{
    bool ok = s->how == SF_EXITED && s->status == 0;

    if (ok && quiet) {
        return true;
    }
    switch (s->how) {
    case SF_EXITED:
        printf("clone %d: exited %d\n", s->id, s->status);
        break;
    case SF_SIGNALED:
        printf("clone %d: killed by signal %d\n", s->id, s->status);
        break;
    case SF_LOST:
        printf("clone %d: lost\n", s->id);
        break;
    case SF_KILLED:
        printf("clone %d: killed\n", s->id);
        break;
    case SF_CRASHED:
        printf("clone %d: crashed\n", s->id);
        break;
    default:
        printf("clone %d: ended (how %d, status %d)\n", s->id, s->how,
               s->status);
    }
    return ok;
}

int main(int argc, char **argv)
{
    sf_status_t *st;
    sf_ticket_t t;
    bool quiet = false, ok;
    unsigned flags = 0;
    long n = 1;
    int o, id, granted, ended;
    char *end;

    while ((o = getopt(argc, argv, "+n:qFh")) != -1) {
        switch (o) {
        case 'n':
            n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 4096) {
                fprintf(stderr, "sfclone: -n wants 1..4096\n");
                return EXIT_USAGE;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'F':
            flags |= SF_CLONE_FREEZE;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }

    t = sf_request_ticket(n, 0);
    if (t < 0) {
        fprintf(stderr, "sfclone: %s\n", sf_last_error());
        return EXIT_FORK;
    }
    granted = sf_ticket_granted(t);
    if (granted < 0) {
        granted = n;
    }
    if (granted < n && !quiet) {
        printf("sfclone: note: granted %d of %ld clones\n", granted, n);
    }
    fflush(stdout);

    id = sf_clone_flags(t, flags);
    if (id < 0) {
        fprintf(stderr, "sfclone: %s\n", sf_last_error());
        return EXIT_FORK;
    }
    if (id > 0) {
        run_clone(id, argv + optind);
    }

    st = calloc(granted, sizeof(*st));
    if (!st) {
        perror("sfclone");
        return EXIT_FORK;
    }
    ended = sf_join(t, st, granted);
    if (ended < 0) {
        fprintf(stderr, "sfclone: %s\n", sf_last_error());
        return EXIT_CLONE_FAILED;
    }
    ok = ended == granted;
    for (int i = 0; i < ended; i++) {
        ok &= report(&st[i], quiet);
    }
    if (ended != granted) {
        printf("sfclone: %d of %d clones reported\n", ended, granted);
    }
    free(st);
    return ok ? 0 : EXIT_CLONE_FAILED;
}
