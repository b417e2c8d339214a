/*
 * distrib.c - point-to-point messages between the ranks (Open MPI), or a
 * one-rank stand-in without MPI.  Only point-to-point calls are used, so a
 * rank that fails early never leaves the others in a collective.
 */
#include "distrib.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal.h"
#include "measure.h"

#ifdef BITPLAN_MPI
#include <mpi.h>

static int dist_on;

typedef struct pending {
    MPI_Request req;
    void *buf;
} pending;
static pending *sends;
static size_t n_sends, cap_sends;

int bp_dist_init(int *argc, char ***argv)
{
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS)
        return -1;
    dist_on = 1;
    return 0;
}

void bp_dist_finalize(void)
{
    if (!dist_on)
        return;
    bp_dist_flush();
    MPI_Finalize();
    dist_on = 0;
}

int bp_dist_rank(void)
{
    int r = 0;
    if (dist_on)
        MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int bp_dist_size(void)
{
    int s = 1;
    if (dist_on)
        MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
}

void bp_dist_abort(int code)
{
    if (dist_on && bp_dist_size() > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
}

int bp_dist_send(int to, int kind, const void *buf, size_t n, int async)
{
    if (n > (size_t)0x7fffffff)
        return -1;
    if (!async)
        return MPI_Ssend(buf, (int)n, MPI_BYTE, to, kind, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : -1;
    if (n_sends == cap_sends) {
        size_t cap = cap_sends ? 2 * cap_sends : 16;
        pending *p = realloc(sends, cap * sizeof *p);
        if (!p)
            return -1;
        sends = p, cap_sends = cap;
    }
    void *copy = malloc(n ? n : 1);
    if (!copy)
        return -1;
    memcpy(copy, buf, n);
    pending *p = &sends[n_sends];
    if (MPI_Isend(copy, (int)n, MPI_BYTE, to, kind, MPI_COMM_WORLD, &p->req) != MPI_SUCCESS) {
        free(copy);
        return -1;
    }
    p->buf = copy;
    n_sends++;
    return 0;
}

void bp_dist_flush(void)
{
    for (size_t i = 0; i < n_sends; i++) {
        MPI_Wait(&sends[i].req, MPI_STATUS_IGNORE);
        free(sends[i].buf);
    }
    n_sends = 0;
}

int bp_dist_recv(int from0, int wait, int *from, int *kind, char **buf, size_t *n)
{
    MPI_Status st;
    int src = from0 ? 0 : MPI_ANY_SOURCE, flag = 1, count;
    if (wait)
        MPI_Probe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
    else
        MPI_Iprobe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
    if (!flag)
        return 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    char *b = malloc((size_t)count + 1);
    if (!b)
        return -1;
    MPI_Recv(b, count, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    b[count] = '\0';
    *from = st.MPI_SOURCE, *kind = st.MPI_TAG, *buf = b, *n = (size_t)count;
    return 1;
}

#else  /* one rank */

int bp_dist_init(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return 0;
}
void bp_dist_finalize(void) {}
int bp_dist_rank(void) { return 0; }
int bp_dist_size(void) { return 1; }
void bp_dist_abort(int code) { (void)code; }
int bp_dist_send(int to, int kind, const void *buf, size_t n, int async)
{
    (void)to, (void)kind, (void)buf, (void)n, (void)async;
    return -1;
}
void bp_dist_flush(void) {}
int bp_dist_recv(int from0, int wait, int *from, int *kind, char **buf, size_t *n)
{
    (void)from0, (void)wait, (void)from, (void)kind, (void)buf, (void)n;
    return 0;
}

#endif

/* ---- dealing layers and gathering their rows ------------------------------ */

/* ---- distributed (distrib.h) -------------------------------------------- */

/*
 * The cost model the layers are dealt by: estimated flops of measuring
 * layer d (README, "Running across machines"): per activation width the
 * Gram (n in^2 per group, from rows) and, quantized, the cross terms; per
 * candidate the quadratic form 2 o in^2; GPTQ's factor (in^3 / 3) per
 * width and its updates 2 o in^2 per candidate; ERQ's solves (in^3) and
 * products per candidate.
 */
static double layer_flops(const bp_layer_desc *d, const bp_config *cfg)
{
    double in = (double)d->in, g = d->groups, o = (double)d->out / g;
    double n = d->stats ? 0.0 : (double)d->n, w = (double)cfg->n_wbits;
    double a = (double)cfg->n_abits, qa = 0.0, f = 0.0;
    for (size_t i = 0; i < cfg->n_abits; i++)
        qa += cfg->abits[i] < BP_BITS_FLOAT;
    double cross = d->stats ? 4.0 * o * in * in : fmin(3.0 * n * in * in + 4.0 * o * in * in,
                                                       4.0 * n * in * o);
    f += a * n * in * in + qa * cross;
    for (size_t q = 0; q < cfg->n_quantizers; q++) {
        f += w * a * 2.0 * o * in * in;
        if (cfg->quantizers[q] == BP_WQ_GPTQ)
            f += a * (in * in * in / 3.0 + w * 2.0 * o * in * in);
        else if (cfg->quantizers[q] == BP_WQ_ERQ)
            f += a * w * (in * in * in + 4.0 * o * in * in);
    }
    return g * f + 1.0;
}

/* Do layers i - 1 and i read the same inputs (the same statistics set, or
 * equal bytes of the same shape in a safetensors file)? */
static int same_inputs(const bp_model *m, size_t i)
{
    const bp_layer_desc *a = &m->layers[i - 1], *b = &m->layers[i];
    if (a->stats || b->stats)
        return a->stats && b->stats && strcmp(a->stats, b->stats) == 0;
    if (a->input < 0 || b->input < 0 || m->calib.is_dir)
        return 0;
    const bp_st_tensor *x = &m->calib.st.tensors[a->input], *y = &m->calib.st.tensors[b->input];
    const unsigned char *base = m->calib.st.map + m->calib.st.data_start;
    return x->dtype == y->dtype && x->end - x->begin == y->end - y->begin &&
           memcmp(x->shape, y->shape, sizeof x->shape) == 0 &&
           memcmp(base + x->begin, base + y->begin, x->end - x->begin) == 0;
}

typedef struct unit {
    size_t first, count;             /* consecutive layers reading the same inputs */
    double cost;
} unit;

static int cmp_unit_cost(const void *a, const void *b)
{
    const unit *x = a, *y = b;
    return x->cost > y->cost ? -1 : x->cost < y->cost ? 1 : (x->first > y->first) - (x->first < y->first);
}

/* owner[i] = the rank that measures layer i (layers not done): runs of
 * layers with the same inputs stay together, dealt longest first to the
 * least loaded rank. */
static int deal_layers(const bp_config *cfg, const bp_model *m, const unsigned char *done,
                       int ranks, int *owner, bp_error *err)
{
    unit *u = bp_malloc((m->n_layers + 1) * sizeof *u, err);
    double *load = bp_calloc((size_t)ranks, sizeof *load, err);
    if (!u || !load) {
        free(u);
        free(load);
        return -1;
    }
    size_t nu = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        owner[i] = -1;
        if (done[i])
            continue;
        double c = layer_flops(&m->layers[i], cfg);
        if (nu && u[nu - 1].first + u[nu - 1].count == i && same_inputs(m, i))
            u[nu - 1].count++, u[nu - 1].cost += c;
        else
            u[nu++] = (unit){i, 1, c};
    }
    qsort(u, nu, sizeof *u, cmp_unit_cost);
    for (size_t k = 0; k < nu; k++) {
        int best = 0;
        for (int r = 1; r < ranks; r++)
            if (load[r] < load[best])
                best = r;
        load[best] += u[k].cost;
        for (size_t j = 0; j < u[k].count; j++)
            owner[u[k].first + j] = best;
    }
    free(u);
    free(load);
    return 0;
}

/* A worker's message on rank 0: a layer's rows into t and the journal. */
static int take_message(const bp_model *m, int from, int kind, const char *buf, size_t n,
                        bp_table *t, bp_journal *jr, bp_error *err)
{
    if (kind == BP_MSG_ERROR)
        return bp_fail(err, "rank %d: %s", from, buf);
    int64_t idx;
    if (kind != BP_MSG_LAYER || n < sizeof idx)
        return bp_fail(err, "rank %d: unexpected message %d", from, kind);
    memcpy(&idx, buf, sizeof idx);
    if (idx < 0 || (size_t)idx >= m->n_layers)
        return bp_fail(err, "rank %d: layer index %lld out of range", from, (long long)idx);
    bp_table got;
    size_t before = t->n;
    if (bp_table_parse_csv(&got, buf + sizeof idx, n - sizeof idx, "rank message", err) < 0)
        return -1;
    int rc = 0;
    for (size_t r = 0; rc == 0 && r < got.n; r++)
        rc = bp_table_add(t, &got.rows[r], err);
    bp_table_free(&got);
    return rc < 0 ? -1 : bp_journal_layer(jr, t, before, (size_t)idx, err);
}

/* Rank 0 of several: deal the layers not done, measure its own, gather the
 * others' as they come (each journaled on arrival). */
int bp_measure_distributed(const bp_config *cfg, const bp_model *m, bp_step_fn progress,
                               void *ctx, bp_table *t, const unsigned char *done,
                               size_t n_done, bp_journal *jr, bp_error *err)
{
    int ranks = bp_dist_size();
    int *owner = bp_malloc((m->n_layers + 1) * sizeof *owner, err);
    int64_t *list = bp_malloc((m->n_layers + 1) * sizeof *list, err);
    bp_measurer ms = {0};
    int rc = owner && list && deal_layers(cfg, m, done, ranks, owner, err) == 0 &&
             bp_measurer_init(&ms, cfg, m, err) == 0 ? 0 : -1;
    size_t remote = 0, finished = n_done;
    for (int r = 1; rc == 0 && r < ranks; r++) {
        size_t k = 0;
        for (size_t i = 0; i < m->n_layers; i++)
            if (owner[i] == r)
                list[k++] = (int64_t)i;
        remote += k;
        if (bp_dist_send(r, BP_MSG_PLAN, list, k * sizeof *list, 1) < 0)
            rc = bp_fail(err, "cannot send rank %d its layers", r);
    }
    for (size_t i = 0; rc == 0 && (i < m->n_layers || remote); ) {
        int from, kind;
        char *buf = NULL;
        size_t n;
        int own = i < m->n_layers;
        if (own && owner[i] != 0) {
            i++;
            continue;
        }
        int got = bp_dist_recv(0, 0, &from, &kind, &buf, &n);   /* what has arrived */
        if (got < 0)
            rc = bp_fail(err, "out of memory receiving a rank's rows");
        else if (got) {
            rc = take_message(m, from, kind, buf, n, t, jr, err);
            remote--, finished++;
            if (rc == 0 && progress)
                progress(ctx, finished, m->n_layers, t->n ? t->rows[t->n - 1].layer : NULL);
        } else if (bp_interrupt_requested) {
            rc = bp_fail(err, "interrupted after %zu of %zu layers; they are kept in %s, run "
                         "again to continue", finished, m->n_layers, jr->path);
        } else if (own) {
            size_t before = t->n;
            if (progress)
                progress(ctx, finished, m->n_layers, m->layers[i].name);
            rc = bp_measure_layer(&ms, i, t, err) < 0 || bp_journal_layer(jr, t, before, i, err) < 0
                     ? -1 : 0;
            i++, finished++;
        } else {
            struct timespec ts = {0, 5000000};   /* waiting for the others */
            nanosleep(&ts, NULL);
        }
        free(buf);
    }
    if (ms.sg)
        bp_measurer_free(&ms);
    free(owner);
    free(list);
    if (rc == 0 && progress)
        progress(ctx, m->n_layers, m->n_layers, NULL);
    return rc;
}

int bp_sens_worker(const bp_config *cfg, const bp_error *cfg_err)
{
    bp_model m;
    int opened = 0;
    for (;;) {
        int from, kind;
        char *buf = NULL;
        size_t n;
        bp_error err;
        if (bp_dist_recv(1, 1, &from, &kind, &buf, &n) <= 0 || kind != BP_MSG_PLAN) {
            free(buf);
            break;                   /* STOP (or nothing more can come) */
        }
        int rc = 0;
        if (!cfg) {
            err = *cfg_err;
            rc = -1;
        } else if (!opened) {
            rc = bp_model_open(&m, cfg->weights, cfg->calibration, cfg->imatrix, cfg->include, cfg->n_include,
                               cfg->exclude, cfg->n_exclude, &err);
            opened = rc == 0;
        }
        bp_measurer ms = {0};
        if (rc == 0)
            rc = bp_measurer_init(&ms, cfg, &m, &err);
        const int64_t *list = (const int64_t *)buf;
        for (size_t k = 0; rc == 0 && k < n / sizeof *list; k++) {
            bp_table t;
            bp_table_init(&t);
            char *text = NULL;
            size_t len = 0;
            FILE *mem = NULL;
            if (list[k] < 0 || (size_t)list[k] >= m.n_layers)
                rc = bp_fail(&err, "layer index %lld out of range", (long long)list[k]);
            else if ((rc = bp_measure_layer(&ms, (size_t)list[k], &t, &err)) == 0 &&
                     !(mem = open_memstream(&text, &len)))
                rc = bp_fail(&err, "out of memory");
            if (rc == 0) {
                fwrite(&list[k], sizeof *list, 1, mem);
                fputs(BP_TABLE_HEADER "\n", mem);
                bp_table_write_rows(&t, 0, t.n, mem);
                fclose(mem);
                mem = NULL;
                if (bp_dist_send(0, BP_MSG_LAYER, text, len, 1) < 0)
                    rc = bp_fail(&err, "cannot send layer %lld's rows", (long long)list[k]);
            }
            if (mem)
                fclose(mem);
            free(text);
            bp_table_free(&t);
        }
        if (ms.sg)
            bp_measurer_free(&ms);
        if (rc < 0)                  /* rank 0 reports it and ends the job */
            bp_dist_send(0, BP_MSG_ERROR, err.msg, strlen(err.msg) + 1, 0);
        bp_dist_flush();
        free(buf);
    }
    if (opened)
        bp_model_close(&m);
    return 0;
}
