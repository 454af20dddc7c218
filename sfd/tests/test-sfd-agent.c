/*
 * sfd guest-request pieces without a daemon: the token bucket that
 * rate-limits a VM's requests and the per-VM ticket table (caps,
 * expiry, claiming, members).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <glib.h>

#include "../sfd.h"
#include "../bucket.h"
#include "../tickets.h"

#define S G_GINT64_CONSTANT(1000000)

static void test_bucket_burst(void)
{
    SfdBucket b;
    int ok = 0;

    sfd_bucket_init(&b, 5, 10, 1000);
    for (int i = 0; i < 100; i++) {
        ok += sfd_bucket_take(&b, 1000);
    }
    g_assert_cmpint(ok, ==, 10);
    g_assert_false(sfd_bucket_take(&b, 1000));
}

static void test_bucket_refill(void)
{
    SfdBucket b;
    gint64 t = 5 * S;
    int ok = 0;

    sfd_bucket_init(&b, 5, 10, t);
    for (int i = 0; i < 10; i++) {
        g_assert_true(sfd_bucket_take(&b, t));
    }
    g_assert_false(sfd_bucket_take(&b, t));
    /* 5 per second: one token every 200 ms, never more than the burst. */
    g_assert_false(sfd_bucket_take(&b, t + 150000));
    g_assert_true(sfd_bucket_take(&b, t + 200000));
    g_assert_false(sfd_bucket_take(&b, t + 200000));
    /* A flood at 1 kHz for 10 s gets ~5/s through. */
    for (gint64 u = t + 200000; u < t + 10 * S + 200000; u += 1000) {
        ok += sfd_bucket_take(&b, u);
    }
    g_assert_cmpint(ok, >=, 49);
    g_assert_cmpint(ok, <=, 51);
    /* Idle for an hour: the burst, not 18000. */
    ok = 0;
    for (int i = 0; i < 100; i++) {
        ok += sfd_bucket_take(&b, t + 3600 * S);
    }
    g_assert_cmpint(ok, ==, 10);
    /* The clock going backwards never adds tokens. */
    g_assert_false(sfd_bucket_take(&b, t));
}

static void test_tickets_caps(void)
{
    SfdTicketTable t;
    int err = 0;

    sfd_tickets_init(&t, 4, 8, 60 * S);
    for (int i = 1; i <= 4; i++) {
        SfdTicket *tk = sfd_tickets_add(&t, i, 2, 0, &err);
        g_assert_nonnull(tk);
        g_assert_cmpint(tk->granted, ==, 2);
    }
    g_assert_null(sfd_tickets_add(&t, 5, 1, 0, &err));
    g_assert_cmpint(err, ==, EDQUOT);
    g_assert_cmpuint(sfd_tickets_count_unused(&t), ==, 4);
    /* Using one makes room for another unused one. */
    SfdTicket *tk;
    g_assert_cmpint(sfd_tickets_claim(&t, 2, 0, &tk), ==, 0);
    tk->state = SFD_TICKET_USED;
    g_assert_nonnull(sfd_tickets_add(&t, 5, 1, 0, &err));
    g_assert_cmpint(sfd_tickets_claim(&t, 2, 0, &tk), ==, EALREADY);
    g_assert_cmpint(sfd_tickets_claim(&t, 99, 0, &tk), ==, ENOENT);
    sfd_tickets_clear(&t);
}

static void test_tickets_expiry(void)
{
    SfdTicketTable t;
    SfdTicket *tk;
    int err = 0;

    sfd_tickets_init(&t, 4, 8, 60 * S);
    for (int i = 1; i <= 4; i++) {
        g_assert_nonnull(sfd_tickets_add(&t, i, 1, i * S, &err));
    }
    g_assert_cmpint(sfd_tickets_claim(&t, 1, 4 * S, &tk), ==, 0);
    tk->state = SFD_TICKET_FORKING; /* in use: never expires */
    g_assert_cmpuint(sfd_tickets_expire(&t, 62 * S), ==, 1); /* #2 */
    g_assert_null(sfd_tickets_find(&t, 2));
    g_assert_nonnull(sfd_tickets_find(&t, 1));
    g_assert_cmpint(sfd_tickets_claim(&t, 3, 63 * S, &tk), ==, ENOENT);
    g_assert_cmpint(sfd_tickets_claim(&t, 4, 63 * S, &tk), ==, 0);
    /* Expired ones free their places for new tickets. */
    g_assert_nonnull(sfd_tickets_add(&t, 5, 1, 1000 * S, &err));
    g_assert_null(sfd_tickets_find(&t, 4));
    g_assert_nonnull(sfd_tickets_find(&t, 1));
    sfd_tickets_clear(&t);
}

static void test_tickets_members(void)
{
    SfdTicketTable t;
    SfdTicket *tk;
    int err = 0;

    sfd_tickets_init(&t, 4, 3, 60 * S);
    tk = sfd_tickets_add(&t, 7, 2, 0, &err);
    sfd_ticket_add_member(tk, "web-1");
    sfd_ticket_add_member(tk, "web-2");
    tk->state = SFD_TICKET_USED;
    g_assert_false(sfd_ticket_finished(tk));
    g_assert_true(sfd_ticket_member_ended(tk, 2, 3, 0));
    g_assert_false(sfd_ticket_member_ended(tk, 2, 4, 0)); /* once */
    g_assert_false(sfd_ticket_member_ended(tk, 0, 0, 0));
    g_assert_false(sfd_ticket_member_ended(tk, 3, 0, 0));
    g_assert_false(sfd_ticket_finished(tk));
    g_assert_true(sfd_ticket_member_ended(tk, 1, -1, 4));
    g_assert_true(sfd_ticket_finished(tk));
    g_assert_cmpint(((SfdTicketMember *)tk->members->pdata[1])->status, ==, 3);
    /* A full table forgets finished tickets first, else refuses. */
    g_assert_nonnull(sfd_tickets_add(&t, 8, 1, 0, &err));
    tk = sfd_tickets_find(&t, 8);
    tk->state = SFD_TICKET_USED;
    sfd_ticket_add_member(tk, "web-3");
    g_assert_nonnull(sfd_tickets_add(&t, 9, 1, 0, &err));
    g_assert_nonnull(sfd_tickets_add(&t, 10, 1, 0, &err)); /* drops 7 */
    g_assert_null(sfd_tickets_find(&t, 7));
    g_assert_null(sfd_tickets_add(&t, 11, 1, 0, &err));
    g_assert_cmpint(err, ==, EDQUOT);
    sfd_tickets_clear(&t);
}

