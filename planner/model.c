/*
 * model.c - tensor sets (safetensors, GGUF, .npy directory), layer
 * discovery, importance matrices matched to layers, and loading a layer.
 */
#include "model.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/bp_file.h"
#include "../common/bp_llama.h"

/* ---- tensor sets -------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of the *.npy files in dir, sorted. */
static int list_npy(const char *dir, char ***names, size_t *n, bp_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return bp_fail(err, "%s: cannot open directory: %s", dir, strerror(errno));
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".npy") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(*names, cap * sizeof *nn);
            if (!nn)
                goto oom;
            *names = nn;
        }
        if (!((*names)[*n] = strndup(e->d_name, len - 4)))
            goto oom;
        (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(*names, *n, sizeof **names, cmp_str);
    return 0;
oom:
    closedir(d);
    return bp_fail(err, "%s: out of memory listing .npy files", dir);
}

static int open_npy_dir(bp_tensorset *ts, bp_error *err)
{
    if (list_npy(ts->path, &ts->npy_names, &ts->n_npy, err) < 0)
        return -1;
    if (ts->n_npy == 0)
        return bp_fail(err, "%s: directory holds no .npy files", ts->path);
    ts->npy = bp_calloc(ts->n_npy, sizeof *ts->npy, err);
    if (!ts->npy)
        return -1;
    for (size_t i = 0; i < ts->n_npy; i++) {
        char file[4096];
        snprintf(file, sizeof file, "%s/%s.npy", ts->path, ts->npy_names[i]);
        if (bp_npy_open(&ts->npy[i], file, err) < 0)
            return -1;
    }
    return 0;
}

int bp_tensorset_open(bp_tensorset *ts, const char *path, bp_error *err)
{
    struct stat sb;
    memset(ts, 0, sizeof *ts);
    if (stat(path, &sb) != 0)
        return bp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    if (!(ts->path = bp_strdup(path, err)))
        return -1;
    ts->is_dir = S_ISDIR(sb.st_mode);
    int rc;
    if (ts->is_dir) {
        rc = open_npy_dir(ts, err);
    } else if (bp_gguf_file(path)) {
        ts->is_gguf = 1;
        rc = bp_gguf_open(&ts->gguf, path, err);
        if (rc == 0 && (rc = bp_gguf_as_safetensors(&ts->gguf, &ts->st, err)) < 0)
            bp_gguf_close(&ts->gguf);
        if (rc < 0)
            ts->is_gguf = 0;
    } else {
        rc = bp_st_open(&ts->st, path, err);
    }
    if (rc < 0)
        bp_tensorset_close(ts);
    return rc;
}

void bp_tensorset_close(bp_tensorset *ts)
{
    if (ts->is_dir) {
        for (size_t i = 0; i < ts->n_npy; i++) {
            if (ts->npy)
                bp_npy_close(&ts->npy[i]);
            free(ts->npy_names[i]);
        }
        free(ts->npy);
        free(ts->npy_names);
    } else if (ts->is_gguf) {
        bp_st_close(&ts->st);                   /* the view: its mapping is gguf's */
        bp_gguf_close(&ts->gguf);
    } else if (ts->path) {
        bp_st_close(&ts->st);
    }
    free(ts->path);
    memset(ts, 0, sizeof *ts);
}

size_t bp_tensorset_count(const bp_tensorset *ts)
{
    return ts->is_dir ? ts->n_npy : ts->st.n_tensors;
}

bp_tensor_ref bp_tensorset_get(const bp_tensorset *ts, size_t i)
{
    if (ts->is_dir)
        return (bp_tensor_ref){ts->npy_names[i], ts->npy[i].dtype, ts->npy[i].rank,
                               ts->npy[i].shape};
    const bp_st_tensor *t = &ts->st.tensors[i];
    return (bp_tensor_ref){t->name, t->dtype, t->rank, t->shape};
}

long bp_tensorset_find(const bp_tensorset *ts, const char *name)
{
    size_t n = bp_tensorset_count(ts);
    for (size_t i = 0; i < n; i++)
        if (strcmp(bp_tensorset_get(ts, i).name, name) == 0)
            return (long)i;
    return -1;
}

const char *bp_tensorset_meta(const bp_tensorset *ts, const char *key)
{
    return ts->is_dir ? NULL : bp_st_meta_get(&ts->st, key);
}

int bp_tensorset_read_f32(const bp_tensorset *ts, size_t i, float *out, bp_error *err)
{
    if (ts->is_dir)
        return bp_npy_read_f32(&ts->npy[i], out, err);
    return bp_st_read_f32(&ts->st, &ts->st.tensors[i], out, err);
}

/* The raw bytes of tensor i (mapped), their count. */
static const unsigned char *raw_bytes(const bp_tensorset *ts, size_t i, size_t *n)
{
    if (ts->is_dir) {
        *n = ts->npy[i].size - ts->npy[i].data_start;
        return ts->npy[i].map + ts->npy[i].data_start;
    }
    const bp_st_tensor *t = &ts->st.tensors[i];
    *n = (size_t)(t->end - t->begin);
    return ts->st.map + ts->st.data_start + t->begin;
}

int bp_tensorset_same_data(const bp_tensorset *ts, size_t i, size_t j)
{
    bp_tensor_ref a = bp_tensorset_get(ts, i), b = bp_tensorset_get(ts, j);
    if (a.dtype != b.dtype || a.rank != b.rank ||
        memcmp(a.shape, b.shape, (size_t)a.rank * sizeof *a.shape) != 0)
        return 0;
    size_t na, nb;
    const unsigned char *pa = raw_bytes(ts, i, &na), *pb = raw_bytes(ts, j, &nb);
    return na == nb && memcmp(pa, pb, na) == 0;
}

/* ---- layers ------------------------------------------------------------- */

static int matches_any(char *const *patterns, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(patterns[i], name, 0) == 0)
            return 1;
    return 0;
}

