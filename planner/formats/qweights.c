/*
 * qweights.c - write and check the quantized weights of a plan (layout in
 * qweights.h).  Every layer is quantized again with its chosen candidate;
 * the codes are derived from the per-element grid the quantizer reports and
 * checked to reproduce its weights before anything is written.
 */
#include "qweights.h"

#include "common/bp_profile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model.h"
#include "../pipeline.h"

/* Everything the output file holds, owned here until written. */
typedef struct qfile {
    bp_st_entry *e;
    size_t n, cap;
    bp_st_meta *meta;
    size_t n_meta, cap_meta;
    void **owned;
    size_t n_owned, cap_owned;
} qfile;

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? 2 * *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * size);
    if (q)
        *cap = c;
    return q;
}

static void *own(qfile *f, void *p)
{
    void **o = grow(f->owned, &f->cap_owned, f->n_owned + 1, sizeof *o);
    if (!o || !p) {
        free(p);
        return NULL;
    }
    f->owned = o;
    f->owned[f->n_owned++] = p;
    return p;
}

static char *own_printf(qfile *f, const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, a, b ? b : "");
    return own(f, s);
}

static int add_entry(qfile *f, const char *name, const char *suffix, bp_dtype dt, int64_t r0,
                     int64_t r1, int rank, void *data, size_t nbytes, bp_error *err)
{
    bp_st_entry *e = grow(f->e, &f->cap, f->n + 1, sizeof *e);
    char *full = own_printf(f, "%s%s", name, suffix);
    if (!e || !full)
        return bp_fail(err, "out of memory writing quantized weights");
    f->e = e;
    f->e[f->n++] = (bp_st_entry){full, dt, rank, {r0, r1}, data, nbytes};
    return 0;
}

static int add_meta(qfile *f, const char *layer, const char *key, const char *value,
                    bp_error *err)
{
    bp_st_meta *m = grow(f->meta, &f->cap_meta, f->n_meta + 1, sizeof *m);
    char *k = own_printf(f, "%s.%s", layer, key), *v = own_printf(f, "%s%s", value, NULL);
    if (!m || !k || !v)
        return bp_fail(err, "out of memory writing quantized weights");
    f->meta = m;
    f->meta[f->n_meta++] = (bp_st_meta){k, v};
    return 0;
}

