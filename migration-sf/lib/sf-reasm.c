/*
 * snowflock page reassembly (see sf-reasm.h).
 *
 * Partial pages live in a fixed array of slots found through a hash
 * table keyed by (block, page); eviction takes the slot that has waited
 * longest (O(max_partial), only when full).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-reasm.h"

typedef struct Slot {
    uint64_t key;
    uint64_t born; /* insertion order */
    uint32_t have; /* fragments present, bit i */
    unsigned count;
    uint8_t data[SF_REASM_PAGE];
} Slot;

struct SfReasm {
    unsigned max;
    Slot *slots;
    GArray *free_slots; /* unsigned indexes */
    GHashTable *index;  /* key -> slot index + 1 */
    uint64_t clock;
    uint8_t out[SF_REASM_PAGE];
    SfReasmStats st;
};

static uint64_t key_of(uint32_t block, uint64_t page)
{
    return (uint64_t)block << 44 | (page & ((1ull << 44) - 1));
}

SfReasm *sf_reasm_new(unsigned max_partial)
{
    SfReasm *r = g_new0(SfReasm, 1);

    r->max = MAX(max_partial, 1);
    r->slots = g_new0(Slot, r->max);
    r->free_slots = g_array_sized_new(FALSE, FALSE, sizeof(unsigned), r->max);
    for (unsigned i = r->max; i > 0; i--) {
        unsigned x = i - 1;
        g_array_append_val(r->free_slots, x);
    }
    r->index = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    return r;
}

void sf_reasm_free(SfReasm *r)
{
    if (r) {
        g_hash_table_destroy(r->index);
        g_array_free(r->free_slots, TRUE);
        g_free(r->slots);
        g_free(r);
    }
}

static void slot_release(SfReasm *r, unsigned i)
{
    g_hash_table_remove(r->index, &r->slots[i].key);
    g_array_append_val(r->free_slots, i);
    r->st.partial--;
}

static unsigned slot_take(SfReasm *r, uint64_t key)
{
    unsigned i;
    uint64_t *k;

    if (r->free_slots->len == 0) {
        unsigned old = 0;
        for (unsigned j = 1; j < r->max; j++) {
            if (r->slots[j].born < r->slots[old].born) {
                old = j;
            }
        }
        slot_release(r, old);
        r->st.dropped_partial++;
    }
    i = g_array_index(r->free_slots, unsigned, r->free_slots->len - 1);
    g_array_set_size(r->free_slots, r->free_slots->len - 1);
    r->slots[i].key = key;
    r->slots[i].born = ++r->clock;
    r->slots[i].have = 0;
    k = g_new(uint64_t, 1);
    *k = key;
    g_hash_table_insert(r->index, k, GUINT_TO_POINTER(i + 1));
    r->st.partial++;
    return i;
}

SfReasmResult sf_reasm_add(SfReasm *r, uint32_t block, uint64_t page,
                           unsigned index, unsigned count, const uint8_t *data,
                           size_t len, const uint8_t **page_out)
{
    size_t want = sf_wire_frag_len(index, count);
    size_t s = count ? (SF_REASM_PAGE + count - 1) / count : 0;
    uint64_t key = key_of(block, page);
    gpointer v;
    Slot *sl;
    unsigned i;

    if (!want || len != want) {
        r->st.bad++;
        return SF_REASM_BAD;
    }
    if (count == 1) {
        memcpy(r->out, data, len);
        *page_out = r->out;
        r->st.completed++;
        return SF_REASM_COMPLETE;
    }
    v = g_hash_table_lookup(r->index, &key);
    i = v ? GPOINTER_TO_UINT(v) - 1 : slot_take(r, key);
    sl = &r->slots[i];
    if (!v) {
        sl->count = count;
    } else if (sl->count != count) {
        r->st.bad++;
        return SF_REASM_BAD;
    }
    if (sl->have & (1u << index)) {
        r->st.duplicates++;
        return SF_REASM_DUP;
    }
    memcpy(sl->data + (size_t)index * s, data, len);
    sl->have |= 1u << index;
    if (sl->have != (count == 32 ? 0xffffffffu : (1u << count) - 1)) {
        return SF_REASM_MORE;
    }
    memcpy(r->out, sl->data, SF_REASM_PAGE);
    slot_release(r, i);
    *page_out = r->out;
    r->st.completed++;
    return SF_REASM_COMPLETE;
}

void sf_reasm_forget(SfReasm *r, uint32_t block, uint64_t page)
{
    uint64_t key = key_of(block, page);
    gpointer v = g_hash_table_lookup(r->index, &key);

    if (v) {
        slot_release(r, GPOINTER_TO_UINT(v) - 1);
    }
}

void sf_reasm_stats(const SfReasm *r, SfReasmStats *st)
{
    *st = r->st;
}