static int is_float(bp_dtype dt)
{
    return dt == BP_DT_F32 || dt == BP_DT_F16 || dt == BP_DT_BF16 || dt == BP_DT_F64;
}

static int64_t numel(const bp_tensor_ref *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->shape[i];
    return n;
}

/* Shape of NAME.weight -> out, in, kernel; validates NAME.bias. */
static int describe_weights(const bp_model *m, bp_layer_desc *d, bp_error *err)
{
    const char *wf = m->weights.path;
    bp_tensor_ref w = bp_tensorset_get(&m->weights, (size_t)d->weight);
    if (!is_float(w.dtype))
        return bp_fail(err, "%s: tensor '%s': dtype %s is not a float weight (expected F32, "
                       "F16, BF16 or F64; exclude the layer to skip it)", wf, w.name,
                       bp_dtype_name(w.dtype));
    d->n_mat = w.rank == 3 ? w.shape[0] : 1;
    d->out = w.rank == 3 ? w.shape[0] * w.shape[1] : w.shape[0];
    d->is_conv = w.rank == 4;
    d->kh = d->is_conv ? (int)w.shape[2] : 1;
    d->kw = d->is_conv ? (int)w.shape[3] : 1;
    d->in = numel(&w) / (d->out ? d->out : 1);
    if (numel(&w) == 0)
        return bp_fail(err, "%s: tensor '%s' has no elements", wf, w.name);
    if (d->bias >= 0) {
        bp_tensor_ref b = bp_tensorset_get(&m->weights, (size_t)d->bias);
        if (b.rank != 1 || b.shape[0] != d->out || !is_float(b.dtype))
            return bp_fail(err, "%s: tensor '%s': expected a float bias of shape [%lld]",
                           wf, b.name, (long long)d->out);
    }
    return 0;
}

/* Group count from metadata "NAME.groups" or the calibration width. */
static int describe_groups(const bp_model *m, bp_layer_desc *d, bp_error *err)
{
    char key[1024];
    snprintf(key, sizeof key, "%s.groups", d->name);
    const char *meta = bp_tensorset_meta(&m->weights, key);
    long g = 1;
    if (meta) {
        char *end;
        g = strtol(meta, &end, 10);
        if (*end || g < 1 || d->out % g != 0)
            return bp_fail(err, "%s: metadata '%s' = '%s': expected a positive divisor of "
                           "the %lld output channels", m->weights.path, key, meta,
                           (long long)d->out);
    }
    if (d->input >= 0) {
        bp_tensor_ref x = bp_tensorset_get(&m->calib, (size_t)d->input);
        const char *cf = m->calib.path;
        if (x.rank != 2 || !is_float(x.dtype))
            return bp_fail(err, "%s: tensor '%s': expected a float (F32, F16, BF16 or F64) "
                           "matrix n x %lld, got %s of rank %d", cf, x.name, (long long)d->in,
                           bp_dtype_name(x.dtype), x.rank);
        if (x.shape[0] < 1)
            return bp_fail(err, "%s: tensor '%s' has 0 rows (expected at least one "
                           "calibration sample)", cf, x.name);
        int64_t width = x.shape[1];
        int64_t want = d->in * g;
        if (!meta && d->is_conv && d->in > 0 && width % d->in == 0 &&
            d->out % (width / d->in) == 0)
            g = (long)(width / d->in), want = width;
        if (width != want)
            return bp_fail(err, "%s: tensor '%s' has %lld columns, but layer '%s' "
                           "(in = %lld, groups = %ld) needs %lld", cf, x.name,
                           (long long)width, d->name, (long long)d->in, g,
                           (long long)want);
        d->n = x.shape[0];
    }
    d->groups = (int)g;
    return 0;
}

/* Does tensor idx have shape dims[0..rank) (or, with groups == 1, the same
 * without the leading groups axis)? */
static int shape_is(const bp_model *m, long idx, int rank, const int64_t *dims)
{
    bp_tensor_ref t = bp_tensorset_get(&m->calib, (size_t)idx);
    int skip = t.rank == rank - 1 && dims[0] == 1;   /* [groups = 1, ...] may drop the axis */
    if (!is_float(t.dtype) || (t.rank != rank && !skip))
        return 0;
    for (int i = 0; i < t.rank; i++)
        if (t.shape[i] != dims[i + skip])
            return 0;
    return 1;
}

static long find_suffix(const bp_model *m, const char *name, const char *suffix)
{
    char key[1100];
    snprintf(key, sizeof key, "%s.%s", name, suffix);
    return m->has_calib ? bp_tensorset_find(&m->calib, key) : -1;
}

const char *const bp_factor_kind[BP_FACTORS] = {"fisher", "margin"};

/* NAME.K, or NAME.K_u / _s / _d (and _n), for factor K of the layer, shaped
 * for the layer's groups. */
