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

/* The code of w on the step es, zero point ez and code range [0, maxq]:
 * rne(w / es + ez) in the default rounding mode (half to even), clamped.
 * Below 2^22 in magnitude adding 1.5 * 2^23 leaves no fraction bits, so the
 * sum rounds half to even; beyond, the sum is still beyond the code range
 * (maxq < 2^17) on the same side, where the clamp decides.  Comparisons
 * only: the loops vectorise. */
static inline float code_of(float w, float es, float ez, float maxq)
{
    const float magic = 12582912.0f;
    float x = w / es + ez;
    float u = (x + magic) - magic;
    u = u < 0.0f ? 0.0f : u;
    return u > maxq ? maxq : u;
}

/* Is the dequantized code u more than the tolerance off w (or not a number)? */
static inline int off_grid(float w, float es, float ez, float u)
{
    float back = es * (u - ez), mag = fabsf(w);
    mag = mag > es ? mag : es;
    return !(fabsf(back - w) <= 1e-5f * mag);
}

/* Codes from the grid (S, Z: rows x G, one value per row and scale group),
 * checked against What; column j of a row in conv group c belongs to scale
 * group g_idx[c * in + j].  A per-tensor grid must be the same in every
 * row. */
static int to_codes(const bp_qlayer *l, const bp_qgrid *g, float *What, const int32_t *g_idx,
                    void *codes, bp_error *err)
{
    int64_t in = l->in, G = n_groups(g, in), og = l->out / l->groups;
    int tensor = g->per_tensor;
    float maxq = (float)((1u << g->bits) - 1u);
    float *e = bp_malloc((size_t)in * sizeof(float), err);   /* the row's grid per column */
    float *z = bp_malloc((size_t)in * sizeof(float), err);
    float *u = bp_malloc((size_t)in * sizeof(float), err);
    int32_t *zero_idx = bp_calloc((size_t)in, sizeof(int32_t), err);   /* per tensor: block 0 */
    int rc = e && z && u && zero_idx ? 0 : -1;
    for (int64_t r = 0; rc == 0 && r < l->out; r++) {
        const int32_t *gi = tensor ? zero_idx : g_idx + (r / og) * in;
        const float *Sr = l->S + r * G, *Zr = l->Z + r * G;
        float *w = What + r * in;
        int bad = 0;
        for (int64_t j = 0; j < in; j++)
            bad |= gi[j] < 0 || gi[j] >= G;
        if (bad) {
            rc = bp_fail(err, "layer '%s': a column's scale group is out of range (internal "
                         "error)", l->name);
            break;
        }
        if (tensor && (Sr[0] != l->S[0] || Zr[0] != l->Z[0])) {
            rc = bp_fail(err, "layer '%s': the grid is not constant over its %s block "
                         "(internal error)", l->name, g->granularity);
            break;
        }
        for (int64_t j = 0; j < in; j++)
            e[j] = Sr[gi[j]], z[j] = Zr[gi[j]];
        for (int64_t j = 0; j < in; j++) {           /* every weight on its grid? */
            u[j] = code_of(w[j], e[j], z[j], maxq);
            bad |= off_grid(w[j], e[j], z[j], u[j]);
        }
        for (int64_t j = 0; bad && j < in; j++)
            if (off_grid(w[j], e[j], z[j], u[j])) {
                rc = bp_fail(err, "layer '%s': weight %lld is off its grid (%.9g vs %.9g; "
                             "internal error)", l->name, (long long)(r * in + j), w[j],
                             e[j] * (u[j] - z[j]));
                break;
            }
        if (g->bits <= 8) {       /* the codes, and the canonical dequantized values */
            unsigned char *c = (unsigned char *)codes + r * in;
            for (int64_t j = 0; rc == 0 && j < in; j++)
                c[j] = (unsigned char)(int)u[j], w[j] = e[j] * (u[j] - z[j]);
        } else {
            uint16_t *c = (uint16_t *)codes + r * in;
            for (int64_t j = 0; rc == 0 && j < in; j++)
                c[j] = (uint16_t)(int)u[j], w[j] = e[j] * (u[j] - z[j]);
        }
    }
    free(e);
    free(z);
    free(u);
    free(zero_idx);
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
    void *codes = bp_qfile_own(f, bp_malloc(nel * (g->bits <= 8 ? 1 : 2), NULL));
    if (!S || !Z || !codes)
        return bp_fail(err, "out of memory exporting layer '%s'", l->name);
    memcpy(S, l->S, rows_s * cols_s * sizeof(float));   /* per tensor: row 0's */
    memcpy(Z, l->Z, rows_s * cols_s * sizeof(float));
    int rc = to_codes(l, g, l->What, l->g_idx, codes, err);
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
        if (strncmp(err->msg, path, strlen(path)) != 0)    /* name the file once */
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

/* Layer metadata NAME.key, or NULL. */
static const char *lmeta(const bp_safetensors *st, const char *layer, const char *key)
{
    char k[1100];
    snprintf(k, sizeof k, "%.1024s.%s", layer, key);
    return bp_st_meta_get(st, k);
}

/* A whole number in [lo, hi] spelled exactly (no sign games, no fraction). */
static int int_in(const char *s, long lo, long hi, long *v)
{
    char *end;
    if (!s || !*s)
        return 0;
    long x = strtol(s, &end, 10);
    if (*end || x < lo || x > hi)
        return 0;
    *v = x;
    return 1;
}

static int one_of(const char *s, const char *const *names)
{
    for (size_t i = 0; s && names[i]; i++)
        if (!strcmp(s, names[i]))
            return 1;
    return 0;
}

/* The product of the "a,b,c" shape metadata, or -1 when it is not one. */
static int64_t shape_numel(const char *s)
{
    int64_t n = 1;
    int dims = 0;
    for (const char *p = s; p && *p; dims++) {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p || d < 1 || (*end && *end != ',') || n > INT64_MAX / d)
            return -1;
        n *= d;
        p = *end ? end + 1 : end;
    }
    return s && dims >= 1 && dims <= 4 ? n : -1;
}