static void qfile_free(qfile *f)
{
    for (size_t i = 0; i < f->n_owned; i++)
        free(f->owned[i]);
    free(f->owned);
    free(f->e);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

/* Scale groups per row under grid g for `in` columns. */
static int64_t n_groups(const bp_qspec *g, int64_t in)
{
    return g->granularity == BP_GRAN_GROUP ? (in + g->group_size - 1) / g->group_size : 1;
}

/* Codes from the per-element grid, checked against What; the per-block
 * scales and zeros into S and Z (rows_s x G).  Column j of a row in conv
 * group c belongs to scale group g_idx[c * in + j]. */
static int to_codes(const bp_layer *l, const bp_qspec *g, float *What, const float *es,
                    const float *ez, const int32_t *g_idx, void *codes, float *S, float *Z,
                    bp_error *err)
{
    int64_t in = l->in, G = n_groups(g, in), og = l->out / l->groups;
    int tensor = g->granularity == BP_GRAN_TENSOR;
    float maxq = (float)((1u << g->bits) - 1u);
    unsigned char *seen = bp_calloc((size_t)(tensor ? 1 : l->out * G), 1, err);
    if (!seen)
        return -1;
    int rc = 0;
    for (int64_t r = 0; rc == 0 && r < l->out; r++)
        for (int64_t j = 0; j < in; j++) {
            int64_t i = r * in + j, blk = tensor ? 0 : r * G + g_idx[(r / og) * in + j];
            if (!seen[blk])
                S[blk] = es[i], Z[blk] = ez[i], seen[blk] = 1;
            if (es[i] != S[blk] || ez[i] != Z[blk]) {
                rc = bp_fail(err, "layer '%s': the grid is not constant over its %s block "
                             "(internal error)", l->name, bp_granularity_name(g->granularity));
                break;
            }
            float u = fminf(fmaxf(nearbyintf(What[i] / es[i] + ez[i]), 0.0f), maxq);
            float back = es[i] * (u - ez[i]);
            if (fabsf(back - What[i]) > 1e-5f * fmaxf(fabsf(What[i]), es[i])) {
                rc = bp_fail(err, "layer '%s': weight %lld is off its grid (%.9g vs %.9g; "
                             "internal error)", l->name, (long long)i, What[i], back);
                break;
            }
            What[i] = back;                  /* the canonical dequantized value */
            if (g->bits <= 8)
                ((unsigned char *)codes)[i] = (unsigned char)u;
            else
                ((uint16_t *)codes)[i] = (uint16_t)u;
        }
    free(seen);
    return rc;
}

/* Does g_idx differ from column / group_size anywhere? */
static int permuted_groups(const bp_layer *l, const bp_qspec *g, const int32_t *g_idx)
{
    for (int64_t c = 0; g->granularity == BP_GRAN_GROUP && c < l->in * l->groups; c++)
        if (g_idx[c] != (c % l->in) / g->group_size)
            return 1;
    return 0;
}

/* NAME.scales as the plan counted them (F16 with fp16 scales, else F32) and
 * NAME.zeros as integers: in the codes' dtype when every zero point is a
 * code (always, except ERQ's grid, which does not widen its range to 0 and
 * so may put the zero point of a one-signed block off the code range), else
 * I32.  The values are exact: the quantizers fitted fp16 steps. */
static int add_grid(qfile *f, const char *name, const bp_qspec *g, size_t rows, size_t cols,
                    const float *S, const float *Z, bp_error *err)
{
    size_t n = rows * cols;
    float maxq = (float)((1u << g->bits) - 1u);
    int in_codes = 1;
    for (size_t i = 0; i < n; i++) {
        if (Z[i] != nearbyintf(Z[i]) || fabsf(Z[i]) > 0x1p30f)
            return bp_fail(err, "layer '%s': zero point %g is not an integer (internal error)",
                           name, Z[i]);
        in_codes &= Z[i] >= 0.0f && Z[i] <= maxq;
    }
    bp_dtype zt = !in_codes ? BP_DT_I32 : g->bits <= 8 ? BP_DT_U8 : BP_DT_U16;
    size_t zsize = zt == BP_DT_I32 ? 4 : zt == BP_DT_U16 ? 2 : 1;
    unsigned char *zb = own(f, malloc(n * zsize));
    void *sb = g->fp16_scales ? own(f, malloc(n * sizeof(uint16_t))) : (void *)S;
    if (!zb || !sb)
        return bp_fail(err, "out of memory exporting layer '%s'", name);
    for (size_t i = 0; i < n; i++) {
        if (g->fp16_scales) {
            uint16_t h = bp_f32_to_f16(S[i]);
            if (bp_f16_to_f32(h) != S[i])
                return bp_fail(err, "layer '%s': step %.9g is not an fp16 value (internal "
                               "error)", name, S[i]);
            ((uint16_t *)sb)[i] = h;
        }
        int32_t z = (int32_t)Z[i];
        if (zt == BP_DT_U8)
            zb[i] = (unsigned char)z;
        else if (zt == BP_DT_U16)
            ((uint16_t *)zb)[i] = (uint16_t)z;
        else
            ((int32_t *)zb)[i] = z;
    }
    int rc = add_entry(f, name, ".scales", g->fp16_scales ? BP_DT_F16 : BP_DT_F32,
                       (int64_t)rows, (int64_t)cols, 2, sb,
                       n * (g->fp16_scales ? sizeof(uint16_t) : sizeof(float)), err);
    return rc < 0 ? -1 : add_entry(f, name, ".zeros", zt, (int64_t)rows, (int64_t)cols, 2, zb,
                                   n * zsize, err);
}

static int shape_meta(qfile *f, const bp_model *m, const bp_layer_desc *d, bp_error *err)
{
    bp_tensor_ref w = bp_tensorset_get(&m->weights, (size_t)d->weight);
    char buf[200] = "";
    for (int i = 0; i < w.rank; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld", i ? "," : "",
                 (long long)w.shape[i]);
    return add_meta(f, d->name, "shape", buf, err);
}

/* The activation grid the plan's abits use on this layer's inputs, as the
 * sensitivity stage fitted it on the calibration rows: NAME.act_scale and
 * NAME.act_zero (one pair, or one per input column for ptf; log2 keeps its
 * maximum in act_scale), plus NAME.act_quantizer / act_granularity /
 * act_symmetric / act_range.  Per-token grids are fitted per row at run
 * time, so they have the metadata only. */
static int export_act_grid(qfile *f, const bp_layer *l, const bp_qspec *acts,
                           const bp_plan_layer *pl, bp_error *err)
{
    bp_qspec a = *acts;
    a.bits = pl->abits;
    int64_t cols = l->in * l->groups;
    int rc = add_meta(f, pl->name, "act_quantizer", bp_qkind_name(a.kind), err);
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "act_granularity",
                                a.kind == BP_AQ_UNIFORM ? bp_granularity_name(a.granularity)
                                                        : "per_tensor", err);
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "act_symmetric", a.symmetric ? "true" : "false", err);
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "act_range", bp_range_name(a.range), err);
    if (rc < 0 || !l->X || l->n <= 0)
        return rc;
    float *S = own(f, malloc((size_t)cols * sizeof(float)));
    float *Z = own(f, malloc((size_t)cols * sizeof(float)));
    if (!S || !Z)
        return bp_fail(err, "out of memory exporting layer '%s'", pl->name);
    int64_t k = bp_act_grid(l->X, l->n, cols, &a, S, Z);
    if (k == 0)
        return 0;
    rc = add_entry(f, pl->name, ".act_scale", BP_DT_F32, k, 0, 1, S, (size_t)k * sizeof(float),
                   err);
    return rc < 0 ? -1 : add_entry(f, pl->name, ".act_zero", BP_DT_F32, k, 0, 1, Z,
                                   (size_t)k * sizeof(float), err);
}