/* The table through a record and back, across an sfd restart: ages by
 * the wall clock, a fork in flight unused again, ids and members kept,
 * garbage skipped. */
static void test_tickets_record(void)
{
    SfdTicketTable t, r;
    SfdTicket *tk;
    SfdTicketMember *m;
    int err = 0;

    sfd_tickets_init(&t, 4, 8, 60 * S);
    /* Monotonic 1000 s = real 5000 s when written. */
    tk = sfd_tickets_add(&t, 3, 2, 990 * S, &err); /* 10 s old */
    sfd_ticket_add_member(tk, "web-1");
    sfd_ticket_add_member(tk, "web-2");
    tk->state = SFD_TICKET_USED;
    tk->checkpoint = 2;
    g_assert_true(sfd_ticket_member_ended(tk, 2, 7, 0));
    ((SfdTicketMember *)tk->members->pdata[1])->reported = TRUE;
    tk = sfd_tickets_add(&t, 5, 1, 950 * S, &err); /* 50 s old, in flight */
    tk->state = SFD_TICKET_FORKING;
    g_assert_nonnull(sfd_tickets_add(&t, 6, 4, 999 * S, &err));
    g_autoptr(JsonNode) n = sfd_tickets_to_json(&t, 1000 * S, 5000 * S);
    g_autofree char *text = json_to_string(n, FALSE);
    /* Garbage beside it: a duplicate id, a bad state, not an object. */
    JsonArray *a = json_node_get_array(n);
    JsonObject *dup = json_object_new();
    json_object_set_int_member(dup, "id", 6);
    json_object_set_int_member(dup, "granted", 1);
    json_object_set_string_member(dup, "state", "unused");
    json_object_set_int_member(dup, "created-at", 5000 * S);
    json_array_add_object_element(a, dup);
    JsonObject *bad = json_object_new();
    json_object_set_int_member(bad, "id", 9);
    json_object_set_int_member(bad, "granted", 1);
    json_object_set_string_member(bad, "state", "forking");
    json_object_set_int_member(bad, "created-at", 5000 * S);
    json_array_add_object_element(a, bad);
    json_array_add_int_element(a, 42);

    /* Read back by an sfd whose monotonic clock says 7 and real 5020. */
    sfd_tickets_init(&r, 4, 8, 60 * S);
    g_test_expect_message("sfd", G_LOG_LEVEL_WARNING, "*malformed*");
    g_test_expect_message("sfd", G_LOG_LEVEL_WARNING, "*malformed*");
    sfd_tickets_from_json(&r, a, 7 * S, 5020 * S);
    g_test_assert_expected_messages();
    g_assert_cmpuint(r.tickets->len, ==, 3);
    tk = sfd_tickets_find(&r, 3);
    g_assert_cmpint(tk->state, ==, SFD_TICKET_USED);
    g_assert_cmpint(tk->granted, ==, 2);
    g_assert_cmpuint(tk->checkpoint, ==, 2);
    g_assert_cmpint(tk->created_us, ==, 7 * S - 30 * S);
    g_assert_cmpuint(tk->members->len, ==, 2);
    m = tk->members->pdata[0];
    g_assert_cmpstr(m->vm, ==, "web-1");
    g_assert_false(m->ended);
    m = tk->members->pdata[1];
    g_assert_true(m->ended && m->reported);
    g_assert_cmpint(m->status, ==, 7);
    tk = sfd_tickets_find(&r, 5);
    g_assert_cmpint(tk->state, ==, SFD_TICKET_UNUSED); /* was in flight */
    g_assert_cmpuint(tk->members->len, ==, 0);
    /* Ages go on by the wall clock: #5 (70 s) expires, #6 (21 s) not. */
    g_assert_cmpuint(sfd_tickets_expire(&r, 7 * S), ==, 1);
    g_assert_null(sfd_tickets_find(&r, 5));
    g_assert_nonnull(sfd_tickets_find(&r, 6));
    /* A clock set back: the age is 0, not negative. */
    sfd_tickets_clear(&r);
    sfd_tickets_init(&r, 4, 8, 60 * S);
    g_autoptr(JsonNode) n2 = json_from_string(text, NULL);
    sfd_tickets_from_json(&r, json_node_get_array(n2), 7 * S, 100 * S);
    g_assert_cmpint(sfd_tickets_find(&r, 6)->created_us, ==, 7 * S);
    sfd_tickets_clear(&r);
    sfd_tickets_clear(&t);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/sfd/agent/bucket-burst", test_bucket_burst);
    g_test_add_func("/sfd/agent/bucket-refill", test_bucket_refill);
    g_test_add_func("/sfd/agent/tickets-caps", test_tickets_caps);
    g_test_add_func("/sfd/agent/tickets-expiry", test_tickets_expiry);
    g_test_add_func("/sfd/agent/tickets-members", test_tickets_members);
    g_test_add_func("/sfd/agent/tickets-record", test_tickets_record);
    return g_test_run();
}
