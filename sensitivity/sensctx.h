/*
 * sensctx.h - what the measurement (sensitivity.c), the weight quantizers'
 * driver (weights.c) and the cache of shared inputs (inputs.c) share.
 * Internal to sensitivity/.
 */
#ifndef BP_SENSCTX_H
#define BP_SENSCTX_H

#include <stdint.h>

#include "gram.h"
#include "sensitivity.h"

/* ---- a layer's data ------------------------------------------------------ */

/* Does the layer have calibration data (rows, statistics, or diagonal
 * statistics: an importance matrix, or an embedding table's rows)? */
static inline int bp_sx_has_data(const bp_layer *l)
{
    return (l->X || l->stats || (l->diag && (l->diag->d || l->diag->row_w > 0))) && l->n > 0;
}

/* Only diagonal statistics: errors by bp_sx_diag_errors. */
static inline int bp_sx_diag_only(const bp_layer *l)
{
    return !l->X && !l->stats && bp_sx_has_data(l);
}

/* Group j's statistics at one activation width (sg NULL: float inputs). */
static inline bp_gram_stats bp_sx_group_stats(const bp_layer *l, const bp_stats_grid *sg, int j)
{
    int64_t d = l->in, dd = d * d;
    const bp_stats *st = l->stats;
    bp_gram_stats g = {l->n, d, sg ? sg->qtq + j * dd : st->xtx + j * dd,
                       sg ? sg->qtx + j * dd : NULL, st->xtx + j * dd,
                       sg ? sg->qsum + j * d : st->xsum + j * d};
    return g;
}

/* Quantizers whose weights depend on the (quantized) inputs. */
static inline int bp_sx_uses_inputs(const bp_sens_spec *spec)
{
    return spec->quantizer == BP_WQ_GPTQ || spec->quantizer == BP_WQ_ERQ;
}

/* ---- the cache of shared inputs (inputs.c) ------------------------------- */

/* What an entry was made from: the inputs' activation settings (bits 16:
 * float inputs), the columns and, for GPTQ, the options the factor depends
 * on.  Built with memset so that it compares with memcmp. */
typedef struct bp_sx_key {
    int kind;                 /* 0: a Gram, 1: a GPTQ factor */
    bp_qspec acts;
    int64_t n, col0, d;
    int single;               /* Gram: precision; factor: GPTQ precision */
    double damp;
    int act_order;
} bp_sx_key;

typedef struct bp_sens_entry {
    bp_sx_key key;
    bp_gram gram;
    bp_gptq_factor f;
} bp_sens_entry;

/* The key of a Gram (kind 0; single: its precision) or a GPTQ factor (kind
 * 1; single: GPTQ's precision, o its options) of n rows of columns
 * col0..col0+d of inputs quantized as acts (NULL: float inputs). */
bp_sx_key bp_sx_make_key(int kind, const bp_qspec *acts, int64_t n, int64_t col0, int64_t d,
                         int single, const bp_gptq_opts *o);
/* The entry made from k, or NULL (c may be NULL). */
bp_sens_entry *bp_sx_find(bp_sens_cache *c, const bp_sx_key *k);
/* Drop the layer totals kept for the current weights (sensitivity.c). */
void bp_sx_share_free(bp_sens_cache *c);
/* A new zeroed entry for k, or NULL (no memory: the cache simply misses). */
bp_sens_entry *bp_sx_add(bp_sens_cache *c, const bp_sx_key *k);

/* ---- diagonal statistics (diag.c) ---------------------------------------- */

/* values[(b * n_abits + a) * BP_METRIC_COUNT + m] from the layer's diagonal
 * statistics: What[b] for bitplan's quantizers, or (ggml types) the rows
 * quantized one at a time. */
int bp_sx_diag_values(const bp_layer *l, const bp_sens_spec *spec, float *const *What,
                      double *values, bp_error *err);

/* ---- the weights (weights.c) --------------------------------------------- */

/* The ggml type llama-quantize writes for a layer asked to be `type` (its
 * fallback when the rows do not fill the type's blocks), or -1. */
int bp_sx_ggml_type(const bp_layer *l, int type);

/* What[b] (and, for ERQ, its new bias bhat[b]) for every weight width of
 * spec; Xin is what the layer sees (quantized or not), sg its statistics at
 * that activation width, akey the activation settings for the cache c. */
int bp_sx_weights_all(const bp_layer *l, const bp_sens_spec *spec, const float *Xin,
                      const bp_stats_grid *sg, float *const *What, float *const *bhat,
                      bp_sens_cache *c, const bp_qspec *akey, bp_error *err);

/* The bytes the layer totals' d x d matrices may keep across activation
 * widths (default 1 GiB; tests lower it to exercise the other path). */
void bp_sx_set_totals_keep(size_t bytes);
/* How many layer-widths have been measured through the totals so far. */
size_t bp_sx_totals_count(void);
/* How many dW^T dW have been formed in float32 so far, and how many of
 * their contractions were redone in double (the estimate past 1e-6). */
void bp_sx_single_m_counts(size_t *made, size_t *redone);
/* The bound those estimates must meet (default 1e-6; tests: 0 redoes all). */
void bp_sx_set_single_m_tol(double tol);

#endif
