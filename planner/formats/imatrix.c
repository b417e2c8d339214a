/*
 * imatrix.c - the GGUF and legacy .dat importance-matrix readers.  Every
 * count and length is checked against the file; sums must be finite and
 * sums of squares non-negative (a negative one is a corrupt file, not data).
 */
#include "imatrix.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"
#include "gguf.h"

static int im_cmp(const void *a, const void *b)
{
    return strcmp(((const bp_imatrix_entry *)a)->name, ((const bp_imatrix_entry *)b)->name);
}

static void im_free_entry(bp_imatrix_entry *e)
{
    free(e->name);
    free(e->sum2);
    free(e->sum);
    free(e->count);
}

void bp_imatrix_close(bp_imatrix *im)
{
    if (!im)
        return;
    for (size_t i = 0; i < im->n; i++)
        im_free_entry(&im->e[i]);
    free(im->e);
    free(im->path);
    free(im->dataset);
    memset(im, 0, sizeof *im);
}

const bp_imatrix_entry *bp_imatrix_find(const bp_imatrix *im, const char *name)
{
    bp_imatrix_entry key = {.name = (char *)name};
    return im->n ? bsearch(&key, im->e, im->n, sizeof *im->e, im_cmp) : NULL;
}

static int im_add(bp_imatrix *im, size_t *cap, bp_imatrix_entry **out, bp_error *err)
{
    if (im->n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        bp_imatrix_entry *e = realloc(im->e, nc * sizeof *e);
        if (!e)
            return bp_fail(err, "out of memory");
        im->e = e, *cap = nc;
    }
    *out = memset(&im->e[im->n++], 0, sizeof **out);
    return 0;
}

/* Sorted, unique names; sums finite, squares >= 0, counts >= 0 and whole. */
static int im_finish(bp_imatrix *im, const char *label, bp_error *err)
{
    if (im->n == 0)
        return bp_fail(err, "%s: the importance matrix holds no entries", label);
    qsort(im->e, im->n, sizeof *im->e, im_cmp);
    for (size_t i = 0; i < im->n; i++) {
        const bp_imatrix_entry *e = &im->e[i];
        if (i && !strcmp(e->name, im->e[i - 1].name))
            return bp_fail(err, "%s: entry '%s' appears twice", label, e->name);
        for (int64_t m = 0; m < e->n_mat; m++) {
            double c = e->count[m];
            if (!(c >= 0.0 && c <= 9.0e15 && c == floor(c)))
                return bp_fail(err, "%s: '%s': count %g of matrix %" PRId64 " is not a "
                               "non-negative whole number", label, e->name, c, m);
        }
        for (int64_t j = 0; j < e->n_mat * e->in; j++) {
            if (!(e->sum2[j] >= 0.0 && isfinite(e->sum2[j])))
                return bp_fail(err, "%s: '%s': sum of squares %g at column %" PRId64 " (expected "
                               "finite and >= 0; the file is corrupt)", label, e->name,
                               e->sum2[j], j % e->in);
            if (e->sum && !isfinite(e->sum[j]))
                return bp_fail(err, "%s: '%s': sum at column %" PRId64 " is not finite", label,
                               e->name, j % e->in);
        }
    }
    return 0;
}

/* ---- GGUF ---------------------------------------------------------------- */

