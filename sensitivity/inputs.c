/*
 * inputs.c - the cache of what measurements of the same calibration inputs
 * share (sensitivity.h, bp_sens_cache): Grams and GPTQ factors, keyed by
 * the settings they were made from.
 */
#include <stdlib.h>
#include <string.h>

#include "sensctx.h"


void bp_sens_cache_reset(bp_sens_cache *c)
{
    bp_sx_share_free(c);
    for (size_t i = 0; i < c->n; i++) {
        bp_gram_free(&c->e[i].gram);
        bp_gptq_factor_free(&c->e[i].f);
    }
    c->n = 0;
}

void bp_sens_cache_free(bp_sens_cache *c)
{
    bp_sens_cache_reset(c);
    free(c->e);
    memset(c, 0, sizeof *c);
}

bp_sx_key bp_sx_make_key(int kind, const bp_qspec *acts, int64_t n, int64_t col0, int64_t d,
                         int single, const bp_gptq_opts *o)
{
    bp_sx_key k;
    memset(&k, 0, sizeof k);
    k.kind = kind, k.n = n, k.col0 = col0, k.d = d, k.single = single;
    if (acts)
        k.acts = *acts;
    else
        k.acts.bits = BP_BITS_FLOAT;
    if (o)
        k.damp = o->damp, k.act_order = o->act_order;
    return k;
}

bp_sens_entry *bp_sx_find(bp_sens_cache *c, const bp_sx_key *k)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (memcmp(&c->e[i].key, k, sizeof *k) == 0)
            return &c->e[i];
    return NULL;
}

bp_sens_entry *bp_sx_add(bp_sens_cache *c, const bp_sx_key *k)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 8;
        bp_sens_entry *e = realloc(c->e, cap * sizeof *e);
        if (!e)
            return NULL;
        c->e = e, c->cap = cap;
    }
    bp_sens_entry *e = &c->e[c->n++];
    memset(e, 0, sizeof *e);
    e->key = *k;
    return e;
}
