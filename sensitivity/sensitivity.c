/*
 * sensitivity.c - the per-layer measurement loop: quantize weights once per
 * weight width, activations once per activation width, then read every
 * candidate's error off the Gram of [X, dX] (ALGORITHMS.md section 4).
 */
#include "sensitivity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_profile.h"
#include "gram.h"

static const char *const wq_names[BP_WQ_COUNT] = {"rtn", "gptq", "squant", "erq"};

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

int bp_sens_needs_data(const bp_sens_spec *spec)
{
    return spec->metric != BP_METRIC_WEIGHT || spec->quantizer == BP_WQ_GPTQ ||
           spec->quantizer == BP_WQ_ERQ;
}

/* Does the layer have calibration data (rows or statistics)? */
static int has_data(const bp_layer *l)
{
    return (l->X || l->stats) && l->n > 0;
}

/* Group j's statistics at one activation width (sg NULL: float inputs). */
static bp_gram_stats group_stats(const bp_layer *l, const bp_stats_grid *sg, int j)
{
    int64_t d = l->in, dd = d * d;
    const bp_stats *st = l->stats;
    bp_gram_stats g = {l->n, d, sg ? sg->qtq + j * dd : st->xtx + j * dd,
                       sg ? sg->qtx + j * dd : NULL, st->xtx + j * dd,
                       sg ? sg->qsum + j * d : st->xsum + j * d};
    return g;
}

/* Quantizers whose weights depend on the (quantized) inputs. */
static int uses_inputs(const bp_sens_spec *spec)
{
    return spec->quantizer == BP_WQ_GPTQ || spec->quantizer == BP_WQ_ERQ;
}

/* ---- the cache of shared inputs (sensitivity.h) ---------------------------- */

/* What an entry was made from: the inputs' activation settings (bits 16:
 * float inputs), the columns and, for GPTQ, the options the factor depends
 * on.  Built with memset so that it compares with memcmp. */
typedef struct sens_key {
    int kind;                 /* 0: a Gram, 1: a GPTQ factor */
    bp_qspec acts;
    int64_t n, col0, d;
    int single;               /* Gram: precision; factor: GPTQ precision */
    double damp;
    int act_order;
} sens_key;

typedef struct bp_sens_entry {
    sens_key key;
    bp_gram gram;
    bp_gptq_factor f;
} bp_sens_entry;

