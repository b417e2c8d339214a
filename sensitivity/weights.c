/*
 * weights.c - a layer's weights quantized by its quantizer: every weight
 * width at once for the measurement (GPTQ's factor once per group and
 * inputs, ERQ from rows or from sums), and one candidate with its grid
 * (scales, zero points, GPTQ's column order) for the plan's weights.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_llama.h"
#include "ggml.h"
#include "sensctx.h"

static const char *const wq_names[BP_WQ_COUNT] = {"rtn", "gptq", "squant", "erq", "ggml"};

const char *bp_wquantizer_name(bp_wquantizer q)
{
    return (unsigned)q < BP_WQ_COUNT ? wq_names[q] : "?";
}

int bp_wquantizer_parse(const char *name)
{
    for (int i = 0; i < BP_WQ_COUNT; i++)
        if (strcmp(name, wq_names[i]) == 0)
            return i;
    return -1;
}

bp_qspec bp_sens_weight_grid(const bp_sens_spec *spec, bp_wquantizer q)
{
    bp_qspec g = spec->weights;
    if (q == BP_WQ_SQUANT) {
        g.granularity = BP_GRAN_CHANNEL;
        g.symmetric = 0;
        g.range = BP_RANGE_MINMAX;
        g.group_size = 0;
    } else if (q == BP_WQ_ERQ && spec->erq_grid) {   /* ERQ's search, asymmetric */
        g.symmetric = 0;
        g.range = BP_RANGE_ERQ_W;
    }
    return g;
}

/* GPTQ's factor of group j in single precision from the error stage's Gram
 * of the same inputs (the cache's, or made here and left in the cache):
 * H = 2 Gb, the same bits bp_gptq_factor_build forms alone. */
static int gptq_factor_shared(const bp_layer *l, const bp_sens_spec *spec, const float *X, int j,
                              bp_sens_cache *c, const bp_qspec *akey, bp_gptq_factor *f,
                              bp_error *err)
{
    int64_t d = l->in, col0 = (int64_t)j * l->in;
    bp_sx_key gk = bp_sx_make_key(0, akey, l->n, col0, d, 1, NULL);
    bp_sens_entry *ge = bp_sx_find(c, &gk);
    bp_gram own = {0};
    const bp_gram *g = &own;
    double *H = bp_malloc((size_t)(d * d) * sizeof(double), err);
    int rc = H ? 0 : -1;
    if (rc == 0 && ge) {
        g = &ge->gram;
        c->hits++;
    } else if (rc == 0) {
        rc = bp_gram_build_prec(&own, X, NULL, l->n, l->in * l->groups, col0, d, 0, 1, err);
        if (rc == 0 && (ge = bp_sx_add(c, &gk))) {
            bp_gram_lend(&ge->gram, &own);     /* the error stage will find it */
            g = &ge->gram;
        }
    }
    if (rc == 0)
        rc = bp_gram_hessian(g, 2.0, H, err);
    if (rc == 0)
        rc = bp_gptq_factor_from_hessian(f, H, d, &spec->gptq, err);
    free(H);
    bp_gram_free(&own);
    return rc;
}

/* GPTQ's factor of group j from statistics: H = 2 qtq / n in double. */
static int gptq_factor_stats(const bp_layer *l, const bp_sens_spec *spec, const bp_stats_grid *sg,
                             int j, bp_gptq_factor *f, bp_error *err)
{
    bp_gram_stats st = bp_sx_group_stats(l, sg, j);
    int64_t d = l->in;
    double *H = bp_malloc((size_t)(d * d) * sizeof(double), err);
    if (!H)
        return -1;
    for (int64_t i = 0; i < d * d; i++)
        H[i] = 2.0 * st.qtq[i] / (double)l->n;
    int rc = bp_gptq_factor_from_hessian(f, H, d, &spec->gptq, err);
    free(H);
    return rc;
}

/* ERQ's sums from statistics: G = A^T A (da x da), DA = dX^T A (d x da),
 * A = [Xbar | 1] with a bias (da = d + 1). */