/* One layer at its chosen candidate into f; *spent: the seconds it gave to
 * the load and weights stages. */
static int export_layer(qfile *f, const bp_config *cfg, const bp_model *m, size_t idx,
                        const bp_plan_layer *pl, int dequantized, double *spent, bp_error *err)
{
    bp_loaded_layer ll;
    const bp_layer *l = &ll.view;
    int wq = bp_wquantizer_parse(pl->quantizer);
    if (wq < 0)
        return bp_fail(err, "layer '%s': quantizer '%s' is not one bitplan can apply",
                       pl->name, pl->quantizer);
    bp_sens_spec spec;
    bp_sens_spec_from_config(cfg, &spec);
    spec.quantizer = (bp_wquantizer)wq;
    spec.acts = bp_config_acts_for_quantizer(cfg, pl->name, spec.quantizer);
    spec.abits = &pl->abits, spec.n_abits = 1;    /* statistics: this width's grid only */
    bp_stats_grid sg[1];
    double t = bp_now();
    if (bp_model_load_layer_acts(m, idx, &spec.acts, 1, &pl->abits, 1, &ll, sg, err) < 0)
        return -1;
    double t_load = bp_now() - t;
    bp_profile_add(BP_STAGE_LOAD, t_load);
    *spent += t_load;
    bp_qspec g = bp_sens_weight_grid(&spec, spec.quantizer);
    g.bits = pl->wbits;
    size_t nel = (size_t)(l->out * l->in), G = (size_t)n_groups(&g, l->in);
    size_t rows_s = g.granularity == BP_GRAN_TENSOR ? 1 : (size_t)l->out;
    size_t cols_s = g.granularity == BP_GRAN_TENSOR ? 1 : G;
    float *What = own(f, malloc(nel * sizeof(float)));
    float *bhat = l->bias ? own(f, malloc((size_t)l->out * sizeof(float))) : NULL;
    float *es = malloc(nel * sizeof(float)), *ez = malloc(nel * sizeof(float));
    int32_t *g_idx = own(f, malloc((size_t)(l->in * l->groups) * sizeof(int32_t)));
    float *S = own(f, malloc(rows_s * cols_s * sizeof(float)));
    float *Z = own(f, malloc(rows_s * cols_s * sizeof(float)));
    void *codes = own(f, malloc(nel * (pl->wbits <= 8 ? 1 : 2)));
    char num[32];
    int rc = What && (bhat || !l->bias) && es && ez && S && Z && codes && g_idx ? 0
             : bp_fail(err, "out of memory exporting layer '%s'", pl->name);
    if (rc == 0 && pl->wbits >= BP_BITS_FLOAT) {
        memcpy(What, l->W, nel * sizeof(float));
        if (bhat)
            memcpy(bhat, l->bias, (size_t)l->out * sizeof(float));
        rc = add_entry(f, pl->name, ".weight", BP_DT_F32, l->out, l->in, 2, What,
                       nel * sizeof(float), err);
    } else if (rc == 0) {
        t = bp_now();
        rc = bp_quantize_candidate(l, &spec, pl->wbits, pl->abits, What, bhat, es, ez, g_idx,
                                   err);
        double t_w = bp_now() - t;
        bp_profile_add(BP_STAGE_WEIGHTS, t_w);
        *spent += t_w;
        if (rc == 0)
            rc = to_codes(l, &g, What, es, ez, g_idx, codes, S, Z, err);
        if (rc == 0 && permuted_groups(l, &g, g_idx))
            rc = add_entry(f, pl->name, ".g_idx", BP_DT_I32, l->groups > 1 ? l->groups : l->in,
                           l->groups > 1 ? l->in : 0, l->groups > 1 ? 2 : 1, g_idx,
                           (size_t)(l->in * l->groups) * sizeof(int32_t), err);
        if (rc == 0)
            rc = add_entry(f, pl->name, ".qweight", pl->wbits <= 8 ? BP_DT_U8 : BP_DT_U16,
                           l->out, l->in, 2, codes, nel * (pl->wbits <= 8 ? 1 : 2), err);
        if (rc == 0)
            rc = add_grid(f, pl->name, &g, rows_s, cols_s, S, Z, err);
        if (rc == 0 && dequantized)
            rc = add_entry(f, pl->name, ".weight", BP_DT_F32, l->out, l->in, 2, What,
                           nel * sizeof(float), err);
    }
    if (rc == 0 && bhat)
        rc = add_entry(f, pl->name, ".bias", BP_DT_F32, l->out, 0, 1, bhat,
                       (size_t)l->out * sizeof(float), err);
    if (rc == 0 && pl->abits < BP_BITS_FLOAT)
        rc = export_act_grid(f, l, &spec.acts, pl, err);
    snprintf(num, sizeof num, "%d", pl->wbits);
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "wbits", num, err);
    snprintf(num, sizeof num, "%d", pl->abits);
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "abits", num, err);
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "quantizer", pl->quantizer, err);
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "granularity",
                                pl->wbits >= BP_BITS_FLOAT ? "none"
                                                           : bp_granularity_name(g.granularity),
                                err);
    snprintf(num, sizeof num, "%lld",
             (long long)(g.granularity == BP_GRAN_GROUP ? g.group_size : 0));
    rc = rc < 0 ? -1 : add_meta(f, pl->name, "group_size", num, err);
    if (pl->wbits < BP_BITS_FLOAT)
        rc = rc < 0 ? -1 : add_meta(f, pl->name, "symmetric", g.symmetric ? "true" : "false", err);
    rc = rc < 0 ? -1 : shape_meta(f, m, &m->layers[idx], err);
    free(es);
    free(ez);
    bp_loaded_layer_free(&ll);
    return rc;
}