static int describe_factor(const bp_model *m, bp_layer_desc *d, int kind, bp_error *err)
{
    const char *cf = m->calib.path, *k = bp_factor_kind[kind], *n = d->name;
    char sfx[5][16];
    int64_t g = d->groups, og = d->out / d->groups;
    bp_factor_desc *f = &d->factor[kind];
    static const char *const part[4] = {"u", "s", "d", "n"};
    long *slot[4] = {&f->u, &f->s, &f->d, &f->n};
    f->dense = find_suffix(m, n, k);
    for (int i = 0; i < 4; i++) {
        snprintf(sfx[i], sizeof sfx[i], "%s_%s", k, part[i]);
        *slot[i] = find_suffix(m, n, sfx[i]);
    }
    f->rank = 0;
    int lowrank = f->u >= 0 || f->s >= 0 || f->d >= 0 || f->n >= 0;
    const char *what = kind == BP_FACTOR_FISHER ? "output Fisher" : "decision Fisher";
    if (f->dense >= 0 && lowrank)
        return bp_fail(err, "%s: layer '%s' has both '%s.%s' and its low-rank form "
                       "('%s.%s_u', '_s', '_d'); keep one", cf, n, n, k, n, k);
    if (f->dense >= 0) {
        int64_t dims[3] = {g, og, og};
        if (!shape_is(m, f->dense, 3, dims))
            return bp_fail(err, "%s: tensor '%s.%s': expected a float matrix [%lld, %lld]%s "
                           "(the %s per group of output channels)", cf, n, k, (long long)og,
                           (long long)og, g > 1 ? " per group, [groups, og, og]" : "", what);
        return 0;
    }
    if (!lowrank)
        return 0;
    if (f->u < 0 || f->s < 0 || f->d < 0)
        return bp_fail(err, "%s: layer '%s': the low-rank %s needs all of '%s.%s', '%s.%s' "
                       "and '%s.%s'", cf, n, what, n, sfx[0], n, sfx[1], n, sfx[2]);
    bp_tensor_ref u = bp_tensorset_get(&m->calib, (size_t)f->u);
    f->rank = u.rank >= 2 ? u.shape[u.rank - 2] : 0;
    int64_t du[3] = {g, f->rank, og}, ds[2] = {g, f->rank}, dd[2] = {g, og};
    if (f->rank < 1 || !shape_is(m, f->u, 3, du) || !shape_is(m, f->s, 2, ds) ||
        !shape_is(m, f->d, 2, dd) || (f->n >= 0 && !shape_is(m, f->n, 2, dd)))
        return bp_fail(err, "%s: layer '%s': expected '%s.%s' [k, %lld], '%s.%s' [k], '%s.%s' "
                       "[%lld] and optionally '%s.%s' [%lld] (with a leading [%lld] groups axis "
                       "for grouped convs)", cf, n, n, sfx[0], (long long)og, n, sfx[1], n,
                       sfx[2], (long long)og, n, sfx[3], (long long)og, (long long)g);
    return 0;
}

static int is_f64(const bp_model *m, long idx, int rank, const int64_t *dims)
{
    bp_tensor_ref t = bp_tensorset_get(&m->calib, (size_t)idx);
    int skip = t.rank == rank - 1 && dims[0] == 1;
    if (t.dtype != BP_DT_F64 || (t.rank != rank && !skip))
        return 0;
    for (int i = 0; i < t.rank; i++)
        if (t.shape[i] != dims[i + skip])
            return 0;
    return 1;
}

static const char *const kind_names[] = {"uniform", "log2", "ptf"};

/* Grid k of set S: its metadata "<kind> <bits>" and its five tensors. */
static int describe_grid(const bp_model *m, bp_layer_desc *d, size_t k, bp_grid_desc *gd,
                         bp_error *err)
{
    const char *cf = m->calib.path, *S = d->stats;
    char key[1200], kind[16];
    int64_t g = d->groups, in = d->in, dd[3] = {g, in, in}, ds[2] = {g, in};
    snprintf(key, sizeof key, "%s.grid%zu", S, k);
    const char *meta = bp_tensorset_meta(&m->calib, key);
    int bits, used = 0;
    if (!meta || sscanf(meta, "%15s %d%n", kind, &bits, &used) != 2 || meta[used] ||
        bits < 2 || bits > 15)
        return bp_fail(err, "%s: metadata '%s' = '%s': expected '<uniform|ptf|log2> <bits>' "
                       "with bits 2..15", cf, key, meta ? meta : "(missing)");
    gd->kind = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(kind, kind_names[i]) == 0)
            gd->kind = i;
    if (gd->kind < 0)
        return bp_fail(err, "%s: metadata '%s': unknown grid kind '%s' (expected uniform, ptf "
                       "or log2)", cf, key, kind);
    gd->bits = bits;
    gd->m = gd->kind == BP_AQ_PTF ? g * in : 1;
    char sub[1300];
    long *idx[5] = {&gd->scale, &gd->zero, &gd->qtq, &gd->qtx, &gd->qsum};
    static const char *const part[5] = {"scale", "zero", "qtq", "qtx", "qsum"};
    for (int i = 0; i < 5; i++) {
        snprintf(sub, sizeof sub, "%s.%s", key, part[i]);
        *idx[i] = bp_tensorset_find(&m->calib, sub);
        int ok = *idx[i] >= 0;
        if (ok && i < 2) {
            bp_tensor_ref t = bp_tensorset_get(&m->calib, (size_t)*idx[i]);
            ok = t.dtype == BP_DT_F32 && t.rank == 1 && t.shape[0] == gd->m;
        } else if (ok) {
            ok = i < 4 ? is_f64(m, *idx[i], 3, dd) : is_f64(m, *idx[i], 2, ds);
        }
        if (!ok)
            return bp_fail(err, "%s: layer '%s': expected tensor '%s' (%s) for the "
                           "statistics' grid %zu", cf, d->name, sub,
                           i < 2 ? (gd->m == 1 ? "F32 [1]" : "F32 [in * groups]")
                           : i < 4 ? "F64 [in, in], [groups, in, in] for grouped convs"
                                   : "F64 [in], [groups, in] for grouped convs", k);
    }
    return 0;
}

