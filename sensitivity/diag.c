/*
 * diag.c - errors from diagonal statistics (layer.h's bp_diag): an
 * importance matrix's mean squared input per column, and an embedding
 * table's per-row weight.
 *
 * For weights W and their quantized What, dW = What - W, row r of matrix
 * m(r) (out / n_mat rows per matrix):
 *
 *     e_r      = sum_j d_{m(r),j} dW_rj^2 + row_w sum_j dW_rj^2
 *     mse      = sum_r e_r                  (E ||dW x||^2 for uncorrelated x)
 *     relative = mse / sum_r (sum_j d_{m(r),j} W_rj^2 + row_w sum_j W_rj^2)
 *     fisher   = 1/2 sum_r grad2_r e_r      (with the output Fisher's diagonal)
 *     hawq     = (2 mean_j d_j + 2 row_w) ||dW||^2
 *     weight   = ||dW||^2 / params
 *
 * Everything is O(params) per candidate.  For llama.cpp's types the rows
 * are quantized, dequantized and measured one at a time, never holding a
 * quantized matrix: a 7B model's largest tensor costs one row of memory
 * per thread.  Rows are cut into fixed chunks whose sums are added in chunk
 * order, so the result does not depend on how many threads ran them.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_threads.h"
#include "ggml.h"
#include "sensctx.h"

#define DIAG_CHUNK 64               /* rows per chunk */

enum { S_MSE, S_ENERGY, S_FISHER, S_DW2, S_COUNT };

typedef struct diag_job {
    const bp_layer *l;
    const float *What;                  /* the whole quantized matrix, or NULL: ggml rows */
    int type;                           /* ggml type, when What is NULL */
    int64_t n_chunks;
    double *sums;                       /* n_chunks x S_COUNT */
    int64_t next;                       /* the next chunk to take */
    pthread_mutex_t lock;
    int failed;
} diag_job;

/* Row r's sums: its error, its energy, its Fisher-weighted error and its
 * squared weight error, added to s. */
static void row_sums(const bp_layer *l, int64_t r, const float *wh, double *s)
{
    const bp_diag *g = l->diag;
    int64_t in = l->in * l->groups, per = l->out / (g->n_mat > 0 ? g->n_mat : 1);
    const double *d = g->d ? g->d + (r / per) * in : NULL;
    const float *w = l->W + r * in;
    double e = 0.0, en = 0.0, dw2 = 0.0, w2 = 0.0;
    for (int64_t j = 0; j < in; j++) {
        double dw = (double)wh[j] - w[j], ww = (double)w[j] * w[j];
        if (d) {
            e += d[j] * dw * dw;
            en += d[j] * ww;
        }
        dw2 += dw * dw;
        w2 += ww;
    }
    e += g->row_w * dw2;
    en += g->row_w * w2;
    s[S_MSE] += e;
    s[S_ENERGY] += en;
    s[S_FISHER] += l->grad2 ? 0.5 * l->grad2[r] * e : 0.0;
    s[S_DW2] += dw2;
}

static void *diag_worker(void *arg)
{
    diag_job *j = arg;
    const bp_layer *l = j->l;
    int64_t in = l->in * l->groups;
    float *row = j->What ? NULL : malloc((size_t)in * sizeof *row);
    unsigned char *q = j->What ? NULL : malloc((size_t)bp_ggml_row_bytes(j->type, in) + 1);
    int64_t per = l->out / (l->diag->n_mat > 0 ? l->diag->n_mat : 1);
    if (!j->What && (!row || !q)) {
        pthread_mutex_lock(&j->lock);
        j->failed = 1;
        pthread_mutex_unlock(&j->lock);
    }
    for (;;) {
        pthread_mutex_lock(&j->lock);
        int64_t c = j->failed ? j->n_chunks : j->next++;
        pthread_mutex_unlock(&j->lock);
        if (c >= j->n_chunks)
            break;
        double *s = j->sums + c * S_COUNT;
        for (int64_t r = c * DIAG_CHUNK; r < l->out && r < (c + 1) * DIAG_CHUNK; r++) {
            const float *wh = j->What ? j->What + r * in : row;
            if (!j->What) {
                const float *qw = l->diag->qw ? l->diag->qw + (r / per) * in : NULL;
                bp_ggml_quantize_row(j->type, l->W + r * in, in, qw, q);
                bp_ggml_dequantize_row(j->type, q, in, row);
            }
            row_sums(l, r, wh, s);
        }
    }
    free(row);
    free(q);
    return NULL;
}

