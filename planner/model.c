/*
 * model.c - tensor sets (safetensors / .npy directory) and layer discovery.
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
    int rc = ts->is_dir ? open_npy_dir(ts, err) : bp_st_open(&ts->st, path, err);
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
    return dt == BP_DT_F32 || dt == BP_DT_F16 || dt == BP_DT_BF16;
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
                       "F16 or BF16; exclude the layer to skip it)", wf, w.name,
                       bp_dtype_name(w.dtype));
    d->out = w.shape[0];
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
            return bp_fail(err, "%s: tensor '%s': expected a float matrix n x %lld",
                           cf, x.name, (long long)d->in);
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

/* NAME.fisher, or NAME.fisher_u / _s / _d, shaped for the layer's groups. */
static int describe_fisher(const bp_model *m, bp_layer_desc *d, bp_error *err)
{
    const char *cf = m->calib.path;
    int64_t g = d->groups, og = d->out / d->groups;
    d->fisher = find_suffix(m, d->name, "fisher");
    d->fisher_u = find_suffix(m, d->name, "fisher_u");
    d->fisher_s = find_suffix(m, d->name, "fisher_s");
    d->fisher_d = find_suffix(m, d->name, "fisher_d");
    d->fisher_n = find_suffix(m, d->name, "fisher_n");
    int lowrank = d->fisher_u >= 0 || d->fisher_s >= 0 || d->fisher_d >= 0 || d->fisher_n >= 0;
    if (d->fisher >= 0 && lowrank)
        return bp_fail(err, "%s: layer '%s' has both '%s.fisher' and its low-rank form "
                       "('%s.fisher_u', '_s', '_d'); keep one", cf, d->name, d->name, d->name);
    if (d->fisher >= 0) {
        int64_t dims[3] = {g, og, og};
        if (!shape_is(m, d->fisher, 3, dims))
            return bp_fail(err, "%s: tensor '%s.fisher': expected a float matrix [%lld, %lld]%s "
                           "(the output Fisher per group of output channels)", cf, d->name,
                           (long long)og, (long long)og, g > 1 ? " per group, [groups, og, og]"
                                                               : "");
        return 0;
    }
    if (!lowrank)
        return 0;
    if (d->fisher_u < 0 || d->fisher_s < 0 || d->fisher_d < 0)
        return bp_fail(err, "%s: layer '%s': the low-rank output Fisher needs all of "
                       "'%s.fisher_u', '%s.fisher_s' and '%s.fisher_d'", cf, d->name, d->name,
                       d->name, d->name);
    bp_tensor_ref u = bp_tensorset_get(&m->calib, (size_t)d->fisher_u);
    d->fisher_rank = u.rank >= 2 ? u.shape[u.rank - 2] : 0;
    int64_t du[3] = {g, d->fisher_rank, og}, ds[2] = {g, d->fisher_rank}, dd[2] = {g, og};
    if (d->fisher_rank < 1 || !shape_is(m, d->fisher_u, 3, du) ||
        !shape_is(m, d->fisher_s, 2, ds) || !shape_is(m, d->fisher_d, 2, dd) ||
        (d->fisher_n >= 0 && !shape_is(m, d->fisher_n, 2, dd)))
        return bp_fail(err, "%s: layer '%s': expected '%s.fisher_u' [k, %lld], '%s.fisher_s' "
                       "[k], '%s.fisher_d' [%lld] and optionally '%s.fisher_n' [%lld] (with a "
                       "leading [%lld] groups axis for grouped convs)", cf, d->name, d->name,
                       (long long)og, d->name, d->name, (long long)og, d->name, (long long)og,
                       (long long)g);
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
        describe_fisher(m, d, err) < 0)
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
        if (t.rank != 2 && t.rank != 4)
            continue;
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
    if (m->n_layers == 0)
        return bp_fail(err, "%s: no layers found (expected NAME.weight tensors of rank 2 "
                       "or 4 matching model.include and not model.exclude)",
                       m->weights.path);
    return 0;
}

int bp_model_open(bp_model *m, const char *weights, const char *calib,
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
    if (find_layers(m, include, n_include, exclude, n_exclude, err) < 0) {
        bp_model_close(m);
        return -1;
    }
    return 0;
}

void bp_model_close(bp_model *m)
{
    for (size_t i = 0; m->layers && i < m->n_layers; i++)
        free(m->layers[i].name);
    free(m->layers);
    bp_tensorset_close(&m->weights);
    if (m->has_calib)
        bp_tensorset_close(&m->calib);
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

/* The output factor's tensors (shapes checked by describe_fisher). */
static int load_fisher(const bp_model *m, const bp_layer_desc *d, bp_loaded_layer *out,
                       bp_error *err)
{
    int64_t g = d->groups, og = d->out / d->groups, k = d->fisher_rank;
    out->ofactor = (bp_ofactor){g, og, k, NULL, NULL, NULL, NULL, NULL};
    if (d->fisher >= 0) {
        if (!(out->F = read_tensor(&m->calib, d->fisher, g * og * og, err)) ||
            check_values(m, d->name, "fisher", out->F, g * og * og, 0, err) < 0)
            return -1;
        out->ofactor.F = out->F;
    } else if (d->fisher_u >= 0) {
        if (!(out->U = read_tensor(&m->calib, d->fisher_u, g * k * og, err)) ||
            !(out->S = read_tensor(&m->calib, d->fisher_s, g * k, err)) ||
            !(out->D = read_tensor(&m->calib, d->fisher_d, g * og, err)) ||
            check_values(m, d->name, "fisher_u", out->U, g * k * og, 0, err) < 0 ||
            check_values(m, d->name, "fisher_s", out->S, g * k, 1, err) < 0 ||
            check_values(m, d->name, "fisher_d", out->D, g * og, 1, err) < 0)
            return -1;
        out->ofactor.U = out->U, out->ofactor.s = out->S, out->ofactor.d = out->D;
        if (d->fisher_n >= 0) {
            if (!(out->N = read_tensor(&m->calib, d->fisher_n, g * og, err)) ||
                check_values(m, d->name, "fisher_n", out->N, g * og, 0, err) < 0)
                return -1;
            for (int64_t j = 0; j < g; j++) {           /* a unit vector per group */
                double nn = 0.0;
                for (int64_t i = 0; i < og; i++)
                    nn += (double)out->N[j * og + i] * out->N[j * og + i];
                if (fabs(nn - 1.0) > 1e-4)
                    return bp_fail(err, "%s: tensor '%s.fisher_n': expected a unit vector per "
                                   "group, got squared norm %g", m->calib.path, d->name, nn);
            }
            out->ofactor.n = out->N;
        }
    }
    return 0;
}

int bp_model_load_layer(const bp_model *m, size_t i, bp_loaded_layer *out, bp_error *err)
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
        (d->grad2 >= 0 && !out->grad2) || load_fisher(m, d, out, err) < 0) {
        bp_loaded_layer_free(out);
        return -1;
    }
    out->view = (bp_layer){d->name, d->out, d->in, d->kh, d->kw, d->groups,
                           out->W, out->bias, d->input >= 0 ? d->n : 0, out->X, out->grad2,
                           d->fisher >= 0 || d->fisher_u >= 0 ? &out->ofactor : NULL, NULL};
    return 0;
}

void bp_loaded_layer_free(bp_loaded_layer *l)
{
    free(l->W);
    free(l->bias);
    free(l->X);
    free(l->grad2);
    free(l->F);
    free(l->U);
    free(l->S);
    free(l->D);
    free(l->N);
    memset(l, 0, sizeof *l);
}