/* The statistics set the layer reads (model.h), shapes checked. */
static int describe_stats(const bp_model *m, bp_layer_desc *d, bp_error *err)
{
    char key[1100];
    const char *cf = m->calib.path;
    d->st_count = d->st_xtx = d->st_xsum = d->st_range = -1;
    if (!m->has_calib)
        return 0;
    snprintf(key, sizeof key, "%s.stats", d->name);
    const char *set = bp_tensorset_meta(&m->calib, key);
    long xtx = find_suffix(m, set ? set : d->name, "xtx");
    if (!set && xtx < 0)
        return 0;
    if (d->input >= 0)
        return bp_fail(err, "%s: layer '%s' has both rows ('%s.input') and statistics; keep "
                       "one", cf, d->name, d->name);
    if (m->calib.is_dir)
        return bp_fail(err, "%s: statistics must be in a safetensors file (they need its "
                       "metadata)", cf);
    if (!(d->stats = bp_strdup(set ? set : d->name, err)))
        return -1;
    const char *S = d->stats;
    d->st_xtx = xtx;
    d->st_count = find_suffix(m, S, "count");
    d->st_xsum = find_suffix(m, S, "xsum");
    d->st_range = find_suffix(m, S, "range");
    if (xtx < 0 || d->st_count < 0 || d->st_xsum < 0 || d->st_range < 0)
        return bp_fail(err, "%s: layer '%s' reads statistics '%s' but '%s.%s' is missing "
                       "(expected %s.count, .xtx, .xsum and .range)", cf, d->name, S, S,
                       xtx < 0 ? "xtx" : d->st_count < 0 ? "count" : d->st_xsum < 0 ? "xsum"
                                                                     : "range", S);
    bp_tensor_ref x = bp_tensorset_get(&m->calib, (size_t)xtx);
    int meta_g = bp_tensorset_meta(&m->weights, (snprintf(key, sizeof key, "%s.groups",
                                                          d->name), key)) != NULL;
    if (!meta_g && d->is_conv && x.rank == 3 && x.shape[0] > 0 && d->out % x.shape[0] == 0)
        d->groups = (int)x.shape[0];
    int64_t g = d->groups, in = d->in, dd[3] = {g, in, in}, ds[2] = {g, in}, one[1] = {1};
    if (!is_f64(m, xtx, 3, dd) || !is_f64(m, d->st_xsum, 2, ds))
        return bp_fail(err, "%s: layer '%s' (in = %lld, groups = %lld): expected '%s.xtx' F64 "
                       "[%lld, %lld]%s and '%s.xsum' F64 [%lld]", cf, d->name, (long long)in,
                       (long long)g, S, (long long)in, (long long)in,
                       g > 1 ? " per group ([groups, in, in])" : "", S, (long long)in);
    bp_tensor_ref c = bp_tensorset_get(&m->calib, (size_t)d->st_count);
    double n = -1.0;
    if (is_f64(m, d->st_count, 1, one))
        memcpy(&n, m->calib.st.map + m->calib.st.data_start + m->calib.st.tensors[d->st_count].begin,
               sizeof n);
    if (!(n >= 1.0 && n <= 9.0e15 && n == floor(n)))
        return bp_fail(err, "%s: tensor '%s': expected F64 [1] holding the number of rows "
                       "summed (a positive integer)", cf, c.name);
    d->n = (int64_t)n;
    bp_tensor_ref r = bp_tensorset_get(&m->calib, (size_t)d->st_range);
    if (r.rank != 2 || !is_float(r.dtype) || r.shape[1] != in * g || r.shape[0] < 1)
        return bp_fail(err, "%s: tensor '%s': expected a float matrix [rows, %lld] (the rows "
                       "activation grids are fitted on)", cf, r.name, (long long)(in * g));
    d->st_range_rows = r.shape[0];
    for (size_t k = 0;; k++) {                   /* grid0, grid1, ... */
        snprintf(key, sizeof key, "%s.grid%zu", S, k);
        if (!bp_tensorset_meta(&m->calib, key))
            break;
        bp_grid_desc *gd = realloc(d->grids, (k + 1) * sizeof *gd);
        if (!gd)
            return bp_fail(err, "out of memory");
        d->grids = gd;
        d->n_grids = k + 1;
        if (describe_grid(m, d, k, &gd[k], err) < 0)
            return -1;
    }
    return 0;
}

static int add_layer(bp_model *m, const char *name, long widx, bp_error *err)
{
    bp_layer_desc *d = &m->layers[m->n_layers];
    char key[1024];
    memset(d, 0, sizeof *d);
    if (strlen(name) >= sizeof key - 16)
        return bp_fail(err, "%s: layer name too long", m->weights.path);
    if (!(d->name = bp_strdup(name, err)))
        return -1;
    m->n_layers++;
    d->weight = widx;
    snprintf(key, sizeof key, "%s.bias", name);
    d->bias = bp_tensorset_find(&m->weights, key);
    snprintf(key, sizeof key, "%s.input", name);
    d->input = m->has_calib ? bp_tensorset_find(&m->calib, key) : -1;
    snprintf(key, sizeof key, "%s.grad2", name);
    d->grad2 = m->has_calib ? bp_tensorset_find(&m->calib, key) : -1;
    if (d->grad2 >= 0) {
        bp_tensor_ref g = bp_tensorset_get(&m->calib, (size_t)d->grad2);
        int64_t n = 1;
        for (int k = 0; k < g.rank; k++)
            n *= g.shape[k];
        if (g.rank != 1 || !is_float(g.dtype))
            return bp_fail(err, "%s: tensor '%s': expected a float vector of the layer's "
                           "output channels", m->calib.path, g.name);
        d->n_grad2 = n;
    }
    if (describe_weights(m, d, err) < 0 || describe_groups(m, d, err) < 0 ||
        describe_stats(m, d, err) < 0 || describe_factor(m, d, BP_FACTOR_FISHER, err) < 0 ||
        describe_factor(m, d, BP_FACTOR_MARGIN, err) < 0)
        return -1;
    return 0;
}

