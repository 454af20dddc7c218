/*
 * sftest - small probes of the fork API for the end-to-end tests.
 *
 *   sftest ids            print "id=I generation=G" for this VM
 *   sftest crash [N]      N clones segfault without sf_exit; the parent
 *                         joins and expects every clone "lost"
 *   sftest panic [N]      N clones crash their kernel (sysrq c); expects
 *                         every clone "crashed"
 *   sftest kill [N]       N clones sleep; the parent sf_kill()s them after
 *                         a second and expects every clone "killed"
 *   sftest exit CODE [N]  N clones sf_exit(CODE); expects "exited CODE"
 *
 * Every test prints one line per clone and "sftest: PASS" or
 * "sftest: FAIL"; the exit status is 0 on PASS, 1 on FAIL, 2 on usage.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sf.h"

static const char *how_name[] = { "exited", "signaled", "lost", "killed",
                                  "crashed" };

static int fail(const char *what)
{
    printf("sftest: FAIL %s: %s\n", what, sf_last_error());
    return 1;
}

/* Fork n clones; in each clone run body(arg) (it must not return). */
static int fork_clones(int n, sf_ticket_t *t, int *m)
{
    int id;

    *t = sf_request_ticket(n, 0);
    if (*t < 0 || (*m = sf_ticket_granted(*t)) < 0) {
        return -1;
    }
    fflush(stdout);
    id = sf_clone(*t);
    return id;
}

static int join_expect(sf_ticket_t t, int m, int how, int status)
{
    sf_status_t st[64];
    int n, bad = 0;

    n = sf_join(t, st, 64);
    if (n < 0) {
        return fail("sf_join");
    }
    for (int i = 0; i < n; i++) {
        int ok =
            st[i].how == how && (how != SF_EXITED || st[i].status == status);

        printf("clone %d: %s %d%s\n", st[i].id,
               st[i].how >= 0 && st[i].how <= SF_CRASHED ? how_name[st[i].how]
                                                         : "?",
               st[i].status, ok ? "" : " (unexpected)");
        bad += !ok;
    }
    bad += n != m;
    printf("sftest: %s\n", bad ? "FAIL" : "PASS");
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    int n = 2, m, id, code = 0;
    sf_ticket_t t;

    if (!strcmp(cmd, "ids")) {
        printf("id=%d generation=%d\n", sf_id(), sf_generation());
        return 0;
    }
    if (!strcmp(cmd, "exit")) {
        if (argc < 3) {
            fprintf(stderr, "usage: sftest exit CODE [N]\n");
            return 2;
        }
        code = atoi(argv[2]);
        n = argc > 3 ? atoi(argv[3]) : n;
    } else if (argc > 2) {
        n = atoi(argv[2]);
    }
    if (n < 1 || n > 64 ||
        (strcmp(cmd, "crash") && strcmp(cmd, "panic") && strcmp(cmd, "kill") &&
         strcmp(cmd, "exit"))) {
        fprintf(stderr, "usage: sftest ids|crash [N]|panic [N]|kill [N]|"
                        "exit CODE [N]   (N: 1..64)\n");
        return 2;
    }

    id = fork_clones(n, &t, &m);
    if (id < 0) {
        return fail(cmd);
    }
    if (id > 0) {
        if (!strcmp(cmd, "crash")) {
            raise(SIGSEGV);
        } else if (!strcmp(cmd, "panic")) {
            int fd = open("/proc/sysrq-trigger", O_WRONLY);

            if (fd >= 0) {
                write(fd, "c", 1);
            }
        } else if (!strcmp(cmd, "kill")) {
            for (;;) {
                pause();
            }
        } else {
            sf_exit(code);
        }
        return fail("clone");
    }

    if (!strcmp(cmd, "crash")) {
        return join_expect(t, m, SF_LOST, 0);
    }
    if (!strcmp(cmd, "panic")) {
        return join_expect(t, m, SF_CRASHED, 0);
    }
    if (!strcmp(cmd, "kill")) {
        sleep(1);
        if (sf_kill(t) < 0) {
            return fail("sf_kill");
        }
        return join_expect(t, m, SF_KILLED, 0);
    }
    return join_expect(t, m, SF_EXITED, code);
}