static int32_t i32_at(const unsigned char *p, int64_t i)
{
    p += 4 * i;
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

/* The metadata every layer carries, and what it promises of the tensors. */
static int check_meta(const bp_safetensors *st, const char *layer, long *bits, long *abits,
                      bp_error *err)
{
    static const char *const quantizers[] = {"rtn", "gptq", "squant", "erq", NULL};
    static const char *const grans[] = {"per_tensor", "per_channel", "per_group", "none", NULL};
    static const char *const bools[] = {"true", "false", NULL};
    const char *p = st->path, *q = lmeta(st, layer, "quantizer");
    long gs;
    if (!int_in(lmeta(st, layer, "wbits"), 2, 16, bits))
        return bp_fail(err, "%s: metadata '%s.wbits' = '%s': expected a whole number 2..16", p,
                       layer, lmeta(st, layer, "wbits"));
    if (!int_in(lmeta(st, layer, "abits"), 2, 16, abits))
        return bp_fail(err, "%s: metadata '%s.abits' = '%s': expected a whole number 2..16", p,
                       layer, lmeta(st, layer, "abits") ? lmeta(st, layer, "abits") : "(missing)");
    if (!one_of(q, quantizers))
        return bp_fail(err, "%s: metadata '%s.quantizer' = '%s': expected rtn, gptq, squant or "
                       "erq", p, layer, q ? q : "(missing)");
    const char *g = lmeta(st, layer, "granularity");
    if (!one_of(g, grans) || (*bits < 16 && !strcmp(g, "none")))
        return bp_fail(err, "%s: metadata '%s.granularity' = '%s': expected per_tensor, "
                       "per_channel or per_group", p, layer, g ? g : "(missing)");
    if (!int_in(lmeta(st, layer, "group_size"), 0, 1L << 30, &gs) ||
        (*bits < 16 && (gs > 0) != !strcmp(g, "per_group")))
        return bp_fail(err, "%s: metadata '%s.group_size' = '%s': expected a positive size for "
                       "per_group and 0 otherwise", p, layer,
                       lmeta(st, layer, "group_size") ? lmeta(st, layer, "group_size") : "(missing)");
    if (*bits < 16 && !one_of(lmeta(st, layer, "symmetric"), bools))
        return bp_fail(err, "%s: metadata '%s.symmetric': expected true or false", p, layer);
    if (shape_numel(lmeta(st, layer, "shape")) < 0)
        return bp_fail(err, "%s: metadata '%s.shape' = '%s': expected the weight's shape, 1 to 4 "
                       "positive dimensions separated by commas", p, layer,
                       lmeta(st, layer, "shape") ? lmeta(st, layer, "shape") : "(missing)");
    return 0;
}

/* A layer kept in float: its weight, as the shape says, and no codes. */
static int check_float_layer(const bp_safetensors *st, const char *layer, FILE *out,
                             bp_error *err)
{
    char name[1100];
    snprintf(name, sizeof name, "%.1024s.weight", layer);
    const bp_st_tensor *w = bp_st_find(st, name);
    int64_t n = shape_numel(lmeta(st, layer, "shape"));
    if (!w || w->dtype != BP_DT_F32 || bp_st_numel(w) != n)
        return bp_fail(err, "%s: layer '%s' is kept in float (wbits 16) but '%s' is %s (expected "
                       "F32 with the %lld weights its shape metadata gives)", st->path, layer,
                       name, w ? "of another dtype or size" : "missing", (long long)n);
    snprintf(name, sizeof name, "%.1024s.qweight", layer);
    if (bp_st_find(st, name))
        return bp_fail(err, "%s: layer '%s' is kept in float (wbits 16) but has codes '%s'",
                       st->path, layer, name);
    if (out)
        fprintf(out, "  %-40s 16 bits  kept in float\n", layer);
    return 0;
}

/* The activation grid: both of act_scale and act_zero or neither (per-token
 * grids and grids from statistics store none), finite positive steps, zero
 * points on the codes (the midpoint when symmetric). */
static int check_acts(const bp_safetensors *st, const char *layer, long abits, int64_t cols,
                      bp_error *err)
{
    static const char *const kinds[] = {"uniform", "log2", "ptf", NULL};
    static const char *const grans[] = {"per_tensor", "per_token", NULL};
    const char *p = st->path, *k = lmeta(st, layer, "act_quantizer");
    if (abits >= 16)
        return 0;
    if (!one_of(k, kinds) || !one_of(lmeta(st, layer, "act_granularity"), grans))
        return bp_fail(err, "%s: layer '%s' has %ld-bit activations but its act_quantizer / "
                       "act_granularity metadata is '%s' / '%s' (expected uniform, log2 or ptf; "
                       "per_tensor or per_token)", p, layer, abits, k ? k : "(missing)",
                       lmeta(st, layer, "act_granularity") ? lmeta(st, layer, "act_granularity")
                                                           : "(missing)");
    char sn[1100], zn[1100];
    snprintf(sn, sizeof sn, "%.1024s.act_scale", layer);
    snprintf(zn, sizeof zn, "%.1024s.act_zero", layer);
    const bp_st_tensor *s = bp_st_find(st, sn), *z = bp_st_find(st, zn);
    if (!s && !z)
        return 0;
    if (!s || !z)
        return bp_fail(err, "%s: layer '%s': '%s' without '%s' (an activation grid is a step and "
                       "a zero point)", p, layer, s ? sn : zn, s ? zn : sn);
    /* ptf: one per input column (of every conv group: a multiple of the codes' columns) */
    int ptf = !strcmp(k, "ptf");
    int64_t m = bp_st_numel(s);
    if (s->dtype != BP_DT_F32 || z->dtype != BP_DT_F32 || bp_st_numel(z) != m ||
        (ptf ? m < cols || cols < 1 || m % cols : m != 1))
        return bp_fail(err, "%s: layer '%s': '%s' and '%s' must be F32 [%s] (%s)", p, layer, sn,
                       zn, ptf ? "in" : "1", ptf ? "one per input column, ptf" : "one per tensor");
    float *S = malloc((size_t)m * sizeof *S), *Z = malloc((size_t)m * sizeof *Z);
    int rc = S && Z && bp_st_read_f32(st, s, S, err) == 0 && bp_st_read_f32(st, z, Z, err) == 0
             ? 0 : -1;
    const char *sym = lmeta(st, layer, "act_symmetric");
    double top = ldexp(1.0, (int)abits) - 1.0, mid = ldexp(1.0, (int)abits - 1);
    for (int64_t i = 0; rc == 0 && i < m; i++) {
        if (!(S[i] > 0.0f) || !isfinite(S[i]))
            rc = bp_fail(err, "%s: tensor '%s': element %lld is %g (a grid step is finite and "
                         "> 0)", p, sn, (long long)i, (double)S[i]);
        else if (strcmp(k, "log2") && (!isfinite(Z[i]) || Z[i] != floorf(Z[i]) || Z[i] < 0.0f ||
                                       Z[i] > top))
            rc = bp_fail(err, "%s: tensor '%s': element %lld is %g (a zero point is a code in "
                         "[0, %.0f])", p, zn, (long long)i, (double)Z[i], top);
        else if (strcmp(k, "log2") && sym && !strcmp(sym, "true") && Z[i] != mid)
            rc = bp_fail(err, "%s: tensor '%s': element %lld is %g, but a symmetric %ld-bit grid's "
                         "zero point is its midpoint %.0f", p, zn, (long long)i, (double)Z[i],
                         abits, mid);
    }
    free(S);
    free(Z);
    return rc;
}

static int check_layer(const bp_safetensors *st, const char *layer, int bits, FILE *out,
                       bp_error *err)
{
    const char *p = st->path;
    const bp_st_tensor *q = need(st, layer, ".qweight", err), *s, *z;
    if (!q || !(s = need(st, layer, ".scales", err)) || !(z = need(st, layer, ".zeros", err)))
        return -1;
    int64_t rows = q->shape[0], cols = q->rank == 2 ? q->shape[1] : 0;
    if (q->rank != 2 || q->dtype != (bits <= 8 ? BP_DT_U8 : BP_DT_U16))
        return bp_fail(err, "%s: tensor '%s.qweight' is %s of rank %d (expected %s [out, in] for "
                       "%d-bit codes)", p, layer, bp_dtype_name(q->dtype), q->rank,
                       bits <= 8 ? "U8" : "U16", bits);
    int64_t want = shape_numel(lmeta(st, layer, "shape"));
    if (rows * cols != want)
        return bp_fail(err, "%s: tensor '%s.qweight' holds %lld codes, but metadata '%s.shape' = "
                       "'%s' says %lld weights", p, layer, (long long)(rows * cols), layer,
                       lmeta(st, layer, "shape"), (long long)want);
    const char *gran = lmeta(st, layer, "granularity"), *sym = lmeta(st, layer, "symmetric");
    long gsz = 0;
    int_in(lmeta(st, layer, "group_size"), 0, 1L << 30, &gsz);
    int per_tensor = !strcmp(gran, "per_tensor");
    int64_t G = !strcmp(gran, "per_group") ? (cols + gsz - 1) / gsz : 1, sr = per_tensor ? 1 : rows;
    if (s->rank != 2 || s->shape[0] != sr || s->shape[1] != G ||
        (s->dtype != BP_DT_F16 && s->dtype != BP_DT_F32))
        return bp_fail(err, "%s: tensor '%s.scales' is %s [%lld, %lld] but a %s grid over [%lld, "
                       "%lld]%s needs F16 or F32 [%lld, %lld]", p, layer, bp_dtype_name(s->dtype),
                       (long long)(s->rank == 2 ? s->shape[0] : -1),
                       (long long)(s->rank == 2 ? s->shape[1] : -1), gran, (long long)rows,
                       (long long)cols, G > 1 ? " with its group size" : "", (long long)sr,
                       (long long)G);
    if (z->rank != 2 || z->shape[0] != sr || z->shape[1] != G ||
        (z->dtype != BP_DT_U8 && z->dtype != BP_DT_U16 && z->dtype != BP_DT_I32 &&
         z->dtype != BP_DT_F32))
        return bp_fail(err, "%s: tensor '%s.zeros' must be U8, U16 or I32 [%lld, %lld], as its "
                       "scales", p, layer, (long long)sr, (long long)G);
    int64_t nel = rows * cols;
    float *S = malloc((size_t)(sr * G) * sizeof *S), *Z = malloc((size_t)(sr * G) * sizeof *Z);
    float *W = malloc((size_t)(nel ? nel : 1) * sizeof *W);
    int64_t *count = calloc((size_t)G, sizeof *count);
    char wname[1100], gname[1100];
    snprintf(wname, sizeof wname, "%.1024s.weight", layer);
    snprintf(gname, sizeof gname, "%.1024s.g_idx", layer);
    const bp_st_tensor *w = bp_st_find(st, wname), *gt = bp_st_find(st, gname);
    int rc = S && Z && W && count && bp_st_read_f32(st, s, S, err) == 0 &&
             read_zeros(st, z, Z, err) == 0 ? 0 : -1;
    if (rc == 0 && w && (w->dtype != BP_DT_F32 || bp_st_numel(w) != nel ||
                         bp_st_read_f32(st, w, W, err) < 0))
        rc = bp_fail(err, "%s: tensor '%s' must be F32 with the layer's %lld weights", p, wname,
                     (long long)nel);
    unsigned maxq = (1u << bits) - 1u;
    double top = maxq, mid = ldexp(1.0, bits - 1);
    for (int64_t i = 0; rc == 0 && i < sr * G; i++) {
        if (!(S[i] >= 0.0f) || !isfinite(S[i]))
            rc = bp_fail(err, "%s: tensor '%s.scales': element %lld is %g (a step is finite and "
                         ">= 0)", p, layer, (long long)i, (double)S[i]);
        else if (!isfinite(Z[i]) || Z[i] != floorf(Z[i]) ||
                 (z->dtype != BP_DT_I32 && (Z[i] < 0.0f || Z[i] > top)))
            rc = bp_fail(err, "%s: tensor '%s.zeros': element %lld is %g (a zero point is a code "
                         "in [0, %u]; only I32 zero points, ERQ's, may lie off it)", p, layer,
                         (long long)i, (double)Z[i], maxq);
        else if (sym && !strcmp(sym, "true") && Z[i] != mid)
            rc = bp_fail(err, "%s: tensor '%s.zeros': element %lld is %g, but a symmetric %d-bit "
                         "grid's zero point is its midpoint %.0f", p, layer, (long long)i,
                         (double)Z[i], bits, mid);
    }
    /* g_idx: a valid group assignment: I32 [in] (or [groups, in]), each column in a group,
     * no group holding more columns than the group size */
    int64_t ng = gt && gt->rank == 2 ? gt->shape[0] : 1;
    const unsigned char *graw = gt ? st->map + st->data_start + gt->begin : NULL;
    if (rc == 0 && gt && (gt->dtype != BP_DT_I32 || bp_st_numel(gt) != ng * cols ||
                          ng < 1 || rows % ng != 0 || G == 1))
        rc = bp_fail(err, "%s: tensor '%s' must be I32 [%lld] (or [groups, %lld]), and only a "
                     "per-group grid has one", p, gname, (long long)cols, (long long)cols);
    for (int64_t j = 0; rc == 0 && gt && j < ng; j++) {
        memset(count, 0, (size_t)G * sizeof *count);
        for (int64_t c = 0; rc == 0 && c < cols; c++) {
            int32_t g = i32_at(graw, j * cols + c);
            if (g < 0 || g >= G)
                rc = bp_fail(err, "%s: tensor '%s': column %lld is in group %d, beyond the %lld "
                             "groups of its scales", p, gname, (long long)c, g, (long long)G);
            else if (++count[g] > gsz)
                rc = bp_fail(err, "%s: tensor '%s': group %d holds more than the group size of "
                             "%ld columns (not a group assignment)", p, gname, g, gsz);
        }
    }
    const unsigned char *raw = st->map + st->data_start + q->begin;
    unsigned maxc = 0;
    double diff = 0.0;
    for (int64_t i = 0; rc == 0 && i < nel; i++) {
        unsigned c = q->dtype == BP_DT_U8 ? raw[i] : (unsigned)(raw[2 * i] | raw[2 * i + 1] << 8);
        int64_t grp = gt ? i32_at(graw, ((i / cols) / (rows / ng)) * cols + i % cols)
                         : (i % cols) / (gsz > 0 ? gsz : cols);
        int64_t blk = sr == 1 ? 0 : (i / cols) * G + grp;
        maxc = c > maxc ? c : maxc;
        if (w)
            diff = fmax(diff, fabs((double)(S[blk] * ((float)c - Z[blk])) - W[i]));
    }
    if (rc == 0 && maxc > maxq)
        rc = bp_fail(err, "%s: tensor '%s.qweight': code %u exceeds %u, the largest of %d bits",
                     p, layer, maxc, maxq, bits);
    if (rc == 0 && w && diff > 0.0)
        rc = bp_fail(err, "%s: tensor '%s' differs from scales * (codes - zeros) by %g", p, wname,
                     diff);
    char bname[1100];
    snprintf(bname, sizeof bname, "%.1024s.bias", layer);
    const bp_st_tensor *bt = bp_st_find(st, bname);
    if (rc == 0 && bt && (bt->dtype != BP_DT_F32 || bp_st_numel(bt) != rows))
        rc = bp_fail(err, "%s: tensor '%s' must be F32 [%lld]", p, bname, (long long)rows);
    if (rc == 0 && out) {
        /* the bits this layer takes in the formats the plan counts: b per code,
         * the scales at their stored width, b per zero point unless the grid
         * is symmetric (its zero point is the constant 2^(b-1)) */
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
    free(S);
    free(Z);
    free(W);
    free(count);
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
    char key[1100];
    for (size_t i = 0; rc == 0 && i < st.n_meta; i++) {
        const char *k = st.meta[i].key;
        size_t n = strlen(k);
        if (n <= 6 || strcmp(k + n - 6, ".wbits") != 0)
            continue;
        char layer[1024];
        snprintf(layer, sizeof layer, "%.*s", (int)(n - 6), k);
        long bits = 0, abits = 16;
        layers++;
        if ((rc = check_meta(&st, layer, &bits, &abits, err)) < 0)
            break;
        int64_t cols = shape_numel(lmeta(&st, layer, "shape"));
        const bp_st_tensor *qw = bp_st_find(&st, (snprintf(key, sizeof key, "%.1024s.qweight",
                                                           layer), key));
        if (qw && qw->rank == 2)
            cols = qw->shape[1];
        rc = bits >= 16 ? check_float_layer(&st, layer, out, err)
                        : check_layer(&st, layer, (int)bits, out, err);
        if (rc == 0)
            rc = check_acts(&st, layer, abits, cols, err);
    }
    if (rc == 0 && layers == 0)
        rc = bp_fail(err, "%s: no layers (no NAME.wbits metadata)", path);
    if (rc == 0 && out)
        fprintf(out, "quantized layers: %zu, all consistent\n", layers);
    bp_st_close(&st);
    return rc;
}