static int find_layers(bp_model *m, char *const *inc, size_t n_inc, char *const *exc,
                       size_t n_exc, bp_error *err)
{
    size_t n = bp_tensorset_count(&m->weights);
    m->layers = bp_calloc(n, sizeof *m->layers, err);
    if (!m->layers)
        return -1;
    for (size_t i = 0; i < n; i++) {
        bp_tensor_ref t = bp_tensorset_get(&m->weights, i);
        size_t len = strlen(t.name);
        if (len <= 7 || strcmp(t.name + len - 7, ".weight") != 0)
            continue;
        if (m->weights.is_gguf ? !bp_llama_quantizable(t.name, t.rank)
                               : t.rank != 2 && t.rank != 4)
            continue;
        if (!bp_printable_utf8(t.name)) {
            char shown[160];           /* the name with its bad bytes as \xHH */
            size_t k = 0;
            for (const unsigned char *c = (const unsigned char *)t.name; *c && k + 5 < sizeof shown; c++)
                k += (size_t)(*c < 0x20 || *c >= 0x7f
                                  ? snprintf(shown + k, sizeof shown - k, "\\x%02x", *c)
                                  : snprintf(shown + k, sizeof shown - k, "%c", *c));
            return bp_fail(err, "%s: tensor '%s': the name has a control character or is not "
                           "UTF-8; plans and exports could not name it (rename the tensor)",
                           m->weights.path, shown);
        }
        char *name = strndup(t.name, len - 7);
        if (!name)
            return bp_fail(err, "out of memory");
        int rc = 0;
        if (matches_any(inc, n_inc, name) && !matches_any(exc, n_exc, name))
            rc = add_layer(m, name, (long)i, err);
        free(name);
        if (rc < 0)
            return -1;
    }
    if (m->n_layers == 0 && m->weights.is_gguf) {
        const char *type = bp_tensorset_meta(&m->weights, "general.type");
        if (type && !strcmp(type, "imatrix"))
            return bp_fail(err, "%s: an importance matrix, not a model (give it as "
                           "model.imatrix, and the model's GGUF as model.weights)",
                           m->weights.path);
        return bp_fail(err, "%s: no layers found (expected tensors llama-quantize quantizes, "
                       "2-D or 3-D NAME.weight, matching model.include and not "
                       "model.exclude)", m->weights.path);
    }
    if (m->n_layers == 0)
        return bp_fail(err, "%s: no layers found (expected NAME.weight tensors of rank 2 "
                       "or 4 matching model.include and not model.exclude)",
                       m->weights.path);
    return 0;
}

/* The RMSNorm whose output a GGUF layer reads (llama.cpp's names): a
 * block's attn_norm for attn_q/k/v (and a fused attn_qkv), its ffn_norm for
 * ffn_gate/ffn_up (and their experts), output_norm for output; -1 for the
 * others or when the norm's width differs. */
static long input_norm(const bp_model *m, const bp_layer_desc *d)
{
    static const char *const attn[] = {".attn_q", ".attn_k", ".attn_v", ".attn_qkv"};
    static const char *const ffn[] = {".ffn_gate", ".ffn_up"};
    char key[1100];
    const char *dot = strrchr(d->name, '.');
    key[0] = '\0';
    if (bp_llama_is_output(d->name) || d->embedding)     /* an embedding: its tied output role */
        snprintf(key, sizeof key, "output_norm.weight");
    for (size_t i = 0; dot && i < 4; i++)
        if (!strcmp(dot, attn[i]))
            snprintf(key, sizeof key, "%.*s.attn_norm.weight", (int)(dot - d->name), d->name);
    for (size_t i = 0; dot && i < 2; i++)
        if (!strncmp(dot, ffn[i], strlen(ffn[i])))
            snprintf(key, sizeof key, "%.*s.ffn_norm.weight", (int)(dot - d->name), d->name);
    long idx = key[0] ? bp_tensorset_find(&m->weights, key) : -1;
    if (idx >= 0) {
        bp_tensor_ref t = bp_tensorset_get(&m->weights, (size_t)idx);
        if (t.rank != 1 || t.shape[0] != d->in)
            idx = -1;
    }
    return idx;
}

/* Each layer's importance-matrix entry (by its tensor's name), shapes
 * checked; embedding tables marked.  An entry for no layer is fine (an
 * imatrix covers the whole model, the plan maybe not); an imatrix that
 * matches no layer at all is for another model. */
static int attach_imatrix(bp_model *m, bp_error *err)
{
    size_t matched = 0;
    /* no output.weight: the embedding is the output too (tied), and its error is
     * its rows' and its output's */
    int tied = m->weights.is_gguf && bp_tensorset_find(&m->weights, "output.weight") < 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        bp_layer_desc *d = &m->layers[i];
        d->embedding = m->weights.is_gguf && bp_llama_is_embedding(d->name);
        if (!m->has_imatrix)
            continue;
        char key[1100];
        snprintf(key, sizeof key, "%s.weight", d->name);
        const bp_imatrix_entry *e = bp_imatrix_find(&m->im, key);
        if (!e && (!d->embedding || tied)) {
            d->im_missing = 1;
            d->im_norm = input_norm(m, d);
        }
        if (!e)
            continue;
        /* experts: a row per matrix, or (the legacy form) all stacked in one */
        int64_t in = d->in * d->groups;
        if (!(e->in == in && e->n_mat == d->n_mat) &&
            !(e->n_mat == 1 && d->n_mat > 1 && e->in == in * d->n_mat))
            return bp_fail(err, "%s: entry '%s' is for %lld columns x %lld matrices, but the "
                           "model's '%s' has %lld columns x %lld (an importance matrix of "
                           "another model?)", m->im.path, key, (long long)e->in,
                           (long long)e->n_mat, key, (long long)in, (long long)d->n_mat);
        d->im = e;
        matched++;
    }
    if (m->has_imatrix && matched == 0)
        return bp_fail(err, "%s: no entry names a layer of %s (an importance matrix of another "
                       "model?)", m->im.path, m->weights.path);
    return 0;
}

int bp_model_open(bp_model *m, const char *weights, const char *calib, const char *imatrix,
                  char *const *include, size_t n_include,
                  char *const *exclude, size_t n_exclude, bp_error *err)
{
    memset(m, 0, sizeof *m);
    if (bp_tensorset_open(&m->weights, weights, err) < 0)
        return -1;
    if (calib) {
        if (bp_tensorset_open(&m->calib, calib, err) < 0) {
            bp_model_close(m);
            return -1;
        }
        m->has_calib = 1;
    }
    if (imatrix) {
        if (bp_imatrix_open(&m->im, imatrix, err) < 0) {
            bp_model_close(m);
            return -1;
        }
        m->has_imatrix = 1;
    }
    if (find_layers(m, include, n_include, exclude, n_exclude, err) < 0 ||
        attach_imatrix(m, err) < 0) {
        bp_model_close(m);
        return -1;
    }
    return 0;
}

