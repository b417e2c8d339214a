/*
 * squant.c - SQuant's E, K and C stages (see squant.h).
 */
#include "squant.h"

#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int bp_squant_mode_parse(const char *s)
{
    static const char *const names[] = {"e", "ek", "ec", "ekc"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

const char *bp_squant_mode_name(int mode)
{
    static const char *const names[] = {"e", "ek", "ec", "ekc"};
    return mode >= 0 && mode < 4 ? names[mode] : "?";
}

/* One element ranked for flipping: larger key first, ties lower index. */
typedef struct sq_rank {
    double key;
    int64_t index;
} sq_rank;

static int sq_cmp(const void *a, const void *b)
{
    const sq_rank *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* A row being quantized: real codes x, codes r, errors e = r - x. */
typedef struct sq_row {
    int64_t n;
    double *x, *e;
    int32_t *r;
    double qmin, qmax;
    sq_rank *rank;            /* scratch, n entries */
} sq_row;

/* May element j move one step in direction dir (+1 up, -1 down)? */
static int sq_eligible(const sq_row *w, int64_t j, int dir)
{
    return dir > 0 ? w->e[j] < 0.0 && w->x[j] < w->qmax : w->e[j] > 0.0 && w->x[j] > w->qmin;
}

static void sq_flip(sq_row *w, int64_t j, int dir)
{
    w->r[j] += dir;
    w->e[j] += dir;
}

static void sq_swap(sq_rank *a, sq_rank *b)
{
    sq_rank t = *a;
    *a = *b;
    *b = t;
}

/*
 * Put the first k of r[0..m) in sq_cmp's order (a total order: key, then
 * index) into r[0..k), sorted: a quickselect, then a sort of those k only.
 * Only a few elements of a row flip, so this avoids sorting the row.
 */
static void sq_top(sq_rank *r, int64_t m, int64_t k)
{
    if (k > m)
        k = m;
    int64_t lo = 0, hi = m - 1;
    while (k > 0 && k < m && hi > lo) {     /* r[0..k) precede r[k..m) in the order */
        int64_t mid = lo + (hi - lo) / 2;    /* median of three as the pivot, at hi */
        if (sq_cmp(&r[mid], &r[lo]) < 0)
            sq_swap(&r[mid], &r[lo]);
        if (sq_cmp(&r[hi], &r[lo]) < 0)
            sq_swap(&r[hi], &r[lo]);
        if (sq_cmp(&r[mid], &r[hi]) < 0)
            sq_swap(&r[mid], &r[hi]);
        int64_t p = lo;
        for (int64_t i = lo; i < hi; i++)
            if (sq_cmp(&r[i], &r[hi]) < 0)
                sq_swap(&r[i], &r[p++]);
        sq_swap(&r[p], &r[hi]);             /* the pivot's final place */
        if (p == k || p == k - 1)
            break;
        if (p < k)
            lo = p + 1;
        else
            hi = p - 1;
    }
    qsort(r, (size_t)k, sizeof *r, sq_cmp);
}

/* Eligible elements of [a, b) for dir, the first `need` of them by |e|
 * descending (ties: lower index first) at the front; returns the count. */
static int64_t sq_ranked(sq_row *w, int64_t a, int64_t b, int dir, int64_t need)
{
    int64_t m = 0;
    for (int64_t j = a; j < b; j++)
        if (sq_eligible(w, j, dir))
            w->rank[m++] = (sq_rank){fabs(w->e[j]), j};
    sq_top(w->rank, m, need);
    return m;
}

static double sq_sum(const sq_row *w, int64_t a, int64_t b)
{
    double s = 0.0;
    for (int64_t j = a; j < b; j++)
        s += w->e[j];
    return s;
}

/* A candidate left by the K stage for the C stage. */
typedef struct sq_cand {
    int64_t index;            /* -1: none */
    int dir;
    double priority;
} sq_cand;

/* Flip rne(|S|) elements of [a, b) toward a zero sum; returns the kernel's
 * candidate. */
static sq_cand sq_kernel(sq_row *w, int64_t a, int64_t b)
{
    sq_cand c = {-1, 0, 0.0};
    double s = sq_sum(w, a, b);
    if (s == 0.0)
        return c;
    int dir = s < 0.0 ? 1 : -1;
    double t = nearbyint(fabs(s));
    int64_t m = sq_ranked(w, a, b, dir, (int64_t)t + 1), done = 0;
    for (; done < m && (double)done < t; done++)
        sq_flip(w, w->rank[done].index, dir);
    if (t >= fabs(s) && done > 0) {          /* overshoot: undo the last flip */
        int64_t j = w->rank[done - 1].index;
        c = (sq_cand){j, -dir, fabs(w->e[j])};
    } else if (t < fabs(s) && done < m) {    /* short: the next flip */
        int64_t j = w->rank[done].index;
        c = (sq_cand){j, dir, fabs(w->e[j])};
    }
    return c;
}

/* Row stage over the kernel candidates (cands != NULL) or all elements. */
static void sq_row_stage(sq_row *w, const sq_cand *cands, int64_t n_cands)
{
    double s = sq_sum(w, 0, w->n);
    if (s == 0.0)
        return;
    int dir = s < 0.0 ? 1 : -1;
    double t = nearbyint(fabs(s));
    int64_t m = 0;
    if (!cands) {
        m = sq_ranked(w, 0, w->n, dir, (int64_t)t);
    } else {
        for (int64_t k = 0; k < n_cands; k++)
            if (cands[k].index >= 0 && cands[k].dir == dir)
                w->rank[m++] = (sq_rank){cands[k].priority, cands[k].index};
        sq_top(w->rank, m, (int64_t)t);
    }
    for (int64_t i = 0; i < m && (double)i < t; i++)
        sq_flip(w, w->rank[i].index, dir);
}

int bp_squant_row_grid(const float *W, int64_t n, int bits, int fp16, double *s, double *z)
{
    double lo = W[0], hi = W[0];
    for (int64_t j = 1; j < n; j++)
        lo = fmin(lo, W[j]), hi = fmax(hi, W[j]);
    if (!(hi > lo))
        return 0;
    double levels = ldexp(1.0, bits) - 1.0;
    *s = fp16 ? 1.0 / (double)bp_fp16_step((float)((hi - lo) / levels)) : levels / (hi - lo);
    *z = nearbyint(*s * lo) + ldexp(1.0, bits - 1);
    return 1;
}

static void sq_one_row(sq_row *w, const float *W, int64_t ksize, int bits, int mode, int fp16,
                       sq_cand *cands, float *out, int32_t *codes)
{
    int64_t n = w->n;
    double s, z, half = ldexp(1.0, bits - 1);
    if (!bp_squant_row_grid(W, n, bits, fp16, &s, &z)) {   /* constant row: kept exactly */
        memcpy(out, W, (size_t)n * sizeof *out);
        if (codes)
            memset(codes, 0, (size_t)n * sizeof *codes);
        return;
    }
    w->qmin = -half, w->qmax = half - 1.0;
    for (int64_t j = 0; j < n; j++) {
        w->x[j] = s * W[j] - z;
        w->r[j] = (int32_t)nearbyint(w->x[j]);
        w->e[j] = w->r[j] - w->x[j];
    }
    int kernels = (mode & BP_SQ_K) && ksize > 1;
    if (kernels)
        for (int64_t k = 0; k < n / ksize; k++)
            cands[k] = sq_kernel(w, k * ksize, (k + 1) * ksize);
    if (mode & BP_SQ_C)
        sq_row_stage(w, kernels ? cands : NULL, n / ksize);
    for (int64_t j = 0; j < n; j++) {
        int32_t r = w->r[j];
        r = r < (int32_t)w->qmin ? (int32_t)w->qmin : r > (int32_t)w->qmax ? (int32_t)w->qmax : r;
        out[j] = (float)(((double)r + z) / s);
        if (codes)
            codes[j] = r;
    }
}

int bp_squant_quantize(const float *W, int64_t rows, int64_t cols, int64_t ksize, int bits,
                       int mode, int fp16, float *out, int32_t *codes, bp_error *err)
{
    if (bits < 2 || bits > 16)
        return bp_fail(err, "squant: %d bits is outside 2..16", bits);
    if (ksize < 1 || cols % ksize != 0)
        return bp_fail(err, "squant: rows of %lld columns are not whole kernels of %lld",
                       (long long)cols, (long long)ksize);
    if (bits >= 16) {
        memcpy(out, W, (size_t)(rows * cols) * sizeof *out);
        return 0;
    }
    sq_row w = {cols, bp_malloc((size_t)cols * sizeof(double), err),
                bp_malloc((size_t)cols * sizeof(double), err),
                bp_malloc((size_t)cols * sizeof(int32_t), err), 0, 0,
                bp_malloc((size_t)cols * sizeof(sq_rank), err)};
    sq_cand *cands = bp_malloc((size_t)(cols / ksize) * sizeof *cands, err);
    int rc = w.x && w.e && w.r && w.rank && cands ? 0 : -1;
    for (int64_t o = 0; rc == 0 && o < rows; o++)
        sq_one_row(&w, W + o * cols, ksize, bits, mode, fp16, cands, out + o * cols,
                   codes ? codes + o * cols : NULL);
    free(w.x);
    free(w.e);
    free(w.r);
    free(w.rank);
    free(cands);
    return rc;
}