/* The sums over every row (What given, or the ggml type's rows made here). */
static int diag_sums(const bp_layer *l, const float *What, int type, double *tot,
                     bp_error *err)
{
    diag_job j = {l, What, type, (l->out + DIAG_CHUNK - 1) / DIAG_CHUNK, NULL, 0,
                  PTHREAD_MUTEX_INITIALIZER, 0};
    if (!(j.sums = bp_calloc((size_t)(j.n_chunks ? j.n_chunks : 1) * S_COUNT, sizeof(double),
                             err)))
        return -1;
    int nt = bp_threads();
    if (nt > j.n_chunks)
        nt = (int)(j.n_chunks ? j.n_chunks : 1);
    pthread_t th[BP_THREADS_MAX];
    int started = 0;
    for (int t = 1; t < nt; t++)
        if (pthread_create(&th[t], NULL, diag_worker, &j) == 0)
            started = t;
        else
            break;
    diag_worker(&j);
    for (int t = 1; t <= started; t++)
        pthread_join(th[t], NULL);
    memset(tot, 0, S_COUNT * sizeof *tot);
    for (int64_t c = 0; c < j.n_chunks; c++)           /* in chunk order */
        for (int k = 0; k < S_COUNT; k++)
            tot[k] += j.sums[c * S_COUNT + k];
    free(j.sums);
    return j.failed ? bp_fail(err, "out of memory") : 0;
}

/* The mean of d over the layer's columns and matrices. */
static double mean_d(const bp_diag *g, int64_t in)
{
    double s = 0.0;
    int64_t n = (g->n_mat > 0 ? g->n_mat : 1) * in;
    for (int64_t i = 0; g->d && i < n; i++)
        s += g->d[i];
    return g->d && n ? s / (double)n : 0.0;
}

int bp_sx_diag_values(const bp_layer *l, const bp_sens_spec *spec, float *const *What,
                      double *values, bp_error *err)
{
    size_t nw = spec->n_wbits, na = spec->n_abits;
    int64_t params = bp_layer_params(l);
    double trace = 2.0 * mean_d(l->diag, l->in * l->groups) + 2.0 * l->diag->row_w;
    for (size_t b = 0; b < nw; b++) {
        double s[S_COUNT], v[BP_METRIC_COUNT];
        int type = spec->quantizer == BP_WQ_GGML ? bp_sx_ggml_type(l, spec->ggml_types[b]) : -1;
        if (spec->quantizer == BP_WQ_GGML && type < 0)
            return bp_fail(err, "rows of %lld elements do not fill %s's blocks and "
                           "llama-quantize has no fallback for it", (long long)l->in,
                           bp_ggml_type_name(spec->ggml_types[b]));
        if (diag_sums(l, spec->quantizer == BP_WQ_GGML ? NULL : What[b], type, s, err) < 0)
            return -1;
        for (int m = 0; m < BP_METRIC_COUNT; m++)
            v[m] = NAN;
        v[BP_METRIC_WEIGHT] = params ? s[S_DW2] / (double)params : 0.0;
        v[BP_METRIC_HAWQ] = trace * s[S_DW2];
        v[BP_METRIC_MSE] = s[S_MSE];
        v[BP_METRIC_RELATIVE] = s[S_ENERGY] > 0.0 ? s[S_MSE] / s[S_ENERGY] : 0.0;
        if (l->grad2)
            v[BP_METRIC_FISHER] = s[S_FISHER];
        for (size_t a = 0; a < na; a++)
            memcpy(values + (b * na + a) * BP_METRIC_COUNT, v, sizeof v);
    }
    return 0;
}