void bp_model_close(bp_model *m)
{
    for (size_t i = 0; m->layers && i < m->n_layers; i++) {
        free(m->layers[i].name);
        free(m->layers[i].stats);
        free(m->layers[i].grids);
    }
    free(m->layers);
    bp_tensorset_close(&m->weights);
    if (m->has_calib)
        bp_tensorset_close(&m->calib);
    if (m->has_imatrix)
        bp_imatrix_close(&m->im);
    memset(m, 0, sizeof *m);
}

static float *read_tensor(const bp_tensorset *ts, long idx, int64_t count, bp_error *err)
{
    float *buf = bp_malloc((size_t)count * sizeof(float), err);
    if (buf && bp_tensorset_read_f32(ts, (size_t)idx, buf, err) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Every value finite, and (nonneg) none negative. */
static int check_values(const bp_model *m, const char *name, const char *suffix,
                        const float *v, int64_t n, int nonneg, bp_error *err)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || (nonneg && v[i] < 0.0f))
            return bp_fail(err, "%s: tensor '%s.%s': value %g at index %lld (expected %s)",
                           m->calib.path, name, suffix, (double)v[i], (long long)i,
                           nonneg ? "finite values >= 0" : "finite values");
    return 0;
}

/* Factor `kind`'s tensors (shapes checked by describe_factor). */
static int load_factor(const bp_model *m, const bp_layer_desc *d, int kind,
                       bp_loaded_layer *out, bp_error *err)
{
    const bp_factor_desc *f = &d->factor[kind];
    struct bp_loaded_factor *lf = &out->factor[kind];
    const char *k = bp_factor_kind[kind];
    char sfx[4][16];
    static const char *const part[4] = {"u", "s", "d", "n"};
    for (int i = 0; i < 4; i++)
        snprintf(sfx[i], sizeof sfx[i], "%s_%s", k, part[i]);
    int64_t g = d->groups, og = d->out / d->groups, r = f->rank;
    lf->of = (bp_ofactor){g, og, r, NULL, NULL, NULL, NULL, NULL};
    if (f->dense >= 0) {
        if (!(lf->F = read_tensor(&m->calib, f->dense, g * og * og, err)) ||
            check_values(m, d->name, k, lf->F, g * og * og, 0, err) < 0)
            return -1;
        lf->of.F = lf->F;
    } else if (f->u >= 0) {
        if (!(lf->U = read_tensor(&m->calib, f->u, g * r * og, err)) ||
            !(lf->S = read_tensor(&m->calib, f->s, g * r, err)) ||
            !(lf->D = read_tensor(&m->calib, f->d, g * og, err)) ||
            check_values(m, d->name, sfx[0], lf->U, g * r * og, 0, err) < 0 ||
            check_values(m, d->name, sfx[1], lf->S, g * r, 1, err) < 0 ||
            check_values(m, d->name, sfx[2], lf->D, g * og, 1, err) < 0)
            return -1;
        lf->of.U = lf->U, lf->of.s = lf->S, lf->of.d = lf->D;
        if (f->n >= 0) {
            if (!(lf->N = read_tensor(&m->calib, f->n, g * og, err)) ||
                check_values(m, d->name, sfx[3], lf->N, g * og, 0, err) < 0)
                return -1;
            for (int64_t j = 0; j < g; j++) {           /* a unit vector per group */
                double nn = 0.0;
                for (int64_t i = 0; i < og; i++)
                    nn += (double)lf->N[j * og + i] * lf->N[j * og + i];
                if (fabs(nn - 1.0) > 1e-4)
                    return bp_fail(err, "%s: tensor '%s.%s': expected a unit vector per "
                                   "group, got squared norm %g", m->calib.path, d->name, sfx[3],
                                   nn);
            }
            lf->of.n = lf->N;
        }
    }
    return 0;
}

