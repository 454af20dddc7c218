/*
 * Unit tests for the working set (sf-workset.c): the order pages were
 * first demanded in, and the runs a later clone is pushed.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>

#include "sf-workset.h"

typedef struct Run {
    uint32_t block;
    uint64_t page;
    uint32_t n;
} Run;

/* Every run clone_id would be pushed from cursor 0, max_run at a time. */
static GArray *runs_for(SfWorkSet *ws, uint32_t clone_id, uint32_t max_run,
                        uint64_t *cursor)
{
    GArray *a = g_array_new(false, false, sizeof(Run));
    Run r;

    while (sf_workset_next(ws, cursor, UINT64_MAX, clone_id, max_run, &r.block,
                           &r.page, &r.n)) {
        g_array_append_val(a, r);
    }
    return a;
}

static void test_order_and_runs(void)
{
    uint64_t npages[2] = { 1000, 50 };
    SfWorkSet *ws = sf_workset_new(2, npages, 1 << 20);
    uint64_t cursor = 0;
    GArray *a;

    /* Clone 1 faults: 100..107, then 10..17, then 104..111 again (only
     * 108..111 are new), then block 1. */
    sf_workset_note(ws, 1, 0, 100, 8);
    sf_workset_note(ws, 1, 0, 10, 8);
    sf_workset_note(ws, 1, 0, 104, 8);
    sf_workset_note(ws, 1, 1, 0, 4);
    g_assert_cmpuint(sf_workset_len(ws), ==, 8 + 8 + 4 + 4);
    /* Out of range is ignored. */
    sf_workset_note(ws, 1, 2, 0, 1);
    sf_workset_note(ws, 1, 1, 48, 8);
    g_assert_cmpuint(sf_workset_len(ws), ==, 24);

    /* Clone 2 gets it in the order it was asked, contiguous runs. */
    a = runs_for(ws, 2, 1024, &cursor);
    g_assert_cmpuint(a->len, ==, 4);
    g_assert_cmpuint(g_array_index(a, Run, 0).page, ==, 100);
    g_assert_cmpuint(g_array_index(a, Run, 0).n, ==, 8);
    g_assert_cmpuint(g_array_index(a, Run, 1).page, ==, 10);
    g_assert_cmpuint(g_array_index(a, Run, 2).page, ==, 108);
    g_assert_cmpuint(g_array_index(a, Run, 2).n, ==, 4);
    g_assert_cmpuint(g_array_index(a, Run, 3).block, ==, 1);
    g_assert_cmpuint(cursor, ==, 24);
    g_array_free(a, true);

    /* Clone 1 noted them all itself: nothing to push to it. */
    cursor = 0;
    a = runs_for(ws, 1, 1024, &cursor);
    g_assert_cmpuint(a->len, ==, 0);
    g_assert_cmpuint(cursor, ==, 24);
    g_array_free(a, true);

    /* max_run splits runs; what is noted later is pushed later. */
    cursor = 0;
    a = runs_for(ws, 3, 3, &cursor);
    g_assert_cmpuint(a->len, ==, 3 + 3 + 2 + 2);
    g_array_free(a, true);
    sf_workset_note(ws, 2, 0, 500, 2);
    a = runs_for(ws, 3, 3, &cursor);
    g_assert_cmpuint(a->len, ==, 1);
    g_assert_cmpuint(g_array_index(a, Run, 0).page, ==, 500);
    g_assert_cmpuint(g_array_index(a, Run, 0).n, ==, 2);
    g_array_free(a, true);
    /* Entries of another clone break a run of the asker's own. */
    cursor = 0;
    a = runs_for(ws, 2, 1024, &cursor);
    g_assert_cmpuint(a->len, ==, 4);
    g_array_free(a, true);
    sf_workset_free(ws);
}

static void test_bounded(void)
{
    uint64_t npages[1] = { 10000 };
    SfWorkSet *ws = sf_workset_new(1, npages, 100);

    sf_workset_note(ws, 1, 0, 0, 64);
    sf_workset_note(ws, 1, 0, 1000, 64);
    g_assert_cmpuint(sf_workset_len(ws), ==, 100);
    sf_workset_free(ws);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/workset/order-and-runs", test_order_and_runs);
    g_test_add_func("/workset/bounded", test_bounded);
    return g_test_run();
}
