/*
 * qweights.c - the quantized-weights file (layout in qweights.h): the
 * builder that holds a file's entries until they are written, the encoding
 * of a layer's grid as integer codes, scales and zero points (checked to
 * reproduce the quantizer's weights before anything is written), and the
 * checker that reads a file back.
 */
#include "qweights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

void *bp_qfile_own(bp_qfile *f, void *p)
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

static char *own_printf(bp_qfile *f, const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, a, b ? b : "");
    return bp_qfile_own(f, s);
}

int bp_qfile_add(bp_qfile *f, const char *name, const char *suffix, bp_dtype dt, int64_t r0,
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

int bp_qfile_meta(bp_qfile *f, const char *layer, const char *key, const char *value,
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

void bp_qfile_free(bp_qfile *f)
{
    for (size_t i = 0; i < f->n_owned; i++)
        free(f->owned[i]);
    free(f->owned);
    free(f->e);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

/* Scale groups per row under grid g for `in` columns. */
static int64_t n_groups(const bp_qgrid *g, int64_t in)
{
    return g->group_size > 0 ? (in + g->group_size - 1) / g->group_size : 1;
}

/* Codes from the per-element grid, checked against What; the per-block
 * scales and zeros into S and Z (rows_s x G).  Column j of a row in conv
 * group c belongs to scale group g_idx[c * in + j]. */
static int to_codes(const bp_qlayer *l, const bp_qgrid *g, float *What, const float *es,
                    const float *ez, const int32_t *g_idx, void *codes, float *S, float *Z,
                    bp_error *err)
{
    int64_t in = l->in, G = n_groups(g, in), og = l->out / l->groups;
    int tensor = g->per_tensor;
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
                             "(internal error)", l->name, g->granularity);
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
static int permuted_groups(const bp_qlayer *l, const bp_qgrid *g, const int32_t *g_idx)
{
    for (int64_t c = 0; g->group_size > 0 && c < l->in * l->groups; c++)
        if (g_idx[c] != (c % l->in) / g->group_size)
            return 1;
    return 0;
}

/* NAME.scales as the plan counted them (F16 with fp16 scales, else F32) and
 * NAME.zeros as integers: in the codes' dtype when every zero point is a
 * code (always, except ERQ's grid, which does not widen its range to 0 and
 * so may put the zero point of a one-signed block off the code range), else
 * I32.  The values are exact: the quantizers fitted fp16 steps. */
static int add_grid(bp_qfile *f, const char *name, const bp_qgrid *g, size_t rows, size_t cols,
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
    unsigned char *zb = bp_qfile_own(f, malloc(n * zsize));
    void *sb = g->fp16_scales ? bp_qfile_own(f, malloc(n * sizeof(uint16_t))) : (void *)S;
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
    int rc = bp_qfile_add(f, name, ".scales", g->fp16_scales ? BP_DT_F16 : BP_DT_F32,
                       (int64_t)rows, (int64_t)cols, 2, sb,
                       n * (g->fp16_scales ? sizeof(uint16_t) : sizeof(float)), err);
    return rc < 0 ? -1 : bp_qfile_add(f, name, ".zeros", zt, (int64_t)rows, (int64_t)cols, 2, zb,
                                   n * zsize, err);
}


int bp_qfile_add_codes(bp_qfile *f, const bp_qlayer *l, const bp_qgrid *g, int dequantized,
                       bp_error *err)
{
    size_t nel = (size_t)(l->out * l->in), G = (size_t)n_groups(g, l->in);
    size_t rows_s = g->per_tensor ? 1 : (size_t)l->out, cols_s = g->per_tensor ? 1 : G;
    float *S = bp_qfile_own(f, malloc(rows_s * cols_s * sizeof(float)));
    float *Z = bp_qfile_own(f, malloc(rows_s * cols_s * sizeof(float)));
    void *codes = bp_qfile_own(f, malloc(nel * (g->bits <= 8 ? 1 : 2)));
    if (!S || !Z || !codes)
        return bp_fail(err, "out of memory exporting layer '%s'", l->name);
    int rc = to_codes(l, g, l->What, l->es, l->ez, l->g_idx, codes, S, Z, err);
    if (rc == 0 && permuted_groups(l, g, l->g_idx))
        rc = bp_qfile_add(f, l->name, ".g_idx", BP_DT_I32, l->groups > 1 ? l->groups : l->in,
                          l->groups > 1 ? l->in : 0, l->groups > 1 ? 2 : 1, (void *)l->g_idx,
                          (size_t)(l->in * l->groups) * sizeof(int32_t), err);
    if (rc == 0)
        rc = bp_qfile_add(f, l->name, ".qweight", g->bits <= 8 ? BP_DT_U8 : BP_DT_U16, l->out,
                          l->in, 2, codes, nel * (g->bits <= 8 ? 1 : 2), err);
    if (rc == 0)
        rc = add_grid(f, l->name, g, rows_s, cols_s, S, Z, err);
    if (rc == 0 && dequantized)
        rc = bp_qfile_add(f, l->name, ".weight", BP_DT_F32, l->out, l->in, 2, l->What,
                          nel * sizeof(float), err);
    return rc;
}

int bp_qfile_write(bp_qfile *f, const char *path, bp_error *err)
{
    bp_st_meta *mm = grow(f->meta, &f->cap_meta, f->n_meta + 1, sizeof *mm);
    if (!mm)
        return bp_fail(err, "%s: out of memory writing quantized weights", path);
    f->meta = mm, f->meta[f->n_meta++] = (bp_st_meta){"format", "bitplan-quantized/2"};
    if (bp_st_write(path, f->e, f->n, f->meta, f->n_meta, err) < 0) {
        bp_fail_prefix(err, "%s", path);
        return -1;
    }
    return 0;
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