static double *read_f64(const bp_model *m, long idx, int64_t count, bp_error *err)
{
    double *buf = bp_malloc((size_t)count * sizeof(double), err);
    if (buf && bp_st_read_f64(&m->calib.st, &m->calib.st.tensors[idx], buf, err) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* The statistics set's sums and the wanted grids. */
static int load_stats(const bp_model *m, const bp_layer_desc *d, const unsigned char *want,
                      bp_loaded_layer *out, bp_error *err)
{
    int64_t g = d->groups, dd = g * d->in * d->in, ds = g * d->in;
    if (!(out->xtx = read_f64(m, d->st_xtx, dd, err)) ||
        !(out->xsum = read_f64(m, d->st_xsum, ds, err)) ||
        !(out->grid = bp_calloc(d->n_grids ? d->n_grids : 1, sizeof *out->grid, err)))
        return -1;
    out->grid_n = d->n_grids;
    for (size_t k = 0; want && k < d->n_grids; k++) {
        if (!want[k])
            continue;
        const bp_grid_desc *gd = &d->grids[k];
        double *q = read_f64(m, gd->qtq, dd, err), *x = q ? read_f64(m, gd->qtx, dd, err) : NULL;
        double *s = x ? read_f64(m, gd->qsum, ds, err) : NULL;
        out->grid[k] = (bp_stats_grid){q, x, s};
        if (!s)
            return -1;
    }
    /* sums of squares: a negative diagonal is a corrupt file, not data */
    for (int64_t j = 0; j < g; j++)
        for (int64_t i = 0; i < d->in; i++) {
            int64_t at = j * d->in * d->in + i * d->in + i;
            const char *bad = out->xtx[at] < 0.0 ? "xtx" : NULL;
            for (size_t k = 0; !bad && want && k < d->n_grids; k++)
                if (out->grid[k].qtq && out->grid[k].qtq[at] < 0.0)
                    bad = "grid's qtq";
            if (bad)
                return bp_fail(err, "%s: statistics '%s': %s diagonal element %lld is negative "
                               "(a sum of squares; the file is corrupt)", m->calib.path,
                               d->stats, bad, (long long)(j * d->in + i));
        }
    out->stats = (bp_stats){d->n, out->xtx, out->xsum, NULL, d->stats};
    return 0;
}

int bp_model_load_layer(const bp_model *m, size_t i, bp_loaded_layer *out, bp_error *err)
{
    return bp_model_load_layer_grids(m, i, NULL, out, err);
}

int bp_model_match_grid(const bp_model *m, size_t i, const bp_qspec *acts, int bits,
                        size_t *k, bp_error *err)
{
    const bp_layer_desc *d = &m->layers[i];
    int64_t r = d->st_range_rows, w = d->in * d->groups;
    bp_qspec q = *acts;
    q.bits = bits;
    if (q.kind == BP_AQ_UNIFORM && q.granularity != BP_GRAN_TENSOR)
        return bp_fail(err, "layer '%s': %s activation grids are fitted per row as the data "
                       "comes and cannot be expressed as statistics (%s); use per_tensor, ptf "
                       "or log2 activations, or capture rows", d->name,
                       bp_granularity_name(q.granularity), m->calib.path);
    float *x = read_tensor(&m->calib, d->st_range, r * w, err);
    float *sc = x ? bp_malloc((size_t)(2 * w) * sizeof *sc, err) : NULL;
    if (!sc) {
        free(x);
        return -1;
    }
    int64_t mm = bp_act_grid(x, r, w, &q, sc, sc + w);
    int rc = -1;
    for (size_t j = 0; rc < 0 && j < d->n_grids; j++) {
        const bp_grid_desc *gd = &d->grids[j];
        if (gd->kind != (int)q.kind || gd->bits != bits || gd->m != mm)
            continue;
        const bp_st_tensor *ts = &m->calib.st.tensors[gd->scale], *tz = &m->calib.st.tensors[gd->zero];
        const unsigned char *base = m->calib.st.map + m->calib.st.data_start;
        if (memcmp(base + ts->begin, sc, (size_t)mm * 4) == 0 &&
            memcmp(base + tz->begin, sc + w, (size_t)mm * 4) == 0)
            *k = j, rc = 0;
    }
    if (rc < 0)
        bp_fail(err, "%s: layer '%s': the statistics '%s' hold no %d-bit %s activation grid "
                "equal to the one the config fits on '%s.range' (%s, range %s%s): they were "
                "captured for other activation settings; capture again with this config "
                "(tools/capture.py --stats --config ...)", m->calib.path, d->name, d->stats,
                bits, bp_qkind_name(q.kind), d->stats, q.symmetric ? "symmetric" : "asymmetric",
                bp_range_name(q.range), d->n_grids ? "" : "; the set has no grids at all");
    free(x);
    free(sc);
    return rc;
}

int bp_model_load_layer_acts(const bp_model *m, size_t i, const bp_qspec *acts, size_t n_specs,
                             const int *abits, size_t n_abits, bp_loaded_layer *out,
                             bp_stats_grid *sg, bp_error *err)
{
    const bp_layer_desc *d = &m->layers[i];
    if (!d->stats)
        return bp_model_load_layer(m, i, out, err);
    size_t nk = n_specs * n_abits, *k = bp_malloc((nk ? nk : 1) * sizeof *k, err);
    unsigned char *want = bp_calloc(d->n_grids ? d->n_grids : 1, 1, err);
    int rc = k && want ? 0 : -1;
    for (size_t s = 0; rc == 0 && s < n_specs; s++)
        for (size_t a = 0; rc == 0 && a < n_abits; a++) {
            k[s * n_abits + a] = (size_t)-1;
            if (abits[a] < BP_BITS_FLOAT &&
                (rc = bp_model_match_grid(m, i, &acts[s], abits[a], &k[s * n_abits + a],
                                          err)) == 0)
                want[k[s * n_abits + a]] = 1;
        }
    if (rc == 0)
        rc = bp_model_load_layer_grids(m, i, want, out, err);
    for (size_t j = 0; rc == 0 && j < nk; j++)
        sg[j] = k[j] == (size_t)-1 ? (bp_stats_grid){NULL, NULL, NULL} : out->grid[k[j]];
    if (rc == 0)
        out->stats.grid = sg;
    free(k);
    free(want);
    return rc;
}

/* Magnitudes bitplan's arithmetic keeps exact: weights within 2^-60 .. 2^60
 * (float32 grid steps stay normal at 15 bits, squared errors stay far from
 * overflow), inputs below 2^40 (their float32 Gram over 2^20 rows stays
 * finite).  The quantizers are scale-invariant: a layer outside is rescaled
 * by its owner, not silently mis-measured. */
#define W_MAX 1.152921504606846976e18   /* 2^60 */
#define W_MIN 8.673617379884035e-19     /* 2^-60 */
#define X_MAX 1.099511627776e12         /* 2^40 */

static int check_range(const char *path, const char *layer, const char *what, const float *v,
                       int64_t n, double lo, double hi, bp_error *err)
{
    float mf = 0.0f;                 /* comparisons (NaN ignored, as fmax would), not libm */
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        mf = a > mf ? a : mf;
    }
    double m = mf;
    if (m > hi || (m > 0.0 && m < lo))
        return bp_fail(err, "%s: layer '%s': its %s reach |%g|, outside what bitplan's float32 "
                       "grids and error sums keep exact (%s %g); rescale the layer (its "
                       "quantization is scale-invariant)", path, layer, what, m,
                       m > hi ? "at most" : "at least", m > hi ? hi : lo);
    return 0;
}

/*
 * The diagonal statistics of an importance-matrix entry: d = sum2 / count
 * per matrix (a matrix no token reached, count 0, takes the mean d of the
 * others), and the ggml quantizers' weights exactly as llama-quantize forms
 * them: in float, sum2 / (float)lround(count), and 1 where count is 0.
 */
static int load_diag(const bp_model *m, const bp_layer_desc *d, bp_loaded_layer *out,
                     bp_error *err)
{
    const bp_imatrix_entry *e = d->im;
    out->diag = (bp_diag){d->n_mat, NULL, NULL, d->embedding ? 1.0 / (double)d->out : 0.0};
    if (!e && d->im_missing) {       /* gamma_j^2 of the norm in front, else 1 */
        int64_t in = d->in * d->groups;
        float *g = d->im_norm >= 0 ? read_tensor(&m->weights, d->im_norm, in, err) : NULL;
        if (d->im_norm >= 0 && !g)
            return -1;
        if (!(out->dd = bp_malloc((size_t)(in * d->n_mat) * sizeof *out->dd, err))) {
            free(g);
            return -1;
        }
        for (int64_t j = 0; j < in * d->n_mat; j++)
            out->dd[j] = g ? (double)g[j % in] * g[j % in] : 1.0;
        free(g);
        out->diag.d = out->dd;
        return 0;
    }
    if (!e)
        return 0;
    int64_t in = d->in * d->groups, nm = d->n_mat;    /* counts: per matrix, or one */
    if (!(out->dd = bp_malloc((size_t)(nm * in) * sizeof *out->dd, err)) ||
        !(out->qw = bp_malloc((size_t)(nm * in) * sizeof *out->qw, err)))
        return -1;
    double *mean = bp_calloc((size_t)in, sizeof *mean, err);
    int64_t seen = 0;
    if (!mean)
        return -1;
    for (int64_t k = 0; k < nm; k++) {
        double c = e->count[e->n_mat > 1 ? k : 0];
        float cf = (float)llround(c);
        for (int64_t j = 0; j < in; j++) {
            double s2 = e->sum2[k * in + j];
            out->dd[k * in + j] = c > 0 ? s2 / c : -1.0;
            out->qw[k * in + j] = c > 0 ? (float)s2 / cf : 1.0f;
            if (c > 0)
                mean[j] += s2 / c;
        }
        seen += c > 0;
    }
    for (int64_t k = 0; k < nm; k++)
        for (int64_t j = 0; j < in; j++)
            if (out->dd[k * in + j] < 0)
                out->dd[k * in + j] = seen ? mean[j] / (double)seen : 1.0;
    free(mean);
    out->diag.d = out->dd;
    out->diag.qw = out->qw;
    return 0;
}

int bp_model_load_layer_grids(const bp_model *m, size_t i, const unsigned char *want,
                              bp_loaded_layer *out, bp_error *err)
{
    const bp_layer_desc *d = &m->layers[i];
    memset(out, 0, sizeof *out);
    out->W = read_tensor(&m->weights, d->weight, d->out * d->in, err);
    if (out->W && d->bias >= 0)
        out->bias = read_tensor(&m->weights, d->bias, d->out, err);
    if (out->W && (d->bias < 0 || out->bias) && d->input >= 0)
        out->X = read_tensor(&m->calib, d->input, d->n * d->in * d->groups, err);
    if (out->W && d->grad2 >= 0 && d->n_grad2 != d->out) {
        bp_loaded_layer_free(out);
        return bp_fail(err, "%s: tensor '%s.grad2' has %lld values, but layer '%s' has %lld "
                       "output channels", m->calib.path, d->name, (long long)d->n_grad2,
                       d->name, (long long)d->out);
    }
    if (out->W && d->grad2 >= 0)
        out->grad2 = read_tensor(&m->calib, d->grad2, d->out, err);
    if (!out->W || (d->bias >= 0 && !out->bias) || (d->input >= 0 && !out->X) ||
        (d->grad2 >= 0 && !out->grad2) ||
        check_range(m->weights.path, d->name, "weights", out->W, d->out * d->in, W_MIN, W_MAX,
                    err) < 0 ||
        (out->X && check_range(m->calib.path, d->name, "inputs", out->X,
                               d->n * d->in * d->groups, 0.0, X_MAX, err) < 0) ||
        load_factor(m, d, BP_FACTOR_FISHER, out, err) < 0 ||
        load_factor(m, d, BP_FACTOR_MARGIN, out, err) < 0 ||
        (d->stats && load_stats(m, d, want, out, err) < 0) || load_diag(m, d, out, err) < 0) {
        bp_loaded_layer_free(out);
        return -1;
    }
    int diag = d->im || d->im_missing || d->embedding;
    int64_t n = d->input >= 0 || d->stats ? d->n : 0;
    if (!n && diag)             /* the tokens behind the importance matrix */
        n = d->im ? (int64_t)fmax(1.0, d->im->count[0]) : 1;
    out->view = (bp_layer){d->name, d->out, d->in, d->kh, d->kw, d->groups,
                           out->W, out->bias, n, out->X, out->grad2,
                           bp_factor_present(&d->factor[0]) ? &out->factor[0].of : NULL,
                           d->stats ? &out->stats : NULL,
                           bp_factor_present(&d->factor[1]) ? &out->factor[1].of : NULL,
                           diag ? &out->diag : NULL};
    return 0;
}

void bp_loaded_layer_free(bp_loaded_layer *l)
{
    free(l->W);
    free(l->bias);
    free(l->X);
    free(l->grad2);
    for (int k = 0; k < BP_FACTORS; k++) {
        free(l->factor[k].F);
        free(l->factor[k].U);
        free(l->factor[k].S);
        free(l->factor[k].D);
        free(l->factor[k].N);
    }
    free(l->xtx);
    free(l->xsum);
    free(l->dd);
    free(l->qw);
    for (size_t k = 0; l->grid && l->grid_n && k < l->grid_n; k++) {
        free((void *)l->grid[k].qtq);
        free((void *)l->grid[k].qtx);
        free((void *)l->grid[k].qsum);
    }
    free(l->grid);
    memset(l, 0, sizeof *l);
}
