/*
 * sensitivity.c - the per-layer measurement loop: quantize weights once per
 * weight width, activations once per activation width, then read every
 * candidate's error off the Gram of [X, dX] (ALGORITHMS.md section 4).
 */
#include "sensctx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_profile.h"
#include "ggml.h"
#include "gram.h"

int bp_sens_needs_data(const bp_sens_spec *spec)
{   /* llama.cpp's types need no data (their importance weights are optional) */
    return spec->metric != BP_METRIC_WEIGHT || spec->quantizer == BP_WQ_GPTQ ||
           spec->quantizer == BP_WQ_ERQ;
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

/*
 * Layer totals without rows (gram.h): where no row's error is needed (no
 * grad2, no output factor) every candidate's error is <dW^T dW, Gb> plus
 * cross terms, and dW^T dW (one dsyrk per weight width, half the flops of
 * the rows' dsymm for one candidate) is shared by every activation width
 * while the weights stay the same (RTN, SQuant, llama.cpp's types).  The
 * matrices are kept across activation widths when they fit in 1 GiB
 * (bp_sx_set_totals_keep), else formed again per width into one buffer.
 */
static size_t totals_keep = (size_t)1 << 30;

static _Atomic size_t totals_count;   /* widths measured through the totals (tests) */
static _Atomic size_t single_m_count, single_m_redone;   /* dW^T dW in float32; redone */
static double single_m_tol = 1e-6;    /* the float error's estimate, x4, below this of E */

void bp_sx_set_single_m_tol(double tol)
{
    single_m_tol = tol;
}

void bp_sx_set_totals_keep(size_t bytes)
{
    totals_keep = bytes;
}

size_t bp_sx_totals_count(void)
{
    return totals_count;
}

void bp_sx_single_m_counts(size_t *made, size_t *redone)
{
    *made = single_m_count, *redone = single_m_redone;
}

typedef struct totals {
    int64_t d, groups;
    size_t nw;
    int left;                  /* activation widths still to measure, this one included */
    int reuse;                 /* the weights stay the same across widths */
    int keep;                  /* all n_w matrices kept across widths */
    int w_valid, dw_valid;     /* MW formed; the Mdw (or pre) formed for the current weights */
    int shared;                /* the cache's (shared_totals): W checked, cross terms shared */
    int a, na;                 /* this activation width's index, and how many */
    const int *abits;          /* na widths (BP_BITS_FLOAT: float inputs) */
    double *MW;                /* groups x d^2: W^T W */
    double *Mdw;               /* keep: nw x groups x d^2, else d^2 */
    double *pre;               /* not kept, from statistics: nw x na, <dW^T dW, Gb> of the
                                * widths after the one that formed dW^T dW */
    double *pre_sig;           /* nw x na: their float error's estimate (0: exact) */
    unsigned char *m_exact;    /* nw: the kept dW^T dW formed in double */
} totals;

/* Let go of the matrices (and what was formed in them); the settings
 * (shared, a, na, abits, left, reuse) stay. */
static void totals_drop(totals *t)
{
    free(t->MW);
    free(t->Mdw);
    free(t->pre);
    free(t->pre_sig);
    free(t->m_exact);
    t->MW = t->Mdw = t->pre = t->pre_sig = NULL;
    t->m_exact = NULL;
    t->w_valid = t->dw_valid = 0;
}

static void totals_free(totals *t)
{
    totals_drop(t);
    memset(t, 0, sizeof *t);
}

/*
 * The quantizers of one layer measure the same W: the cache (when there is
 * one) keeps the layer's totals, so that W^T W is formed once per layer and
 * each activation width's W H^T once (bp_gram_share_totals), not once per
 * quantizer.  The weights are recognised by their pointer and compared
 * byte for byte with a copy; other weights drop what was kept.
 */
typedef struct bp_sx_share {
    const float *W;
    float *copy;
    int64_t n;
    totals t;
} bp_sx_share;

void bp_sx_share_free(bp_sens_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        bp_gram_drop_totals(&c->e[i].gram);
    if (c->share) {
        totals_free(&c->share->t);
        free(c->share->copy);
        free(c->share);
    }
    c->share = NULL;
}

/* The cache's totals for l's weights (a new quantizer's: its dW^T dW to
 * form), or NULL (no cache, or no memory: the caller's own). */
static totals *shared_totals(bp_sens_cache *c, const bp_layer *l)
{
    if (!c)
        return NULL;
    int64_t n = l->out * l->in;
    bp_sx_share *s = c->share;
    if (s && s->W == l->W && s->n == n &&
        memcmp(s->copy, l->W, (size_t)n * sizeof(float)) == 0) {
        s->t.dw_valid = 0;
        c->totals_hits += (size_t)s->t.w_valid;
        return &s->t;
    }
    bp_sx_share_free(c);
    s = calloc(1, sizeof *s);
    float *copy = s ? bp_malloc((size_t)n * sizeof(float), NULL) : NULL;
    if (!copy) {
        free(s);
        return NULL;
    }
    memcpy(copy, l->W, (size_t)n * sizeof(float));
    s->W = l->W, s->copy = copy, s->n = n, s->t.shared = 1;
    c->share = s;
    return &s->t;
}

/* Do the nw + 1 matrices of a layer fit in what may be kept? */
static int totals_kept(int64_t d, int64_t groups, size_t nw)
{
    size_t per = (size_t)(d * d) * sizeof(double) * (size_t)groups;
    return nw > 0 && per * (nw + 1) <= totals_keep;
}

/* t ready for a layer of in = d, groups and nw weight widths. */
static int totals_ready(totals *t, int64_t d, int64_t groups, size_t nw, bp_error *err)
{
    if (t->MW && t->d == d && t->groups == groups && t->nw == nw)
        return 0;                      /* the same layer's next width */
    totals_drop(t);
    size_t dd = (size_t)(d * d), per = dd * sizeof(double) * (size_t)groups;
    t->d = d, t->groups = groups, t->nw = nw;
    t->keep = totals_kept(d, groups, nw);
    t->MW = bp_malloc(per, err);
    if (nw > 0)
        t->Mdw = bp_malloc(t->keep ? per * nw : dd * sizeof(double), err);
    t->m_exact = bp_calloc(nw ? nw : 1, 1, err);
    return t->MW && (t->Mdw || nw == 0) && t->m_exact ? 0 : -1;
}

/* May this layer's errors be read off layer totals (no row needed)? */
static int totals_apply(const bp_layer *l, const fisher_d *fd)
{
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        if (fd[i].g)
            return 0;
    return !l->grad2;
}

/* Are the totals cheaper than the kept rows over the activation widths left
 * (flops per group)?  The totals: the Gram and cross terms each width, the
 * contractions per candidate, W^T W once and dW^T dW once per weights (again
 * per width where they are not kept or the weights change).  The kept rows:
 * bp_gram_kept_flops each width.  From statistics there are no rows. */
static int totals_pay(const bp_layer *l, const totals *t, size_t nw, int quantized)
{
    if (l->stats)
        return 1;
    double n = (double)l->n, d = (double)l->in, o = (double)(l->out / l->groups);
    double c = (double)nw, left = t->left > 0 ? t->left : 1;
    double cross = quantized ? fmin(3.0 * n * d * d + 2.0 * o * d * d, 4.0 * n * d * o) : 0.0;
    int same = t->d == l->in && t->groups == l->groups && t->nw == nw;
    double first = (same && t->w_valid ? 0.0 : o * d * d) +
                   (same && t->dw_valid ? 0.0 : c * o * d * d);
    double again = t->reuse && totals_kept(l->in, l->groups, nw) ? 0.0 : c * o * d * d;
    double totals = left * (n * d * d + cross + c * d * d) + first + (left - 1) * again;
    return totals <= left * bp_gram_kept_flops(l->n, l->in, l->out / l->groups, nw, 0);
}

/* The column means of group j's inputs Xbar (Xq, or X without it; from
 * statistics, st's sums) into mu (in values). */
static void sx_means(const bp_layer *l, const float *Xq, const bp_gram_stats *st, int j,
                     double *mu)
{
    int64_t d = l->in, ld = l->in * l->groups;
    if (l->stats) {
        for (int64_t k = 0; k < d; k++)
            mu[k] = st->qsum[k] / (double)l->n;
        return;
    }
    const float *src = (Xq ? Xq : l->X) + (int64_t)j * d;
    memset(mu, 0, (size_t)d * sizeof(double));
    for (int64_t i = 0; i < l->n; i++)
        for (int64_t k = 0; k < d; k++)
            mu[k] += src[i * ld + k];
    for (int64_t k = 0; k < d; k++)
        mu[k] /= (double)l->n;
}

/* Errors of every weight width at one activation width.  yc (one per
 * group, or NULL) carries W X^T from one activation width to the next; tc
 * (or NULL) the totals' matrices. */
static int errors_at_abits(const bp_layer *l, const float *Xq, const bp_stats_grid *sg,
                           float *const *What, size_t n_w, bp_ycache *yc, const fisher_d *fd,
                           int single, bp_sens_cache *c, const bp_qspec *akey, totals *tc,
                           errs *out, bp_error *err)   /* fd: BP_GRAM_FACTORS of them */
{
    const float *g2 = l->grad2;
    int64_t og = l->out / l->groups, ld = l->in * l->groups;
    double *row = bp_malloc((size_t)og * sizeof(double), err);
    double *mu = NULL;         /* single dW^T dW: means, centred diagonals (two widths) */
    if (!row)
        return -1;
    for (size_t b = 0; b < n_w; b++)
        out->mse[b] = out->fisher[b] = out->kfac[b] = out->margin[b] = 0.0;
    out->energy = 0.0;
    int dense = 0;                 /* the widest dense factor's rows, for the cost model */
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        dense |= fd[i].g && !fd[i].g[0].rank;
    /* the totals' dW^T dW in float32 (one group: grouped convs stay in double) */
    int ms = single && l->in >= BP_GRAM_SINGLE_MIN_IN && l->groups == 1 && n_w > 0;
    /* from statistics the check reads 4 rows' forms off qtq: single pays at any n */
    single = single && (l->stats ? l->in >= BP_GRAM_SINGLE_MIN_IN
                                 : bp_gram_single_pays(l->n, l->in, og, n_w));
    int keep_rows = !l->stats && bp_gram_keep_rows(l->n, l->in, og, Xq != NULL, n_w,
                                                   dense ? og : 0, single);
    if (tc && totals_apply(l, fd))     /* then the totals or the kept rows, by flops */
        keep_rows = !totals_pay(l, tc, n_w, Xq != NULL);
    else
        tc = NULL;
    if (keep_rows)
        tc = NULL;
    if (tc && totals_ready(tc, l->in, l->groups, n_w, err) < 0)
        goto fail;
    totals_count += tc != NULL;
    /* from statistics, dW^T dW that are not kept are contracted with every
     * later width's Gram while they exist (ahead), not formed again there */
    int ahead = tc && l->stats && tc->reuse && !tc->keep && n_w > 0 && tc->abits &&
                tc->a + 1 < tc->na;
    /* only weights made without the inputs (RTN, SQuant, llama.cpp's types):
     * GPTQ and ERQ shape dW to Gb, so their <dW^T dW, Gb> falls far below the
     * diagonal scale that sets the float error (on a 7B-shaped block the
     * estimate was 3e-6 to 2e-5 of GPTQ's errors, 2e-7 of RTN's): float then
     * would be redone in double, which costs more than double at once */
    ms = ms && tc && tc->reuse;
    size_t npre = n_w * (size_t)(tc ? tc->na : 0);
    if (ahead && !tc->pre && (!(tc->pre = bp_malloc(npre * sizeof(double), err)) ||
                              !(tc->pre_sig = bp_malloc(npre * sizeof(double), err))))
        goto fail;
    if (ahead && !tc->dw_valid) {
        memset(tc->pre, 0, npre * sizeof(double));
        memset(tc->pre_sig, 0, npre * sizeof(double));
    }
    if (ms && !(mu = bp_malloc(4 * (size_t)l->in * sizeof(double), err)))
        goto fail;
    int from_pre = tc && tc->pre && !tc->keep && tc->dw_valid;
    for (int j = 0; j < l->groups; j++) {
        bp_gram g;
        int sp = single && n_w > 0 && !tc;     /* totals: exact in double, and cheaper */
        bp_gram_stats st = l->stats ? bp_sx_group_stats(l, sg, j) : (bp_gram_stats){0};
        bp_sx_key k = bp_sx_make_key(0, akey, l->n, (int64_t)j * l->in, l->in, sp, NULL);
        bp_sens_entry *e = c && !keep_rows ? bp_sx_find(c, &k) : NULL;
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
            if (c && !keep_rows && (e = bp_sx_add(c, &k)))
                bp_gram_lend(&e->gram, &g);     /* kept for the next of these inputs */
        }
        if (yc)
            bp_gram_attach_y(&g, &yc[j]);
        const float *W = l->W + (int64_t)j * og * l->in;
        if (tc) {
            int64_t dd = l->in * l->in, d = l->in;
            double *MW = tc->MW + j * dd, en;
            int bad = !tc->w_valid && bp_gram_outer(W, NULL, og, l->in, l->in, MW, err) < 0;
            if (tc->shared && e)       /* another quantizer's W H^T for this W */
                c->totals_hits += (size_t)bp_gram_use_totals(&g, &e->gram, W);
            /* single dW^T dW: this width's column means and centred diagonal */
            double *cd = mu ? mu + d : NULL, *mu2 = mu ? mu + 2 * d : NULL;
            double *cd2 = mu ? mu + 3 * d : NULL;
            if (ms && !bad) {
                sx_means(l, Xq, &st, j, mu);
                bp_gram_centred_diag(g.G, 1.0, mu, d, cd);
            }
            for (size_t b = 0; !bad && b < n_w; b++) {
                const float *Wq = What[b] + (int64_t)j * og * l->in;
                double *M = tc->keep ? tc->Mdw + ((int64_t)b * l->groups + j) * dd : tc->Mdw;
                double tot;
                size_t pi = b * (size_t)tc->na;
                if (from_pre) {        /* <dW^T dW, Gb> contracted at an earlier width */
                    bad = bp_gram_total_cross(&g, W, Wq, og, l->in, MW, &tot, err) < 0;
                    double t1 = j == 0 ? tc->pre[pi + (size_t)tc->a] : 0.0;   /* all groups' */
                    if (!bad && ms && 4.0 * tc->pre_sig[pi + (size_t)tc->a] >=
                                          single_m_tol * fabs(t1 + tot)) {   /* in double */
                        bad = bp_gram_outer(W, Wq, og, d, d, M, err) < 0;
                        t1 = bad ? 0.0 : bp_gram_contract(M, st.qtq, d) / (double)l->n;
                        single_m_redone++;
                    }
                    tot += t1;
                } else if (ms) {       /* float32 dW^T dW; the contraction centred */
                    int form = !tc->keep || !tc->dw_valid;
                    if (form) {
                        bad = bp_gram_outer_single(W, Wq, og, d, d, M, err) < 0;
                        tc->m_exact[b] = 0;
                        single_m_count++;
                    }
                    bad = bad || bp_gram_total_cross(&g, W, Wq, og, l->in, MW, &tot, err) < 0;
                    double sig = 0.0, t1 = 0.0;
                    if (!bad && tc->m_exact[b])    /* redone in double at an earlier width */
                        t1 = bp_gram_contract(M, g.G, d);
                    else if (!bad)
                        t1 = bp_gram_t1_centred(M, g.G, 1.0, mu, cd, W, Wq, og, d, d, &sig);
                    if (!bad && !tc->m_exact[b] && 4.0 * sig >= single_m_tol * fabs(t1 + tot)) {
                        bad = bp_gram_outer(W, Wq, og, d, d, M, err) < 0;   /* in double */
                        t1 = bad ? 0.0 : bp_gram_contract(M, g.G, d);
                        tc->m_exact[b] = 1;
                        single_m_redone++;
                    }
                    tot += t1;
                } else {
                    bad = ((!tc->keep || !tc->dw_valid) &&
                           bp_gram_outer(W, Wq, og, l->in, l->in, M, err) < 0) ||
                          bp_gram_total_error(&g, W, Wq, og, l->in, MW, M, &tot, err) < 0;
                }
                /* this dW^T dW with every later width's sums while it exists */
                for (int a = tc->a + 1; !bad && ahead && !from_pre && a < tc->na; a++) {
                    int q = tc->abits[a] < BP_BITS_FLOAT;
                    bp_gram_stats sa = bp_sx_group_stats(l, q ? &l->stats->grid[a] : NULL, j);
                    size_t k = pi + (size_t)a;
                    if (!ms || tc->m_exact[b]) {       /* formed in double */
                        tc->pre[k] += bp_gram_contract(M, sa.qtq, d) / (double)l->n;
                        tc->pre_sig[k] = 0.0;
                        continue;
                    }
                    double gs = 1.0 / (double)l->n;
                    for (int64_t i = 0; i < d; i++)
                        mu2[i] = sa.qsum[i] * gs;
                    bp_gram_centred_diag(sa.qtq, gs, mu2, d, cd2);
                    tc->pre[k] += bp_gram_t1_centred(M, sa.qtq, gs, mu2, cd2, W, Wq, og, d, d,
                                                     &tc->pre_sig[k]);
                }
                if (!bad)
                    out->mse[b] += tot;
            }
            bad = bad || bp_gram_total_energy(&g, W, og, l->in, MW, &en, err) < 0;
            if (!bad && tc->shared && e)   /* kept for the next quantizer */
                bp_gram_share_totals(&e->gram, &g);
            bp_gram_free(&g);
            if (bad)
                goto fail;
            out->energy += en;
            continue;
        }
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
    if (tc)
        tc->w_valid = 1, tc->dw_valid = (tc->keep || ahead || from_pre) && n_w > 0;
    free(row);
    free(mu);
    return 0;
fail:
    free(row);
    free(mu);
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
    totals *tc;               /* the layer's: tc_own, or the cache's (shared_totals) */
    totals tc_own, tc_aug, tc_energy;  /* ..., the augmented layer's, W's alone */
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
    totals_free(&w->tc_own);
    totals_free(&w->tc_aug);
    totals_free(&w->tc_energy);
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
        return errors_at_abits(l, xq, sg, What, nw, w->yc, w->fd, single, c, akey, w->tc,
                               &w->e, err);
    augmented *g = &w->aug;
    const bp_stats_grid *ag = NULL;
    if (l->stats)
        ag = aug_stats(g, l, sg);
    else
        aug_matrix(xq ? xq : l->X, NULL, l->n, l->in, 1.0f, g->Xq);
    for (size_t b = 0; b < nw; b++)
        aug_matrix(What[b], w->bhat[b], l->out, l->in, 0.0f, g->What[b]);
    if (errors_at_abits(&g->view, g->Xq, ag, g->What, nw, w->yc_aug, w->fd, single, NULL, NULL,
                        &w->tc_aug, &w->e, err) < 0)
        return -1;
    errs energy_only = {NULL, NULL, NULL, NULL, 0.0};   /* the energy without the bias */
    if (errors_at_abits(l, NULL, NULL, What, 0, w->yc, w->fd, single, c, NULL, &w->tc_energy,
                        &energy_only, err) < 0)
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
    if (!bp_sx_uses_inputs(spec) || spec->cross_fit == BP_XFIT_OFF || l->n < 4 || l->stats)
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
    int per_abits = bp_sx_uses_inputs(spec);
    double t = bp_now();
    if (bp_sx_diag_only(l)) {               /* an importance matrix: diag.c */
        int rc = spec->quantizer == BP_WQ_GGML ? 0 :
                 bp_sx_weights_all(l, spec, NULL, NULL, What, NULL, NULL, NULL, err);
        if (rc == 0)
            rc = bp_sx_diag_values(l, spec, What, values, err);
        bp_profile_add(BP_STAGE_WEIGHTS, bp_now() - t);
        return rc;
    }
    if (!per_abits && bp_sx_weights_all(l, spec, NULL, NULL, What, NULL, NULL, NULL, err) < 0)
        return -1;
    bp_profile_add(BP_STAGE_WEIGHTS, bp_now() - t);
    if (!bp_sx_has_data(l)) {              /* data-free: the weight metric only */
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
    for (int f = 0; rc == 0 && f < folds; f++) {
        rc = work_init(&w[f], &eval[f], spec, err);
        w[f].tc = folds == 1 && !l->grad2 && !l->ofactor && !l->mfactor ? shared_totals(c, l)
                                                                          : NULL;
        if (!w[f].tc)
            w[f].tc = &w[f].tc_own;
    }
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
            totals *ts[] = {w[f].tc, &w[f].tc_aug, &w[f].tc_energy};
            for (int i = 0; i < 3; i++) {
                ts[i]->left = (int)(na - a), ts[i]->reuse = !per_abits || i == 2;
                ts[i]->a = (int)a, ts[i]->na = (int)na, ts[i]->abits = spec->abits;
            }
            t = bp_now();
            if (per_abits && (rc = bp_sx_weights_all(&fit[f], spec, xq ? xq + fit0 * ld : fit[f].X,
                                                     sg, What, w[f].bhat, c, akey, err)) < 0)
                break;
            if (per_abits)               /* new weights: their dW^T dW too */
                w[f].tc->dw_valid = w[f].tc_aug.dw_valid = 0;
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

/* The bits of a layer in the type llama-quantize writes for `type` (its
 * fallback when the rows do not fill the blocks), padded to GGUF's 32-byte
 * alignment as each tensor's data is in the file. */
static int64_t ggml_storage_bits(const bp_layer *l, int type)
{
    int t = bp_sx_ggml_type(l, type);
    uint64_t bytes = t < 0 ? 0 : bp_ggml_row_bytes(t, l->in * l->groups) * (uint64_t)l->out;
    return (int64_t)((bytes + 31) / 32 * 32 * 8);
}

static int append_rows(const bp_layer *l, const bp_sens_spec *spec,
                       const double *values, bp_table *table, bp_error *err)
{
    for (size_t b = 0; b < spec->n_wbits; b++)
        for (size_t a = 0; a < spec->n_abits; a++) {
            bp_qspec q = bp_sens_weight_grid(spec, spec->quantizer);
            const double *v = values + (b * spec->n_abits + a) * BP_METRIC_COUNT;
            int ggml = spec->quantizer == BP_WQ_GGML;
            q.bits = spec->wbits[b];
            bp_table_row row = {
                .layer = (char *)l->name,
                .wbits = spec->wbits[b],
                .abits = spec->abits[a],
                .quantizer = "",
                .error = v[spec->metric],
                .params = bp_layer_params(l),
                .weight_bits = ggml ? ggml_storage_bits(l, spec->ggml_types[b])
                                    : bp_weight_storage_bits(l->out, l->in, &q),
                .macs = bp_layer_macs(l),
            };
            memcpy(row.value, v, sizeof row.value);
            snprintf(row.quantizer, sizeof row.quantizer, "%s",
                     ggml ? bp_ggml_type_name(spec->ggml_types[b])
                          : bp_wquantizer_name(spec->quantizer));
            if (bp_table_add(table, &row, err) < 0)
                return -1;
        }
    return 0;
}

int bp_sens_check_layer(const bp_layer *l, const bp_sens_spec *spec, bp_error *err)
{
    for (size_t b = 0; spec->quantizer == BP_WQ_GGML && b < spec->n_wbits; b++) {
        int64_t blck;
        size_t bytes;
        bp_ggml_block(spec->ggml_types[b], &blck, &bytes);
        if (bp_sx_ggml_type(l, spec->ggml_types[b]) < 0)
            return bp_fail(err, "layer '%s': rows of %lld elements do not fill %s's blocks of "
                           "%lld and llama-quantize has no fallback for it (it stops); exclude "
                           "the layer or leave %s out", l->name, (long long)(l->in * l->groups),
                           bp_ggml_type_name(spec->ggml_types[b]), (long long)blck,
                           bp_ggml_type_name(spec->ggml_types[b]));
    }
    if (bp_sx_diag_only(l)) {
        for (size_t a = 0; a < spec->n_abits; a++)
            if (spec->abits[a] < BP_BITS_FLOAT)
                return bp_fail(err, "layer '%s': an importance matrix holds no activation "
                               "statistics, so %d-bit activations cannot be measured (use "
                               "candidates.abits: [16], or capture statistics with "
                               "tools/capture.py --stats)", l->name, spec->abits[a]);
        if (bp_sx_uses_inputs(spec))
            return bp_fail(err, "layer '%s': %s needs the inputs' full statistics (X^T X), "
                           "which an importance matrix does not hold (its diagonal only); "
                           "use rtn or llama.cpp's types (candidates.types), or capture "
                           "statistics with tools/capture.py --stats", l->name,
                           bp_wquantizer_name(spec->quantizer));
        if (spec->metric == BP_METRIC_KFAC || spec->metric == BP_METRIC_MARGIN)
            return bp_fail(err, "layer '%s': metric '%s' needs calibration rows or statistics "
                           "(an importance matrix gives mse, relative, hawq, weight, and "
                           "fisher with grad2)", l->name, bp_metric_name(spec->metric));
    }
    if (bp_sx_uses_inputs(spec) && spec->cross_fit == BP_XFIT_ON && l->stats)
        return bp_fail(err, "layer '%s': weights.cross_fit: on needs calibration rows to split "
                       "in two; statistics cannot be split (use cross_fit: auto or off, or "
                       "capture rows)", l->name);
    for (size_t a = 0; l->stats && a < spec->n_abits; a++)
        if (spec->abits[a] < BP_BITS_FLOAT && (!l->stats->grid || !l->stats->grid[a].qtq))
            return bp_fail(err, "layer '%s': no statistics for %d-bit activations",
                           l->name, spec->abits[a]);
    if (bp_sens_needs_data(spec) && !bp_sx_has_data(l))
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

/* Errors are never negative: each is a sum of squares or a quadratic form
 * in positive semi-definite matrices.  One below -1e-6 of the metric's
 * largest magnitude over the layer's candidates (what rounding can leave)
 * is a defect in the inputs (an indefinite Gram or Fisher that passed the
 * checks) to report, not a number to plan with. */
static int check_signs(const bp_sens_spec *spec, const double *v, bp_error *err)
{
    size_t n = spec->n_wbits * spec->n_abits;
    for (int m = 0; m < BP_METRIC_COUNT; m++) {
        double big = 0.0;
        for (size_t c = 0; c < n; c++)
            if (isfinite(v[c * BP_METRIC_COUNT + m]))
                big = fmax(big, fabs(v[c * BP_METRIC_COUNT + m]));
        for (size_t c = 0; c < n; c++) {
            double x = v[c * BP_METRIC_COUNT + m];
            if (x < -1e-6 * big - 1e-300)
                return bp_fail(err, "metric '%s' came out negative (%g at %d weight bits, %d "
                               "activation bits): its statistics or Fisher are not positive "
                               "semi-definite though they passed the checks; this is a defect "
                               "to report, not an error to plan with", bp_metric_name((bp_metric)m),
                               x, spec->wbits[c / spec->n_abits], spec->abits[c % spec->n_abits]);
        }
    }
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
    /* llama.cpp's types over diagonal statistics stream their rows (diag.c) */
    int streamed = spec->quantizer == BP_WQ_GGML && bp_sx_diag_only(l);
    for (size_t b = 0; !streamed && b < nw; b++)
        if (!(What[b] = bp_malloc((size_t)params * sizeof(float), err)))
            goto out;
    if (measure(l, spec, What, values, c, err) < 0 || check_signs(spec, values, err) < 0)
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