static int erq_sums_stats(const bp_layer *l, const bp_stats_grid *sg, double **G, double **DA,
                          bp_error *err)
{
    bp_gram_stats st = bp_sx_group_stats(l, sg, 0);
    int64_t d = l->in, da = d + (l->bias ? 1 : 0);
    *G = bp_malloc((size_t)(da * da) * sizeof(double), err);
    *DA = bp_calloc((size_t)(d * da), sizeof(double), err);
    if (!*G || !*DA)
        return -1;
    for (int64_t i = 0; i < d; i++) {
        for (int64_t j = 0; j < d; j++) {
            (*G)[i * da + j] = st.qtq[i * d + j];
            if (st.qtx)      /* dX^T Xbar = Xbar^T Xbar - X^T Xbar */
                (*DA)[i * da + j] = st.qtq[i * d + j] - st.qtx[j * d + i];
        }
        if (da > d) {
            (*G)[i * da + d] = (*G)[d * da + i] = st.qsum[i];
            if (st.qtx)
                (*DA)[i * da + d] = st.qsum[i] - l->stats->xsum[i];
        }
    }
    if (da > d)
        (*G)[d * da + d] = (double)l->n;
    return 0;
}

/* GPTQ per conv group, with the Hessian of the inputs X (n x in*groups),
 * for n_b weight widths bits[b] into What[b]; scale and zero (per row and
 * scale group, one width only) may be NULL.  Each group's factor is built once for all
 * widths.  A per-tensor grid is fitted once on the whole weight tensor and
 * shared by the groups, so that the layer has one grid as its granularity
 * says. */
static int gptq_grouped(const bp_layer *l, const bp_sens_spec *spec, const int *bits, size_t n_b,
                        const float *X, const bp_stats_grid *sg, float *const *What, float *scale,
                        float *zero, int32_t *g_idx, bp_sens_cache *c, const bp_qspec *akey,
                        bp_error *err)
{
    int64_t og = l->out / l->groups, ng = bp_grid_groups(&spec->weights, l->in);
    float *grids = bp_malloc(2 * n_b * sizeof(float), err);
    if (!grids)
        return -1;
    for (size_t b = 0; b < n_b; b++)
        if (spec->weights.granularity == BP_GRAN_TENSOR && l->groups > 1 &&
            bits[b] < BP_BITS_FLOAT) {
            bp_qspec q = spec->weights;
            q.bits = bits[b];
            bp_qspec_fit(&q, l->W, (size_t)(l->out * l->in), &grids[2 * b], &grids[2 * b + 1]);
        }
    int rc = 0, any = 0;
    for (size_t b = 0; b < n_b; b++) {
        any |= bits[b] < BP_BITS_FLOAT;
        if (bits[b] >= BP_BITS_FLOAT)
            memcpy(What[b], l->W, (size_t)(l->out * l->in) * sizeof(float));
    }
    for (int j = 0; any && rc == 0 && j < l->groups; j++) {
        int64_t off = (int64_t)j * og * l->in;
        bp_gptq_factor own = {0};
        const bp_gptq_factor *f = &own;
        bp_sx_key k = bp_sx_make_key(1, akey, l->n, (int64_t)j * l->in, l->in,
                                     spec->gptq.precision, &spec->gptq);
        bp_sens_entry *e = c ? bp_sx_find(c, &k) : NULL;
        if (e) {
            f = &e->f;
            c->hits++;
        } else if (l->stats) {      /* H = 2 Xbar^T Xbar / n from the sums */
            rc = gptq_factor_stats(l, spec, sg, j, &own, err);
            if (rc == 0 && c && (e = bp_sx_add(c, &k))) {
                e->f = own;
                memset(&own, 0, sizeof own);
                f = &e->f;
            }
        } else {
            rc = c && spec->gptq.precision != BP_GPTQ_DOUBLE
                     ? gptq_factor_shared(l, spec, X, j, c, akey, &own, err)
                     : bp_gptq_factor_build(&own, X, l->n, l->in * l->groups,
                                            (int64_t)j * l->in, l->in, &spec->gptq, err);
            if (rc == 0 && c && (e = bp_sx_add(c, &k))) {
                e->f = own;                     /* kept for the next of these inputs */
                memset(&own, 0, sizeof own);
                f = &e->f;
            }
        }
        if (rc < 0)
            break;
        for (size_t b = 0; rc == 0 && b < n_b; b++) {
            bp_qspec q = spec->weights;
            bp_gptq_opts o = spec->gptq;
            q.bits = bits[b];
            if (q.granularity == BP_GRAN_TENSOR && l->groups > 1)
                o.tensor_grid = &grids[2 * b];
            rc = bp_gptq_quantize_factored(f, l->W + off, og, &q, &o, What[b] + off,
                                           scale ? scale + j * og * ng : NULL,
                                           zero ? zero + j * og * ng : NULL,
                                           g_idx ? g_idx + (int64_t)j * l->in : NULL, err);
        }
        bp_gptq_factor_free(&own);
    }
    free(grids);
    return rc;
}