int bp_write_quantized(const bp_config *cfg, const bp_plan *plan, const char *path,
                       int dequantized, bp_progress_fn progress, void *ctx, bp_error *err)
{
    bp_model m;
    qfile f;
    double t0 = bp_now();
    memset(&f, 0, sizeof f);
    if (bp_model_open(&m, cfg->weights, cfg->calibration, cfg->include, cfg->n_include,
                      cfg->exclude, cfg->n_exclude, err) < 0)
        return -1;
    int rc = 0;
    double spent = 0.0;          /* given to the load and weights stages */
    for (size_t i = 0; rc == 0 && i < plan->n_layers; i++) {
        const bp_plan_layer *pl = &plan->layers[i];
        size_t idx = 0;
        if (progress)
            progress(ctx, i, plan->n_layers, pl->name);
        while (idx < m.n_layers && strcmp(m.layers[idx].name, pl->name) != 0)
            idx++;
        if (idx == m.n_layers)
            rc = bp_fail(err, "%s: plan layer '%s' is not in the model", cfg->weights, pl->name);
        else
            rc = export_layer(&f, cfg, &m, idx, pl, dequantized, &spent, err);
    }
    if (rc == 0) {
        bp_st_meta *mm = grow(f.meta, &f.cap_meta, f.n_meta + 1, sizeof *mm);
        if (!mm)
            rc = bp_fail(err, "out of memory writing quantized weights");
        else
            f.meta = mm, f.meta[f.n_meta++] = (bp_st_meta){"format", "bitplan-quantized/2"};
    }
    if (progress)
        progress(ctx, plan->n_layers, plan->n_layers, NULL);
    if (rc == 0)
        rc = bp_st_write(path, f.e, f.n, f.meta, f.n_meta, err);
    if (rc < 0)
        bp_fail_prefix(err, "%s", path);
    qfile_free(&f);
    bp_model_close(&m);
    bp_profile_add(BP_STAGE_WRITE, bp_now() - t0 - spent);
    return rc;
}