void bp_sens_cache_reset(bp_sens_cache *c)
{
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

static sens_key make_key(int kind, const bp_qspec *acts, int64_t n, int64_t col0, int64_t d,
                         int single, const bp_gptq_opts *o)
{
    sens_key k;
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

static bp_sens_entry *cache_find(bp_sens_cache *c, const sens_key *k)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (memcmp(&c->e[i].key, k, sizeof *k) == 0)
            return &c->e[i];
    return NULL;
}

/* A new zeroed entry for k, or NULL (no memory: the cache simply misses). */
static bp_sens_entry *cache_add(bp_sens_cache *c, const sens_key *k)
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

/* GPTQ's factor of group j in single precision from the error stage's Gram
 * of the same inputs (the cache's, or made here and left in the cache):
 * H = 2 Gb, the same bits bp_gptq_factor_build forms alone. */
static int gptq_factor_shared(const bp_layer *l, const bp_sens_spec *spec, const float *X, int j,
                              bp_sens_cache *c, const bp_qspec *akey, bp_gptq_factor *f,
                              bp_error *err)
{
    int64_t d = l->in, col0 = (int64_t)j * l->in;
    sens_key gk = make_key(0, akey, l->n, col0, d, 1, NULL);
    bp_sens_entry *ge = cache_find(c, &gk);
    bp_gram own = {0};
    const bp_gram *g = &own;
    double *H = bp_malloc((size_t)(d * d) * sizeof(double), err);
    int rc = H ? 0 : -1;
    if (rc == 0 && ge) {
        g = &ge->gram;
        c->hits++;
    } else if (rc == 0) {
        rc = bp_gram_build_prec(&own, X, NULL, l->n, l->in * l->groups, col0, d, 0, 1, err);
        if (rc == 0 && (ge = cache_add(c, &gk))) {
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
    bp_gram_stats st = group_stats(l, sg, j);
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
    bp_gram_stats st = group_stats(l, sg, 0);
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
 * for n_b weight widths bits[b] into What[b]; scale and zero (per element,
 * one width only) may be NULL.  Each group's factor is built once for all
 * widths.  A per-tensor grid is fitted once on the whole weight tensor and
 * shared by the groups, so that the layer has one grid as its granularity
 * says. */
static int gptq_grouped(const bp_layer *l, const bp_sens_spec *spec, const int *bits, size_t n_b,
                        const float *X, const bp_stats_grid *sg, float *const *What, float *scale,
                        float *zero, int32_t *g_idx, bp_sens_cache *c, const bp_qspec *akey,
                        bp_error *err)
{
    int64_t og = l->out / l->groups;
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
        sens_key k = make_key(1, akey, l->n, (int64_t)j * l->in, l->in,
                              spec->gptq.precision, &spec->gptq);
        bp_sens_entry *e = c ? cache_find(c, &k) : NULL;
        if (e) {
            f = &e->f;
            c->hits++;
        } else if (l->stats) {      /* H = 2 Xbar^T Xbar / n from the sums */
            rc = gptq_factor_stats(l, spec, sg, j, &own, err);
            if (rc == 0 && c && (e = cache_add(c, &k))) {
                e->f = own;
                memset(&own, 0, sizeof own);
                f = &e->f;
            }
        } else {
            rc = c && spec->gptq.precision != BP_GPTQ_DOUBLE
                     ? gptq_factor_shared(l, spec, X, j, c, akey, &own, err)
                     : bp_gptq_factor_build(&own, X, l->n, l->in * l->groups,
                                            (int64_t)j * l->in, l->in, &spec->gptq, err);
            if (rc == 0 && c && (e = cache_add(c, &k))) {
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
                                           scale ? scale + off : NULL, zero ? zero + off : NULL,
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

/* What[b] (and, for ERQ, its new bias bhat[b]) for every weight width;
 * Xin is what the layer sees (quantized or not). */
static int weights_all(const bp_layer *l, const bp_sens_spec *spec, const float *Xin,
                       const bp_stats_grid *sg, float *const *What, float *const *bhat,
                       bp_sens_cache *c, const bp_qspec *akey, bp_error *err)
{
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

/* What one activation width's errors give per weight width (summed over
 * conv groups): the mse, the grad2-weighted and the K-FAC loss increases,
 * and the decision Fisher's trace. */
typedef struct errs {
    double *mse, *fisher, *kfac, *margin;   /* n_w each */
    double energy;                 /* sum_r ||W_r X^T||^2 / n */
} errs;

/* One output factor of the layer in double, one bp_gram_fisher per group. */
typedef struct fisher_d {
    bp_gram_fisher *g;             /* groups of them, or NULL without a factor */
    double *buf;
} fisher_d;

static void fisher_d_free(fisher_d *f)
{
    free(f->g);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* The layer's factors: [0] the loss Fisher (kfac), [1] the decision Fisher
 * (margin), in the slots of bp_gram_factors. */
static const bp_ofactor *factor_of(const bp_layer *l, int i)
{
    return i == 0 ? l->ofactor : l->mfactor;
}

static int fisher_d_init(fisher_d *f, const bp_ofactor *o, bp_error *err)
{
    memset(f, 0, sizeof *f);
    if (!o)
        return 0;
    int64_t og = o->og, k = o->rank, per = k ? k * og + k + 2 * og : og * og;
    f->g = bp_calloc((size_t)o->groups, sizeof *f->g, err);
    f->buf = bp_malloc((size_t)(per * o->groups) * sizeof(double), err);
    if (!f->g || !f->buf)
        return -1;
    for (int64_t j = 0; j < o->groups; j++) {
        double *p = f->buf + j * per;
        bp_gram_fisher *g = &f->g[j];
        g->rank = k;
        if (!k) {
            for (int64_t i = 0; i < og * og; i++)
                p[i] = o->F[j * og * og + i];
            g->F = p;
            continue;
        }
        for (int64_t i = 0; i < k * og; i++)
            p[i] = o->U[j * k * og + i];
        for (int64_t i = 0; i < k; i++)
            p[k * og + i] = o->s[j * k + i];
        for (int64_t i = 0; i < og; i++)
            p[k * og + k + i] = o->d[j * og + i];
        for (int64_t i = 0; o->n && i < og; i++)
            p[k * og + k + og + i] = o->n[j * og + i];
        g->U = p, g->s = p + k * og, g->d = p + k * og + k;
        g->n = o->n ? p + k * og + k + og : NULL;
    }
    return 0;
}

/* Errors of every weight width at one activation width.  yc (one per
 * group, or NULL) carries W X^T from one activation width to the next. */
static int errors_at_abits(const bp_layer *l, const float *Xq, const bp_stats_grid *sg,
                           float *const *What, size_t n_w, bp_ycache *yc, const fisher_d *fd,
                           int single, bp_sens_cache *c, const bp_qspec *akey, errs *out,
                           bp_error *err)   /* fd: BP_GRAM_FACTORS of them */
{
    const float *g2 = l->grad2;
    int64_t og = l->out / l->groups, ld = l->in * l->groups;
    double *row = bp_malloc((size_t)og * sizeof(double), err);
    if (!row)
        return -1;
    for (size_t b = 0; b < n_w; b++)
        out->mse[b] = out->fisher[b] = out->kfac[b] = out->margin[b] = 0.0;
    out->energy = 0.0;
    int dense = 0;                 /* the widest dense factor's rows, for the cost model */
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        dense |= fd[i].g && !fd[i].g[0].rank;
    /* from statistics the check reads 4 rows' forms off qtq: single pays at any n */
    single = single && (l->stats ? l->in >= BP_GRAM_SINGLE_MIN_IN
                                 : bp_gram_single_pays(l->n, l->in, og, n_w));
    int keep_rows = !l->stats && bp_gram_keep_rows(l->n, l->in, og, Xq != NULL, n_w,
                                                   dense ? og : 0, single);
    for (int j = 0; j < l->groups; j++) {
        bp_gram g;
        int sp = single && n_w > 0;
        bp_gram_stats st = l->stats ? group_stats(l, sg, j) : (bp_gram_stats){0};
        sens_key k = make_key(0, akey, l->n, (int64_t)j * l->in, l->in, sp, NULL);
        bp_sens_entry *e = c && !keep_rows ? cache_find(c, &k) : NULL;
        if (e) {
            if ((l->stats ? bp_gram_borrow_stats(&g, &e->gram, &st, err)
                          : bp_gram_borrow(&g, &e->gram, l->X, Xq, ld, (int64_t)j * l->in,
                                           err)) < 0)
                goto fail;
            c->hits++;
        } else {
            if ((l->stats ? bp_gram_build_stats(&g, &st, sp, err)
                          : bp_gram_build_prec(&g, l->X, Xq, l->n, ld, j * l->in, l->in,
                                               keep_rows, sp, err)) < 0)
                goto fail;
            if (c && !keep_rows && (e = cache_add(c, &k)))
                bp_gram_lend(&e->gram, &g);     /* kept for the next of these inputs */
        }
        if (yc)
            bp_gram_attach_y(&g, &yc[j]);
        const float *W = l->W + (int64_t)j * og * l->in;
        bp_gram_factors fs;
        for (int i = 0; i < BP_GRAM_FACTORS; i++)
            fs.f[i] = fd[i].g ? &fd[i].g[j] : NULL;
        for (size_t b = 0; b < n_w; b++) {
            double tr[BP_GRAM_FACTORS];
            if (bp_gram_row_errors_factors(&g, W, What[b] + (int64_t)j * og * l->in, og, l->in,
                                           &fs, row, tr, err) < 0) {
                bp_gram_free(&g);
                goto fail;
            }
            out->kfac[b] += tr[0];
            out->margin[b] += tr[1];
            for (int64_t r = 0; r < og; r++) {
                out->mse[b] += row[r];
                if (g2)        /* 1/2 sum_r grad2_r e_r: the diagonal of F */
                    out->fisher[b] += 0.5 * (double)g2[(int64_t)j * og + r] * row[r];
            }
        }
        /* after the candidates: the per-weights terms are then formed with the factor */
        if (bp_gram_row_energy(&g, W, og, l->in, row, err) < 0) {
            bp_gram_free(&g);
            goto fail;
        }
        for (int64_t r = 0; r < og; r++)
            out->energy += row[r];
        bp_gram_free(&g);
    }
    free(row);
    return 0;
fail:
    free(row);
    return -1;
}

/* HAWQ's Hessian trace per parameter: 2 ||X||_F^2 / (n * in), over all
 * groups' inputs (each weight sees in of the in * groups columns). */
static double hawq_trace(const bp_layer *l)
{
    double s = 0.0;
    int64_t nx = l->n * l->in * l->groups, d = l->in;
    for (int64_t j = 0; l->stats && j < l->groups; j++)   /* the traces of X^T X */
        for (int64_t i = 0; i < d; i++)
            s += l->stats->xtx[j * d * d + i * d + i];
    for (int64_t i = 0; !l->stats && i < nx; i++)
        s += (double)l->X[i] * l->X[i];
    return 2.0 * s / ((double)l->n * (double)(l->in * l->groups));
}

static double weight_mse(const float *W, const float *What, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)What[i] - W[i];
        s += e * e;
    }
    return n ? s / (double)n : 0.0;
}

/*
 * An ERQ layer with a bias changes its bias too: its errors are read off
 * the augmented layer [W | b] over inputs [X | 1] (DESIGN: the same
 * quadratic form covers the bias).  aug holds the augmented copies.
 */
typedef struct augmented {
    bp_layer view;
    float *X, *Xq, *W, **What;
    bp_stats st;              /* from statistics: the augmented sums */
    bp_stats_grid gr;
    double *sums;
} augmented;

static void aug_free(augmented *g, size_t nw)
{
    free(g->X);
    free(g->Xq);
    free(g->sums);
    free(g->W);
    for (size_t b = 0; g->What && b < nw; b++)
        free(g->What[b]);
    free(g->What);
    memset(g, 0, sizeof *g);
}

static void aug_matrix(const float *A, const float *col, int64_t rows, int64_t cols, float one,
                       float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        memcpy(out + r * (cols + 1), A + r * cols, (size_t)cols * sizeof *out);
        out[r * (cols + 1) + cols] = col ? col[r] : one;
    }
}

static int aug_init(augmented *g, const bp_layer *l, size_t nw, bp_error *err)
{
    int64_t d = l->in + 1, nx = l->stats ? 0 : l->n * d;
    memset(g, 0, sizeof *g);
    if (l->stats)                    /* xtx, qtq, qtx (d^2 each), xsum, qsum (d each) */
        g->sums = bp_malloc((size_t)(3 * d * d + 2 * d) * sizeof(double), err);
    else {
        g->X = bp_malloc((size_t)nx * sizeof(float), err);
        g->Xq = bp_malloc((size_t)nx * sizeof(float), err);
    }
    g->W = bp_malloc((size_t)(l->out * d) * sizeof(float), err);
    g->What = bp_calloc(nw, sizeof(float *), err);
    if ((l->stats ? !g->sums : !g->X || !g->Xq) || !g->W || !g->What)
        return -1;
    for (size_t b = 0; b < nw; b++)
        if (!(g->What[b] = bp_malloc((size_t)(l->out * d) * sizeof(float), err)))
            return -1;
    if (!l->stats)
        aug_matrix(l->X, NULL, l->n, l->in, 1.0f, g->X);
    aug_matrix(l->W, l->bias, l->out, l->in, 0.0f, g->W);
    g->view = *l;
    g->view.in = d, g->view.W = g->W, g->view.X = g->X, g->view.bias = NULL;
    if (l->stats) {
        g->st = *l->stats;
        g->st.xtx = g->sums, g->st.xsum = g->sums + 3 * d * d;
        g->gr = (bp_stats_grid){g->sums + d * d, g->sums + 2 * d * d, g->sums + 3 * d * d + d};
        g->view.stats = &g->st;
    }
    return 0;
}

/* [[S, u], [v^T, n]] ((d + 1) x (d + 1)) from S (d x d) and the sums u, v. */
static void aug_sum(double *out, const double *S, const double *u, const double *v, int64_t d,
                    double n)
{
    int64_t da = d + 1;
    for (int64_t i = 0; i < d; i++) {
        memcpy(out + i * da, S + i * d, (size_t)d * sizeof *out);
        out[i * da + d] = u[i];
        out[d * da + i] = v[i];
    }
    out[d * da + d] = n;
}

/* The statistics of [X | 1] and [Xbar | 1] at one activation width (sg
 * NULL: float inputs): the grid to pass with g->view, or NULL. */
static const bp_stats_grid *aug_stats(augmented *g, const bp_layer *l, const bp_stats_grid *sg)
{
    int64_t d = l->in, da = d + 1;
    double n = (double)l->n, *xs = g->sums + 3 * da * da, *qs = xs + da;
    const bp_stats *st = l->stats;
    aug_sum(g->sums, st->xtx, st->xsum, st->xsum, d, n);   /* [X|1]^T [X|1] */
    memcpy(xs, st->xsum, (size_t)d * sizeof *xs);
    xs[d] = n;
    if (!sg)
        return NULL;
    aug_sum(g->sums + da * da, sg->qtq, sg->qsum, sg->qsum, d, n);
    aug_sum(g->sums + 2 * da * da, sg->qtx, sg->qsum, st->xsum, d, n);  /* [Xbar|1]^T [X|1] */
    memcpy(qs, sg->qsum, (size_t)d * sizeof *qs);
    qs[d] = n;
    return &g->gr;
}

/* Working memory of one layer's measurement. */
typedef struct work {
    double *col;              /* 3 x n_wbits: errs of one activation width */
    errs e;
    float **bhat;             /* ERQ's new biases, or NULL */
    bp_ycache *yc, *yc_aug;   /* W X^T per group, across activation widths */
    fisher_d fd[BP_GRAM_FACTORS];  /* the output factors in double */
    augmented aug;
    int has_aug;
    int groups;
} work;

static void work_free(work *w, size_t nw)
{
    free(w->col);
    for (size_t b = 0; w->bhat && b < nw; b++)
        free(w->bhat[b]);
    free(w->bhat);
    for (int j = 0; w->yc && j < w->groups; j++)
        bp_ycache_free(&w->yc[j]);
    free(w->yc);
    if (w->yc_aug)
        bp_ycache_free(w->yc_aug);
    free(w->yc_aug);
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        fisher_d_free(&w->fd[i]);
    if (w->has_aug)
        aug_free(&w->aug, nw);
}

static int work_init(work *w, const bp_layer *l, const bp_sens_spec *spec, bp_error *err)
{
    size_t nw = spec->n_wbits;
    memset(w, 0, sizeof *w);
    w->col = bp_malloc(4 * nw * sizeof(double), err);
    w->groups = l->groups;
    w->yc = bp_calloc((size_t)l->groups, sizeof *w->yc, err);
    if (!w->col || !w->yc)
        return -1;
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        if (fisher_d_init(&w->fd[i], factor_of(l, i), err) < 0)
            return -1;
    w->e = (errs){w->col, w->col + nw, w->col + 2 * nw, w->col + 3 * nw, 0.0};
    if (spec->quantizer != BP_WQ_ERQ || !l->bias)
        return 0;
    if (!(w->yc_aug = bp_calloc(1, sizeof *w->yc_aug, err)))
        return -1;
    w->bhat = bp_calloc(nw, sizeof(float *), err);
    if (!w->bhat)
        return -1;
    for (size_t b = 0; b < nw; b++)
        if (!(w->bhat[b] = bp_malloc((size_t)l->out * sizeof(float), err)))
            return -1;
    w->has_aug = 1;
    return aug_init(&w->aug, l, nw, err);
}

/* Output errors at one activation width (rows xq, or statistics sg; both
 * NULL at 16 bits) into w->e. */
static int errors_now(const bp_layer *l, const bp_sens_spec *spec, const float *xq,
                      const bp_stats_grid *sg, float *const *What, work *w, bp_sens_cache *c,
                      const bp_qspec *akey, bp_error *err)
{
    size_t nw = spec->n_wbits;
    int single = spec->precision == BP_PREC_SINGLE;
    if (!w->has_aug)
        return errors_at_abits(l, xq, sg, What, nw, w->yc, w->fd, single, c, akey, &w->e,
                               err);
    augmented *g = &w->aug;
    const bp_stats_grid *ag = NULL;
    if (l->stats)
        ag = aug_stats(g, l, sg);
    else
        aug_matrix(xq ? xq : l->X, NULL, l->n, l->in, 1.0f, g->Xq);
    for (size_t b = 0; b < nw; b++)
        aug_matrix(What[b], w->bhat[b], l->out, l->in, 0.0f, g->What[b]);
    if (errors_at_abits(&g->view, g->Xq, ag, g->What, nw, w->yc_aug, w->fd, single, NULL, NULL,
                        &w->e, err) < 0)
        return -1;
    errs energy_only = {NULL, NULL, NULL, NULL, 0.0};   /* the energy without the bias */
    if (errors_at_abits(l, NULL, NULL, What, 0, w->yc, w->fd, single, c, NULL, &energy_only,
                        err) < 0)
        return -1;
    w->e.energy = energy_only.energy;
    return 0;
}

/* Every metric the layer's data allows, for one candidate (NAN where not). */
static void candidate_values(const bp_layer *l, const work *w, size_t b, double trace,
                             const float *What, double *v)
{
    int64_t params = bp_layer_params(l);
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        v[m] = NAN;
    v[BP_METRIC_WEIGHT] = weight_mse(l->W, What, params);
    if (!w)                   /* no calibration inputs */
        return;
    v[BP_METRIC_HAWQ] = trace * (double)params * v[BP_METRIC_WEIGHT];
    v[BP_METRIC_MSE] = w->e.mse[b];
    v[BP_METRIC_RELATIVE] = w->e.energy > 0.0 ? w->e.mse[b] / w->e.energy : 0.0;
    if (l->grad2)
        v[BP_METRIC_FISHER] = w->e.fisher[b];
    if (l->ofactor)
        v[BP_METRIC_KFAC] = w->e.kfac[b];
    if (l->mfactor)
        v[BP_METRIC_MARGIN] = w->e.margin[b];
}

/* Measure out of fold (sensitivity.h)?  Only quantizers fitted to the
 * inputs, with enough rows for two folds. */
static int cross_fits(const bp_layer *l, const bp_sens_spec *spec)
{
    if (!uses_inputs(spec) || spec->cross_fit == BP_XFIT_OFF || l->n < 4 || l->stats)
        return 0;                    /* statistics have no rows to split */
    return spec->cross_fit == BP_XFIT_ON || l->n < BP_XFIT_ROWS_PER_INPUT * l->in;
}

/* Rows [r0, r0 + n) of the layer's calibration inputs, as a layer. */
static bp_layer rows_of(const bp_layer *l, int64_t r0, int64_t n)
{
    bp_layer v = *l;
    v.X = l->X + r0 * l->in * l->groups;
    v.n = n;
    return v;
}

/*
 * values[(b * n_abits + a) * BP_METRIC_COUNT + m] for every candidate and
 * metric.  RTN and SQuant weights do not depend on the inputs and are made
 * once; GPTQ's and ERQ's are made per activation width from the inputs the
 * layer will see (quantized or not), on all rows, or cross-fitted: for fold
 * f (the first or the second half of the rows), the weights fitted on the
 * other half and the errors measured on fold f, the two averaged by rows.
 * The activation grid is fitted on all rows either way.
 */
static int measure(const bp_layer *l, const bp_sens_spec *spec, float *const *What,
                   double *values, bp_sens_cache *c, bp_error *err)
{
    size_t nw = spec->n_wbits, na = spec->n_abits;
    int per_abits = uses_inputs(spec);
    double t = bp_now();
    if (!per_abits && weights_all(l, spec, NULL, NULL, What, NULL, NULL, NULL, err) < 0)
        return -1;
    bp_profile_add(BP_STAGE_WEIGHTS, bp_now() - t);
    if (!has_data(l)) {              /* data-free: the weight metric only */
        for (size_t b = 0; b < nw; b++)
            for (size_t a = 0; a < na; a++)
                candidate_values(l, NULL, b, 0.0, What[b], values + (b * na + a) * BP_METRIC_COUNT);
        return 0;
    }
    double trace = hawq_trace(l);
    int folds = cross_fits(l, spec) ? 2 : 1;
    if (folds == 2)
        c = NULL;                    /* row subsets: their Grams are their own */
    int64_t half = l->n / 2, ld = l->in * l->groups;
    int64_t r0[2] = {0, half}, nr[2] = {folds == 2 ? half : l->n, l->n - half};
    bp_layer eval[2], fit[2];
    for (int f = 0; f < folds; f++) {
        eval[f] = folds == 2 ? rows_of(l, r0[f], nr[f]) : *l;
        fit[f] = folds == 2 ? rows_of(l, r0[1 - f], nr[1 - f]) : *l;
    }
    work w[2];
    memset(w, 0, sizeof w);
    float *Xq = l->stats ? NULL : bp_malloc((size_t)(l->n * ld) * sizeof(float), err);
    int rc = Xq || l->stats ? 0 : -1;
    for (int f = 0; rc == 0 && f < folds; f++)
        rc = work_init(&w[f], &eval[f], spec, err);
    memset(values, 0, nw * na * BP_METRIC_COUNT * sizeof *values);
    for (size_t a = 0; rc == 0 && a < na; a++) {
        const float *xq = NULL;
        const bp_stats_grid *sg = NULL;
        bp_qspec q = spec->acts;
        q.bits = spec->abits[a];
        const bp_qspec *akey = spec->abits[a] < BP_BITS_FLOAT ? &q : NULL;
        if (spec->abits[a] < BP_BITS_FLOAT && l->stats) {
            sg = &l->stats->grid[a];
        } else if (spec->abits[a] < BP_BITS_FLOAT) {
            t = bp_now();
            rc = bp_quantize_matrix(l->X, Xq, l->n, ld, &q, err);
            bp_profile_add(BP_STAGE_ACTS, bp_now() - t);
            if (rc < 0)
                break;
            xq = Xq;
        }
        for (int f = 0; rc == 0 && f < folds; f++) {
            int64_t fit0 = folds == 2 ? r0[1 - f] : 0, ev0 = folds == 2 ? r0[f] : 0;
            t = bp_now();
            if (per_abits && (rc = weights_all(&fit[f], spec, xq ? xq + fit0 * ld : fit[f].X,
                                               sg, What, w[f].bhat, c, akey, err)) < 0)
                break;
            bp_profile_add(BP_STAGE_WEIGHTS, bp_now() - t);
            t = bp_now();
            if ((rc = errors_now(&eval[f], spec, xq ? xq + ev0 * ld : NULL, sg, What, &w[f],
                                 c, akey, err)) < 0)
                break;
            bp_profile_add(BP_STAGE_ERRORS, bp_now() - t);
            double share = (double)eval[f].n / (double)l->n, v[BP_METRIC_COUNT];
            for (size_t b = 0; b < nw; b++) {
                double *out = values + (b * na + a) * BP_METRIC_COUNT;
                candidate_values(&eval[f], &w[f], b, trace, What[b], v);
                for (int m = 0; m < BP_METRIC_COUNT; m++)
                    out[m] += share * v[m];
            }
        }
    }
    for (int f = 0; f < folds; f++)
        work_free(&w[f], nw);
    free(Xq);
    return rc;
}

static int append_rows(const bp_layer *l, const bp_sens_spec *spec,
                       const double *values, bp_table *table, bp_error *err)
{
    for (size_t b = 0; b < spec->n_wbits; b++)
        for (size_t a = 0; a < spec->n_abits; a++) {
            bp_qspec q = bp_sens_weight_grid(spec, spec->quantizer);
            const double *v = values + (b * spec->n_abits + a) * BP_METRIC_COUNT;
            q.bits = spec->wbits[b];
            bp_table_row row = {
                .layer = (char *)l->name,
                .wbits = spec->wbits[b],
                .abits = spec->abits[a],
                .quantizer = "",
                .error = v[spec->metric],
                .params = bp_layer_params(l),
                .weight_bits = bp_weight_storage_bits(l->out, l->in, &q),
                .macs = bp_layer_macs(l),
            };
            memcpy(row.value, v, sizeof row.value);
            snprintf(row.quantizer, sizeof row.quantizer, "%s",
                     bp_wquantizer_name(spec->quantizer));
            if (bp_table_add(table, &row, err) < 0)
                return -1;
        }
    return 0;
}

int bp_sens_check_layer(const bp_layer *l, const bp_sens_spec *spec, bp_error *err)
{
    if (uses_inputs(spec) && spec->cross_fit == BP_XFIT_ON && l->stats)
        return bp_fail(err, "layer '%s': weights.cross_fit: on needs calibration rows to split "
                       "in two; statistics cannot be split (use cross_fit: auto or off, or "
                       "capture rows)", l->name);
    for (size_t a = 0; l->stats && a < spec->n_abits; a++)
        if (spec->abits[a] < BP_BITS_FLOAT && (!l->stats->grid || !l->stats->grid[a].qtq))
            return bp_fail(err, "layer '%s': no statistics for %d-bit activations",
                           l->name, spec->abits[a]);
    if (bp_sens_needs_data(spec) && !has_data(l))
        return bp_fail(err, "layer '%s' has no calibration inputs, but %s '%s' needs them "
                       "(use metric: weight and quantizer: rtn for data-free layers)",
                       l->name, spec->metric != BP_METRIC_WEIGHT ? "metric" : "quantizer",
                       spec->metric != BP_METRIC_WEIGHT ? bp_metric_name(spec->metric)
                                                        : bp_wquantizer_name(spec->quantizer));
    if (spec->metric == BP_METRIC_FISHER && !l->grad2)
        return bp_fail(err, "layer '%s': metric 'fisher' needs '%s.grad2' (the diagonal of the "
                       "output Fisher, from tools/capture.py --fisher) in the calibration file",
                       l->name, l->name);
    if (spec->metric == BP_METRIC_KFAC && !l->ofactor)
        return bp_fail(err, "layer '%s': metric 'kfac' needs '%s.fisher' (or '%s.fisher_u', "
                       "'_s' and '_d': the output Fisher, from tools/capture.py --fisher) in "
                       "the calibration file", l->name, l->name, l->name);
    if (spec->metric == BP_METRIC_MARGIN && !l->mfactor)
        return bp_fail(err, "layer '%s': metric 'margin' needs '%s.margin' (or '%s.margin_u', "
                       "'_s' and '_d': the decision Fisher, from tools/capture.py --margin) in "
                       "the calibration file", l->name, l->name, l->name);
    return 0;
}

int bp_sensitivity_layer(const bp_layer *l, const bp_sens_spec *spec,
                         bp_table *table, bp_error *err)
{
    return bp_sensitivity_layer_cached(l, spec, table, NULL, err);
}

int bp_sensitivity_layer_cached(const bp_layer *l, const bp_sens_spec *spec, bp_table *table,
                                bp_sens_cache *c, bp_error *err)
{
    if (bp_sens_check_layer(l, spec, err) < 0)
        return -1;
    size_t nw = spec->n_wbits, na = spec->n_abits;
    int64_t params = bp_layer_params(l);
    int rc = -1;
    float **What = bp_calloc(nw, sizeof(float *), err);
    double *values = bp_malloc(nw * na * BP_METRIC_COUNT * sizeof(double), err);
    if (!What || !values)
        goto out;
    for (size_t b = 0; b < nw; b++)
        if (!(What[b] = bp_malloc((size_t)params * sizeof(float), err)))
            goto out;
    if (measure(l, spec, What, values, c, err) < 0)
        goto out;
    rc = append_rows(l, spec, values, table, err);
out:
    for (size_t b = 0; What && b < nw; b++)
        free(What[b]);
    free(What);
    free(values);
    if (rc < 0)
        bp_fail_prefix(err, "layer '%s'", l->name);
    return rc;
}

/* SQuant's row grids in the unsigned convention: its signed codes r and
 * z give w = (r + z) / s = (1/s) * ((r + 2^(b-1)) - (2^(b-1) - z)). */
static void squant_grid(const bp_layer *l, int bits, int fp16, float *scale, float *zero)
{
    double half = ldexp(1.0, bits - 1);
    for (int64_t r = 0; r < l->out; r++) {
        double s = 1.0, z = half;            /* a constant row: kept exactly */
        bp_squant_row_grid(l->W + r * l->in, l->in, bits, fp16, &s, &z);
        for (int64_t j = 0; j < l->in; j++) {
            scale[r * l->in + j] = (float)(1.0 / s);
            zero[r * l->in + j] = (float)(half - z);
        }
    }
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
    if (uses_inputs(spec)) {
        if (!has_data(l))
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
                                          &spec->erq, What, l->bias ? bhat : NULL, scale, zero,
                                          err);
            free(G);
            free(DA);
        } else
            rc = bp_erq_quantize(l->W, l->bias, l->out, l->in, l->X, xin, l->n, &q, &spec->erq,
                                 What, l->bias ? bhat : NULL, scale, zero, err);
        break;
    case BP_WQ_SQUANT:
        rc = bp_squant_quantize(l->W, l->out, l->in, (int64_t)l->kh * l->kw, wbits,
                                spec->squant_mode, q.fp16_scales, What, NULL, err);
        if (rc == 0)
            squant_grid(l, wbits, q.fp16_scales, scale, zero);
        break;
    default:
        rc = bp_quantize_matrix_grid(l->W, What, l->out, l->in, &q, scale, zero, err);
        break;
    }
    int64_t gs = q.granularity == BP_GRAN_GROUP ? q.group_size : l->in;
    for (int64_t c = 0; rc == 0 && g_idx && c < l->in * l->groups; c++)
        g_idx[c] = (int32_t)((c % l->in) / gs);     /* the columns' own order */
    free(Xq);
    return rc;
}