static int erq_squant_rtn(const bp_layer *l, const bp_sens_spec *spec, const float *Xin,
                          const double *G, const double *DA, float *const *What,
                          float *const *bhat, bp_error *err);

int bp_sx_ggml_type(const bp_layer *l, int type)
{
    return bp_llama_fallback(type, l->in * l->groups);
}

/*
 * llama.cpp's types: every row quantized by ggml's reference quantizer for
 * the type llama-quantize writes (the one asked for, or its fallback when
 * the row does not fill the type's blocks), with the row's importance
 * weights (its matrix's, for stacked experts) when the layer has them, and
 * dequantized: the weights llama.cpp will compute with.
 */
static int ggml_all(const bp_layer *l, const bp_sens_spec *spec, float *const *What,
                    bp_error *err)
{
    int64_t in = l->in * l->groups, nm = l->diag ? l->diag->n_mat : 1;
    int64_t per = l->out / (nm > 0 ? nm : 1);
    const float *qw = l->diag ? l->diag->qw : NULL;
    for (size_t b = 0; b < spec->n_wbits; b++) {
        int type = bp_sx_ggml_type(l, spec->ggml_types[b]);
        if (type < 0)
            return bp_fail(err, "rows of %lld elements do not fill %s's blocks and llama-quantize "
                           "has no fallback for it (it stops); leave %s out for this layer",
                           (long long)in, bp_ggml_type_name(spec->ggml_types[b]),
                           bp_ggml_type_name(spec->ggml_types[b]));
        unsigned char *q = bp_malloc((size_t)bp_ggml_row_bytes(type, in), err);
        if (!q)
            return -1;
        for (int64_t r = 0; r < l->out; r++) {
            const float *w = qw ? qw + (r / per) * in : NULL;
            bp_ggml_quantize_row(type, l->W + r * in, in, w, q);
            bp_ggml_dequantize_row(type, q, in, What[b] + r * in);
        }
        free(q);
    }
    return 0;
}

int bp_sx_weights_all(const bp_layer *l, const bp_sens_spec *spec, const float *Xin,
                      const bp_stats_grid *sg, float *const *What, float *const *bhat,
                      bp_sens_cache *c, const bp_qspec *akey, bp_error *err)
{
    if (spec->quantizer == BP_WQ_GGML)
        return ggml_all(l, spec, What, err);
    if (spec->quantizer == BP_WQ_GPTQ)
        return gptq_grouped(l, spec, spec->wbits, spec->n_wbits, Xin, sg, What, NULL, NULL,
                            NULL, c, akey, err);
    double *G = NULL, *DA = NULL;
    if (spec->quantizer == BP_WQ_ERQ && l->stats && l->groups == 1 &&
        erq_sums_stats(l, sg, &G, &DA, err) < 0) {
        free(G);
        free(DA);
        return -1;
    }
    int rc = erq_squant_rtn(l, spec, Xin, G, DA, What, bhat, err);
    free(G);
    free(DA);
    return rc;
}