static const bp_gguf_tensor *im_tensor(const bp_gguf *g, const char *stem, const char *suffix)
{
    char name[320];
    snprintf(name, sizeof name, "%.255s%s", stem, suffix);
    for (size_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

static double *im_read(const bp_gguf *g, const bp_gguf_tensor *t, bp_error *err)
{
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    double *o = bp_malloc((size_t)(n ? n : 1) * sizeof *o, err);
    const unsigned char *p = g->map + g->data_start + t->offset;
    for (int64_t i = 0; o && i < n; i++) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        o[i] = f;
    }
    return o;
}

static int im_gguf_entry(const bp_gguf *g, const bp_gguf_tensor *s2, bp_imatrix_entry *e,
                         bp_error *err)
{
    const char *label = g->path;
    size_t stem = strlen(s2->name) - strlen(".in_sum2");
    if (!(e->name = bp_malloc(stem + 1, err)))
        return -1;
    memcpy(e->name, s2->name, stem);
    e->name[stem] = '\0';
    const bp_gguf_tensor *c = im_tensor(g, e->name, ".counts"), *s = im_tensor(g, e->name,
                                                                                ".in_sum");
    if (s2->type != BP_GGML_F32 || s2->ne[2] != 1 || s2->ne[3] != 1 || s2->ne[0] < 1 ||
        s2->ne[1] < 1)
        return bp_fail(err, "%s: '%s' must be F32 [in, matrices] (ggml order)", label, s2->name);
    e->in = s2->ne[0], e->n_mat = s2->ne[1];
    if (!c)
        return bp_fail(err, "%s: '%s.in_sum2' has no '%s.counts' (expected the rows summed)",
                       label, e->name, e->name);
    if (c->type != BP_GGML_F32 || c->ne[0] != 1 || c->ne[1] != e->n_mat || c->ne[2] != 1 ||
        c->ne[3] != 1)
        return bp_fail(err, "%s: '%s' must be F32 [1, %" PRId64 "] (one count per matrix)",
                       label, c->name, e->n_mat);
    if (s && (s->type != BP_GGML_F32 || s->ne[0] != e->in || s->ne[1] != e->n_mat ||
              s->ne[2] != 1 || s->ne[3] != 1))
        return bp_fail(err, "%s: '%s' must be F32 shaped as '%s'", label, s->name, s2->name);
    if (!(e->sum2 = im_read(g, s2, err)) || !(e->count = im_read(g, c, err)) ||
        (s && !(e->sum = im_read(g, s, err))))
        return -1;
    return 0;
}

static int im_open_gguf(bp_imatrix *im, const bp_gguf *g, bp_error *err)
{
    size_t cap = 0;
    char *type = bp_gguf_string(g, "general.type");
    int bad = type && strcmp(type, "imatrix") != 0;
    if (bad)
        bp_fail(err, "%s: a GGUF of general.type '%s' (expected an importance matrix, "
                "\"imatrix\")", g->path, type);
    free(type);
    if (bad)
        return -1;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const char *nm = g->tensors[i].name, *dot = strrchr(nm, '.');
        bp_imatrix_entry *e = NULL;
        if (!dot || strcmp(dot, ".in_sum2") != 0)
            continue;
        if (im_add(im, &cap, &e, err) < 0 || im_gguf_entry(g, &g->tensors[i], e, err) < 0)
            return -1;
    }
    for (size_t i = 0; i < g->n_tensors; i++) {   /* no orphan counts or sums */
        const char *nm = g->tensors[i].name, *dot = strrchr(nm, '.');
        if (!dot || (strcmp(dot, ".counts") && strcmp(dot, ".in_sum")))
            continue;
        char stem[256];
        snprintf(stem, sizeof stem, "%.*s", (int)(dot - nm), nm);
        if (!im_tensor(g, stem, ".in_sum2"))
            return bp_fail(err, "%s: '%s' has no '%s.in_sum2'", g->path, nm, stem);
    }
    int64_t v;
    im->chunks = bp_gguf_int(g, "imatrix.chunk_count", &v) == 0 ? v : -1;
    im->chunk_size = bp_gguf_int(g, "imatrix.chunk_size", &v) == 0 ? v : -1;
    const bp_gguf_kv *ds = bp_gguf_find(g, "imatrix.datasets");
    if (ds && ds->type == BP_GGUF_ARRAY && ds->elem == BP_GGUF_STRING && ds->n) {
        const unsigned char *p = ds->val;          /* the last one */
        uint64_t len = 0;
        for (uint64_t i = 0; i < ds->n; i++) {
            memcpy(&len, p, 8);
            if (i + 1 < ds->n)
                p += 8 + len;
        }
        if ((im->dataset = malloc((size_t)len + 1))) {
            memcpy(im->dataset, p + 8, (size_t)len);
            im->dataset[len] = '\0';
        }
    }
    return im_finish(im, g->path, err);
}

/* ---- legacy .dat --------------------------------------------------------- */

typedef struct im_rd {
    const unsigned char *p, *end, *start;
} im_rd;

static int im_i32(im_rd *r, int32_t *v)
{
    if (r->end - r->p < 4)
        return -1;
    memcpy(v, r->p, 4);
    r->p += 4;
    return 0;
}