/* ---- checking ------------------------------------------------------------ */

static const bp_st_tensor *need(const bp_safetensors *st, const char *layer, const char *suffix,
                                bp_error *err)
{
    char name[1100];
    snprintf(name, sizeof name, "%.1024s%.32s", layer, suffix);
    const bp_st_tensor *t = bp_st_find(st, name);
    if (!t)
        bp_fail(err, "%s: layer '%s' lacks tensor '%s'", st->path, layer, name);
    return t;
}

/* Zero points: integers (U8, U16, I32) or, in files of format 1, F32. */
static int read_zeros(const bp_safetensors *st, const bp_st_tensor *t, float *out, bp_error *err)
{
    if (t->dtype == BP_DT_F32)
        return bp_st_read_f32(st, t, out, err);
    const unsigned char *p = st->map + st->data_start + t->begin;
    for (int64_t i = 0; i < bp_st_numel(t); i++)
        switch (t->dtype) {
        case BP_DT_U8: out[i] = p[i]; break;
        case BP_DT_U16: out[i] = (float)(p[2 * i] | p[2 * i + 1] << 8); break;
        case BP_DT_I32:
            out[i] = (float)(int32_t)((uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                                      (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24);
            break;
        default:
            return bp_fail(err, "%s: tensor '%s': zero points of dtype %s (expected U8, U16 or "
                           "I32)", st->path, t->name, bp_dtype_name(t->dtype));
        }
    return 0;
}

static int check_layer(const bp_safetensors *st, const char *layer, int bits, FILE *out,
                       bp_error *err)
{
    const bp_st_tensor *q = need(st, layer, ".qweight", err), *s, *z;
    if (!q || !(s = need(st, layer, ".scales", err)) || !(z = need(st, layer, ".zeros", err)))
        return -1;
    int64_t rows = q->shape[0], cols = q->rank == 2 ? q->shape[1] : 0;
    int64_t G = s->shape[1], sr = s->shape[0];
    if (q->rank != 2 || s->rank != 2 || z->rank != 2 || z->shape[0] != sr || z->shape[1] != G ||
        (sr != rows && sr != 1) || G < 1 || (q->dtype != BP_DT_U8 && q->dtype != BP_DT_U16))
        return bp_fail(err, "%s: layer '%s': inconsistent shapes or dtypes", st->path, layer);
    char key[1100];
    snprintf(key, sizeof key, "%.1024s.group_size", layer);
    const char *gsm = bp_st_meta_get(st, key);
    int64_t gs = gsm && atoll(gsm) > 0 ? atoll(gsm) : cols, nel = rows * cols;
    if (G != (cols + gs - 1) / gs && sr != 1)
        return bp_fail(err, "%s: layer '%s': %lld scale groups per row do not match group "
                       "size %lld over %lld columns", st->path, layer, (long long)G,
                       (long long)gs, (long long)cols);
    float *S = malloc((size_t)(sr * G) * sizeof *S), *Z = malloc((size_t)(sr * G) * sizeof *Z);
    float *W = malloc((size_t)nel * sizeof *W);
    const bp_st_tensor *w;
    char wname[1100];
    snprintf(wname, sizeof wname, "%.1024s.weight", layer);
    w = bp_st_find(st, wname);
    int rc = S && Z && W && bp_st_read_f32(st, s, S, err) == 0 && read_zeros(st, z, Z, err) == 0
             ? 0 : -1;
    if (rc == 0 && w && (bp_st_numel(w) != nel || bp_st_read_f32(st, w, W, err) < 0))
        rc = bp_fail(err, "%s: layer '%s': dequantized weight does not match", st->path, layer);
    const unsigned char *raw = st->map + st->data_start + q->begin;
    unsigned maxc = 0, maxq = (1u << bits) - 1u;
    double diff = 0.0;
    /* the scale group of each column: NAME.g_idx ([in], or [groups, in] per conv
     * group), else column / group_size */
    char gname[1100];
    snprintf(gname, sizeof gname, "%.1024s.g_idx", layer);
    const bp_st_tensor *gt = bp_st_find(st, gname);
    int64_t ng = gt && gt->rank == 2 ? gt->shape[0] : 1;
    const unsigned char *graw = gt ? st->map + st->data_start + gt->begin : NULL;
    if (rc == 0 && gt && (gt->dtype != BP_DT_I32 || bp_st_numel(gt) != ng * cols ||
                          rows % ng != 0 || sr == 1))
        rc = bp_fail(err, "%s: layer '%s': %s must be I32 [%lld] (or [groups, %lld])",
                     st->path, layer, gname, (long long)cols, (long long)cols);
    for (int64_t i = 0; rc == 0 && i < nel; i++) {
        unsigned c = q->dtype == BP_DT_U8 ? raw[i] : (unsigned)(raw[2 * i] | raw[2 * i + 1] << 8);
        int64_t grp = (i % cols) / gs;
        if (graw) {
            const unsigned char *p = graw + 4 * (((i / cols) / (rows / ng)) * cols + i % cols);
            grp = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                            (uint32_t)p[3] << 24);
            if (grp < 0 || grp >= G) {
                rc = bp_fail(err, "%s: layer '%s': %s holds group %lld, beyond its %lld "
                             "groups", st->path, layer, gname, (long long)grp, (long long)G);
                break;
            }
        }
        int64_t blk = sr == 1 ? 0 : (i / cols) * G + grp;
        maxc = c > maxc ? c : maxc;
        if (w)
            diff = fmax(diff, fabs((double)(S[blk] * ((float)c - Z[blk])) - W[i]));
    }
    if (rc == 0 && maxc > maxq)
        rc = bp_fail(err, "%s: layer '%s': code %u exceeds %u for %d bits", st->path, layer,
                     maxc, maxq, bits);
    if (rc == 0 && out) {
        /* the bits this layer takes in the formats the plan counts: b per code,
         * the scales at their stored width, b per zero point unless the grid
         * is symmetric (its zero point is the constant 2^(b-1)) */
        snprintf(key, sizeof key, "%.1024s.symmetric", layer);
        const char *sym = bp_st_meta_get(st, key);
        int64_t blocks = sr * G, zbits = z->dtype == BP_DT_I32 || z->dtype == BP_DT_F32 ? 32 : bits;
        long long stored = (long long)(nel * bits + blocks * (s->dtype == BP_DT_F16 ? 16 : 32) +
                                       (sym && !strcmp(sym, "true") ? 0 : blocks * zbits));
        fprintf(out, "  %-40s %2d bits  codes %s [%lld, %lld]  scales %s [%lld, %lld]  zeros %s"
                "  stored bits %lld", layer, bits, bp_dtype_name(q->dtype), (long long)rows,
                (long long)cols, bp_dtype_name(s->dtype), (long long)sr, (long long)G,
                bp_dtype_name(z->dtype), stored);
        if (w)
            fprintf(out, "  dequantized: max |diff| %.3g", diff);
        fputc('\n', out);
    }
    if (rc == 0 && w && diff > 0.0)
        rc = bp_fail(err, "%s: layer '%s': %s differs from scales * (codes - zeros) by %g",
                     st->path, layer, wname, diff);
    free(S);
    free(Z);
    free(W);
    return rc;
}

int bp_check_quantized(const char *path, FILE *out, bp_error *err)
{
    bp_safetensors st;
    if (bp_st_open(&st, path, err) < 0)
        return -1;
    const char *fmt = bp_st_meta_get(&st, "format");
    int rc = 0;
    if (!fmt || (strcmp(fmt, "bitplan-quantized/2") != 0 && strcmp(fmt, "bitplan-quantized/1")))
        rc = bp_fail(err, "%s: not a bitplan quantized-weights file (metadata 'format' is %s)",
                     path, fmt ? fmt : "missing");
    size_t layers = 0;
    for (size_t i = 0; rc == 0 && i < st.n_meta; i++) {
        const char *k = st.meta[i].key;
        size_t n = strlen(k);
        if (n <= 6 || strcmp(k + n - 6, ".wbits") != 0)
            continue;
        char layer[1024];
        snprintf(layer, sizeof layer, "%.*s", (int)(n - 6), k);
        int bits = atoi(st.meta[i].value);
        layers++;
        if (bits >= 16 || bits < 1) {
            if (out)
                fprintf(out, "  %-40s 16 bits  kept in float\n", layer);
            continue;
        }
        rc = check_layer(&st, layer, bits, out, err);
    }
    if (rc == 0 && out)
        fprintf(out, "quantized layers: %zu, all consistent\n", layers);
    bp_st_close(&st);
    return rc;
}