/* weights_all for the quantizers but GPTQ (ERQ from sums G, DA when given). */
static int erq_squant_rtn(const bp_layer *l, const bp_sens_spec *spec, const float *Xin,
                          const double *G, const double *DA, float *const *What,
                          float *const *bhat, bp_error *err)
{
    for (size_t b = 0; b < spec->n_wbits; b++) {
        int rc, bits = spec->wbits[b];
        if (spec->quantizer == BP_WQ_ERQ) {
            bp_qspec q = bp_sens_weight_grid(spec, BP_WQ_ERQ);
            q.bits = bits;
            if (l->groups != 1)
                return bp_fail(err, "erq does not handle grouped convolutions (%d groups); "
                               "use rtn, gptq or squant for this layer", l->groups);
            rc = l->stats ? bp_erq_quantize_sums(l->W, l->bias, l->out, l->in, G, DA, l->n, &q,
                                                 &spec->erq, What[b], bhat ? bhat[b] : NULL,
                                                 NULL, NULL, err)
                          : bp_erq_quantize(l->W, l->bias, l->out, l->in, l->X, Xin, l->n, &q,
                                            &spec->erq, What[b], bhat ? bhat[b] : NULL, NULL,
                                            NULL, err);
        } else if (spec->quantizer == BP_WQ_SQUANT) {
            rc = bp_squant_quantize(l->W, l->out, l->in, (int64_t)l->kh * l->kw, bits,
                                    spec->squant_mode, spec->weights.fp16_scales, What[b],
                                    NULL, err);
        } else {
            rc = bp_quantize_weights(l, &spec->weights, bits, What[b], err);
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

int bp_quantize_weights(const bp_layer *l, const bp_qspec *wspec, int bits,
                        float *out, bp_error *err)
{
    bp_qspec q = *wspec;
    q.bits = bits;
    return bp_quantize_matrix(l->W, out, l->out, l->in, &q, err);
}

/* SQuant's row grids in the unsigned convention: its signed codes r and
 * z give w = (r + z) / s = (1/s) * ((r + 2^(b-1)) - (2^(b-1) - z)). */
static void squant_grid(const bp_layer *l, int bits, int fp16, int64_t ng, float *scale,
                        float *zero)
{
    double half = ldexp(1.0, bits - 1);
    for (int64_t r = 0; r < l->out; r++) {
        double s = 1.0, z = half;            /* a constant row: kept exactly */
        bp_squant_row_grid(l->W + r * l->in, l->in, bits, fp16, &s, &z);
        for (int64_t g = 0; g < ng; g++) {
            scale[r * ng + g] = (float)(1.0 / s);
            zero[r * ng + g] = (float)(half - z);
        }
    }
}

int64_t bp_grid_groups(const bp_qspec *q, int64_t in)
{
    return q->granularity == BP_GRAN_GROUP && q->group_size > 0
               ? (in + q->group_size - 1) / q->group_size : 1;
}

int bp_grid_compact(const float *es, const float *ez, int64_t out, int64_t in,
                    const bp_qspec *q, float *scale, float *zero, const char *name,
                    bp_error *err)
{
    int64_t ng = bp_grid_groups(q, in), gs = ng > 1 ? q->group_size : in;
    for (int64_t r = 0; r < out; r++) {
        const float *e = es + r * in, *z = ez + r * in;
        float *S = scale + r * ng, *Z = zero + r * ng;
        int bad = 0;
        for (int64_t g = 0; g < ng; g++)
            S[g] = e[g * gs], Z[g] = z[g * gs];
        for (int64_t j = 0; j < in; j++)
            bad |= (e[j] != S[j / gs]) | (z[j] != Z[j / gs]);
        if (bad)
            return bp_fail(err, "layer '%s': the grid is not constant over its %s block (row "
                           "%lld; internal error)", name, bp_granularity_name(q->granularity),
                           (long long)r);
    }
    return 0;
}

int bp_quantize_candidate(const bp_layer *l, const bp_sens_spec *spec, int wbits, int abits,
                          float *What, float *bhat, float *scale, float *zero, int32_t *g_idx,
                          bp_error *err)
{
    int64_t nx = l->n * l->in * l->groups;
    float *Xq = NULL;
    const float *xin = l->X;
    int rc = 0;
    if (bhat && l->bias)
        memcpy(bhat, l->bias, (size_t)l->out * sizeof *bhat);
    const bp_stats_grid *sg = NULL;
    if (bp_sx_uses_inputs(spec)) {
        if (!bp_sx_has_data(l))
            return bp_fail(err, "layer '%s': %s needs calibration inputs", l->name,
                           bp_wquantizer_name(spec->quantizer));
        for (size_t a = 0; l->stats && abits < BP_BITS_FLOAT && a < spec->n_abits; a++)
            if (spec->abits[a] == abits && l->stats->grid && l->stats->grid[a].qtq)
                sg = &l->stats->grid[a];
        if (l->stats && abits < BP_BITS_FLOAT && !sg)
            return bp_fail(err, "layer '%s': no statistics for %d-bit activations", l->name,
                           abits);
        if (abits < BP_BITS_FLOAT && !l->stats) {
            bp_qspec a = spec->acts;
            a.bits = abits;
            if (!(Xq = bp_malloc((size_t)nx * sizeof *Xq, err)) ||
                bp_quantize_matrix(l->X, Xq, l->n, l->in * l->groups, &a, err) < 0) {
                free(Xq);
                return -1;
            }
            xin = Xq;
        }
    }
    bp_qspec q = bp_sens_weight_grid(spec, spec->quantizer);
    q.bits = wbits;
    /* GPTQ and SQuant give the grid per row and group; the others per
     * element: into es, ez, then compacted */
    int per_element = scale && zero && spec->quantizer != BP_WQ_GPTQ &&
                      spec->quantizer != BP_WQ_SQUANT;
    size_t nel = (size_t)(l->out * l->in);
    float *es = per_element ? bp_malloc(nel * sizeof(float), err) : NULL;
    float *ez = per_element ? bp_malloc(nel * sizeof(float), err) : NULL;
    if (per_element && (!es || !ez)) {
        free(es);
        free(ez);
        free(Xq);
        return -1;
    }
    switch (spec->quantizer) {
    case BP_WQ_GPTQ:
        rc = gptq_grouped(l, spec, &wbits, 1, xin, sg, &What, scale, zero, g_idx, NULL, NULL,
                          err);
        g_idx = NULL;                /* filled in GPTQ's column order */
        break;
    case BP_WQ_ERQ:
        if (l->groups != 1)
            rc = bp_fail(err, "layer '%s': erq does not handle grouped convolutions", l->name);
        else if (l->stats) {
            double *G = NULL, *DA = NULL;
            rc = erq_sums_stats(l, sg, &G, &DA, err);
            if (rc == 0)
                rc = bp_erq_quantize_sums(l->W, l->bias, l->out, l->in, G, DA, l->n, &q,
                                          &spec->erq, What, l->bias ? bhat : NULL, es, ez, err);
            free(G);
            free(DA);
        } else
            rc = bp_erq_quantize(l->W, l->bias, l->out, l->in, l->X, xin, l->n, &q, &spec->erq,
                                 What, l->bias ? bhat : NULL, es, ez, err);
        break;
    case BP_WQ_SQUANT:
        rc = bp_squant_quantize(l->W, l->out, l->in, (int64_t)l->kh * l->kw, wbits,
                                spec->squant_mode, q.fp16_scales, What, NULL, err);
        if (rc == 0 && scale && zero)
            squant_grid(l, wbits, q.fp16_scales, bp_grid_groups(&q, l->in), scale, zero);
        break;
    default:
        rc = bp_quantize_matrix_grid(l->W, What, l->out, l->in, &q, es, ez, err);
        break;
    }
    if (rc == 0 && es)
        rc = bp_grid_compact(es, ez, l->out, l->in, &q, scale, zero, l->name, err);
    free(es);
    free(ez);
    int64_t gs = q.granularity == BP_GRAN_GROUP ? q.group_size : l->in;
    for (int64_t c = 0; rc == 0 && g_idx && c < l->in * l->groups; c++)
        g_idx[c] = (int32_t)((c % l->in) / gs);     /* the columns' own order */
    free(Xq);
    return rc;
}