int bp_imatrix_parse_dat(bp_imatrix *im, const unsigned char *buf, size_t size,
                         const char *label, bp_error *err)
{
    im_rd r = {buf, buf + size, buf};
    int32_t n;
    size_t cap = 0;
    memset(im, 0, sizeof *im);
    im->chunks = im->chunk_size = -1;
    im->legacy = 1;
    if (im_i32(&r, &n) < 0 || n < 1 || (size_t)n > size / 16)
        return bp_fail(err, "%s: not an importance matrix (a legacy .dat starts with its entry "
                       "count; a GGUF with \"GGUF\")", label);
    for (int32_t i = 0; i < n; i++) {
        int32_t len, ncall, nval;
        bp_imatrix_entry *e = NULL;
        size_t at = (size_t)(r.p - r.start);
        if (im_i32(&r, &len) < 0 || len < 1 || len > 4096 || len > r.end - r.p)
            goto bad;
        if (im_add(im, &cap, &e, err) < 0 || !(e->name = bp_malloc((size_t)len + 1, err)))
            goto fail;
        memcpy(e->name, r.p, (size_t)len);
        e->name[len] = '\0';
        r.p += len;
        if (strlen(e->name) != (size_t)len || !bp_printable_utf8(e->name))
            goto bad;
        if (im_i32(&r, &ncall) < 0 || ncall < 0 || im_i32(&r, &nval) < 0 || nval < 1 ||
            (size_t)nval > (size_t)(r.end - r.p) / 4) {
            bp_fail(err, "%s: entry %d ('%s', byte %zu): bad call or value count, or cut short",
                    label, i, e->name, at);
            goto fail;
        }
        e->n_mat = 1, e->in = nval;
        e->sum2 = bp_malloc((size_t)nval * sizeof *e->sum2, err);
        e->count = bp_malloc(sizeof *e->count, err);
        if (!e->sum2 || !e->count)
            goto fail;
        for (int32_t j = 0; j < nval; j++) {
            float f;
            memcpy(&f, r.p + 4 * (size_t)j, 4);
            e->sum2[j] = f;
        }
        r.p += 4 * (size_t)nval;
        e->count[0] = ncall > 0 ? ncall : 1;   /* values are means x ncall */
        continue;
bad:
        bp_fail(err, "%s: entry %d at byte %zu: a bad name (not a legacy importance matrix, or "
                "corrupt)", label, i, at);
        goto fail;
    }
    int32_t chunks, len;
    if (im_i32(&r, &chunks) == 0) {
        im->chunks = chunks;
        if (im_i32(&r, &len) == 0 && len > 0 && len <= r.end - r.p &&
            (im->dataset = malloc((size_t)len + 1))) {
            memcpy(im->dataset, r.p, (size_t)len);
            im->dataset[len] = '\0';
        }
    }
    if (im_finish(im, label, err) == 0)
        return 0;
fail:
    bp_imatrix_close(im);
    return -1;
}

int bp_imatrix_open(bp_imatrix *im, const char *path, bp_error *err)
{
    const unsigned char *map;
    size_t size;
    memset(im, 0, sizeof *im);
    if (bp_map_file(path, 4, "an importance matrix", &map, &size, err) < 0)
        return -1;
    int rc;
    if (bp_gguf_is(map, size)) {
        bp_gguf g;
        rc = bp_gguf_parse(&g, map, size, path, err);
        if (rc == 0) {
            g.path = (char *)path;              /* for messages only */
            im->chunks = im->chunk_size = -1;
            rc = im_open_gguf(im, &g, err);
            g.path = NULL;
            bp_gguf_close(&g);
            if (rc < 0)
                bp_imatrix_close(im);
        }
    } else {
        rc = bp_imatrix_parse_dat(im, map, size, path, err);
    }
    bp_unmap_file(map, size);
    if (rc == 0 && !(im->path = bp_strdup(path, err))) {
        bp_imatrix_close(im);
        rc = -1;
    }
    return rc;
}

int bp_imatrix_detect(const char *path)
{
    const unsigned char *map;
    size_t size;
    if (bp_map_file(path, 4, "an importance matrix", &map, &size, NULL) < 0)
        return 0;
    int yes = 0;
    if (bp_gguf_is(map, size)) {
        bp_gguf g;
        if (bp_gguf_parse(&g, map, size, path, NULL) == 0) {
            char *type = bp_gguf_string(&g, "general.type");
            yes = type && !strcmp(type, "imatrix");
            for (size_t i = 0; !type && i < g.n_tensors; i++) {
                const char *dot = strrchr(g.tensors[i].name, '.');
                yes |= dot && !strcmp(dot, ".in_sum2");
            }
            free(type);
            bp_gguf_close(&g);
        }
    } else {
        bp_imatrix im;
        yes = bp_imatrix_parse_dat(&im, map, size, path, NULL) == 0;
        bp_imatrix_close(&im);
    }
    bp_unmap_file(map, size);
    return yes;
}
