/*
 * validate.c - calibration statistics and Fishers checked before use
 * (validate.h).
 */
#include "validate.h"

#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYM_TOL 1e-7          /* asymmetry allowed, relative to sqrt(a_ii a_jj) */
#define CS_TOL 1e-6           /* Cauchy-Schwarz slack */
#define CS_TOL_SINGLE 1e-4    /* the same for sums of float32 products (512-row chunks) */
#define CHOL_MAX 2048         /* columns up to which PSD is proven by Cholesky */
#define MAG_MAX 1.099511627776e12   /* 2^40: the inputs' limit (model.c) */

static double rd64(const unsigned char *p, int64_t i)
{
    double v;
    memcpy(&v, p + 8 * i, 8);
    return v;
}

/* Does tensor idx hold n elements? */
static int numel_is(const bp_tensorset *ts, long idx, int64_t n)
{
    bp_tensor_ref t = bp_tensorset_get(ts, (size_t)idx);
    int64_t c = 1;
    for (int i = 0; i < t.rank; i++)
        c *= t.shape[i];
    return c == n;
}

/* The mapped bytes of F64 tensor idx of n elements in a safetensors file
 * (NULL when it is not that: model.c refuses such shapes and dtypes). */
static const unsigned char *f64_at(const bp_tensorset *ts, long idx, int64_t n)
{
    const bp_st_tensor *t = &ts->st.tensors[idx];
    return !ts->is_dir && t->dtype == BP_DT_F64 && numel_is(ts, idx, n)
               ? ts->st.map + ts->st.data_start + t->begin : NULL;
}

/* PSD of the symmetric d x d matrix a (row-major, copied): Cholesky of
 * a + delta I, delta what rounding leaves: 1e-10 of the mean diagonal for
 * sums kept in float64; for a matrix stored in float32 (eps = 2^-24 per
 * element, at most eps times the largest diagonal by Cauchy-Schwarz) the
 * spectral norm of that rounding, d eps max_ii a_ii, twice over -- a
 * singular PSD matrix (a Fisher of logits, rank below d) rounds to
 * eigenvalues that far below zero. */
static int chol_psd(const double *a, int64_t d, int single)
{
    double *c = malloc((size_t)(d * d) * sizeof *c), tr = 0.0, top = 0.0;
    if (!c)
        return 1;                    /* cannot check: the minors stand */
    for (int64_t i = 0; i < d; i++) {
        tr += a[i * d + i];
        top = fmax(top, a[i * d + i]);
    }
    double delta = 1e-10 * (tr > 0 ? tr / (double)d : 1.0) + 1e-300;
    if (single)
        delta = fmax(delta, 2.0 * (double)d * 0x1p-24 * top);
    memcpy(c, a, (size_t)(d * d) * sizeof *c);
    for (int64_t i = 0; i < d; i++)
        c[i * d + i] += delta;
    int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)d, c, (lapack_int)d);
    free(c);
    return info == 0;
}

/*
 * One Gram (d x d doubles, read through get) of a set: finite, symmetric,
 * non-negative diagonal, 2x2 minors within cs_tol, PSD up to CHOL_MAX columns
 * (with float32's rounding allowed when single).  what names the tensor in
 * messages.
 */
typedef double (*getter)(const void *src, int64_t i);
static double get64(const void *src, int64_t i) { return rd64(src, i); }
static double get32(const void *src, int64_t i) { return ((const float *)src)[i]; }

/* Do the off-diagonal pairs pass check_gram's tests?  Tile by tile, so that
 * (i, j) and (j, i) are both read from cache (row by row, a column stride of
 * d doubles misses on every element of a 7B layer's 11,008-wide sums), with
 * the diagonal dg read once.  Only whether: check_gram then finds the first
 * failure in row order for its message. */
static int pairs_ok(const void *src, getter get, const double *dg, int64_t d, double sym_tol,
                    double cs_tol)
{
    enum { T = 64 };
    for (int64_t i0 = 0; i0 < d; i0 += T)
        for (int64_t j0 = i0; j0 < d; j0 += T) {
            int64_t i1 = i0 + T < d ? i0 + T : d, j1 = j0 + T < d ? j0 + T : d;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0 > i + 1 ? j0 : i + 1; j < j1; j++) {
                    double a = get == get64 ? rd64(src, i * d + j) : get(src, i * d + j);
                    double b = get == get64 ? rd64(src, j * d + i) : get(src, j * d + i);
                    double s = sqrt(dg[i] * dg[j]);
                    if (!isfinite(a) || !isfinite(b) || fabs(a - b) > sym_tol * s + 1e-300 ||
                        a * a > s * s * (1.0 + cs_tol) + 1e-300)
                        return 0;
                }
        }
    return 1;
}

static int check_gram(const char *file, const char *what, const void *src, getter get,
                      int64_t d, double sym_tol, double cs_tol, int single, bp_error *err)
{
    double *dg = malloc((size_t)(d > 0 ? d : 1) * sizeof *dg);
    for (int64_t i = 0; i < d; i++) {
        double a = get(src, i * d + i);
        if (!isfinite(a) || a < 0.0) {
            free(dg);
            return bp_fail(err, "%s: tensor '%s': diagonal element %lld is %s (%g; a sum of "
                           "squares is finite and >= 0)", file, what, (long long)i,
                           isnan(a) ? "NaN" : isinf(a) ? "infinite" : "negative", a);
        }
        if (dg)
            dg[i] = a;
    }
    int fast = dg && pairs_ok(src, get, dg, d, sym_tol, cs_tol);
    free(dg);
    for (int64_t i = 0; !fast && i < d; i++)
        for (int64_t j = i + 1; j < d; j++) {
            double a = get(src, i * d + j), b = get(src, j * d + i);
            double s = sqrt(get(src, i * d + i) * get(src, j * d + j));
            if (!isfinite(a) || !isfinite(b)) {
                double v = isfinite(a) ? b : a;
                return bp_fail(err, "%s: tensor '%s': element (%lld, %lld) is %s (expected "
                               "finite values)", file, what, (long long)i, (long long)j,
                               isnan(v) ? "NaN" : "infinite");
            }
            if (fabs(a - b) > sym_tol * s + 1e-300)
                return bp_fail(err, "%s: tensor '%s' is not symmetric: (%lld, %lld) = %.9g but "
                               "(%lld, %lld) = %.9g", file, what, (long long)i, (long long)j, a,
                               (long long)j, (long long)i, b);
            if (a * a > s * s * (1.0 + cs_tol) + 1e-300)
                return bp_fail(err, "%s: tensor '%s' is not positive semi-definite: element "
                               "(%lld, %lld)^2 = %.9g exceeds the product of its diagonal "
                               "elements %.9g (Cauchy-Schwarz)", file, what, (long long)i,
                               (long long)j, a * a, s * s);
        }
    if (d > CHOL_MAX)
        return 0;
    double *a = malloc((size_t)(d * d) * sizeof *a);
    if (!a)
        return 0;
    for (int64_t i = 0; i < d * d; i++)
        a[i] = get(src, i);
    int ok = chol_psd(a, d, single);
    free(a);
    return ok ? 0 : bp_fail(err, "%s: tensor '%s' is not positive semi-definite (its Cholesky "
                            "factorisation fails: an eigenvalue is negative)", file, what);
}

/* A statistics set S: count, X^T X, sums and every grid. */
static int check_set(const bp_tensorset *ts, const char *S, long xtx, long count, long xsum,
                     int64_t g, int64_t d, bp_error *err)
{
    const char *file = ts->path;
    char what[1300];
    const unsigned char *A = f64_at(ts, xtx, g * d * d), *cp = f64_at(ts, count, 1);
    const unsigned char *sp = f64_at(ts, xsum, g * d);
    if (!A || !cp || !sp)
        return 0;                    /* shapes and dtypes are model.c's: nothing to read here */
    double n = rd64(cp, 0);
    /* sums of float32 products (capture.py --stats-precision single) carry
     * float32's rounding: its tolerances */
    const char *products = bp_tensorset_meta(ts, "products");
    int single = products && !strcmp(products, "float32");
    double cs_tol = single ? CS_TOL_SINGLE : CS_TOL;
    for (int64_t j = 0; j < g; j++) {
        snprintf(what, sizeof what, "%s.xtx%s", S, g > 1 ? " (a group)" : "");
        if (check_gram(file, what, A + 8 * j * d * d, get64, d, SYM_TOL, cs_tol, single, err) < 0)
            return -1;
        for (int64_t c = 0; c < d; c++) {
            double s = rd64(sp, j * d + c), a = rd64(A, j * d * d + c * d + c);
            if (!isfinite(s))
                return bp_fail(err, "%s: tensor '%s.xsum': element %lld is not finite", file, S,
                               (long long)(j * d + c));
            if (s * s > n * a * (1.0 + cs_tol) + 1e-300)
                return bp_fail(err, "%s: tensor '%s.count' = %.17g is too small for the sums of "
                               "column %lld: xsum^2 = %.9g > count * xtx = %.9g (a mean's square "
                               "cannot exceed the mean square)", file, S, n, (long long)c, s * s,
                               n * a);
            if (fabs(s) / n > MAG_MAX || sqrt(a / n) > MAG_MAX)
                return bp_fail(err, "%s: statistics '%s': column %lld's mean %g or root mean "
                               "square %g is beyond 2^40, where bitplan refuses inputs", file, S,
                               (long long)c, s / n, sqrt(a / n));
        }
    }
    for (size_t k = 0;; k++) {       /* grid<k>: qtq a Gram, qsum within count, qtx within both */
        char key[1200];
        snprintf(key, sizeof key, "%.1100s.grid%zu", S, k);
        if (!bp_tensorset_meta(ts, key))
            break;
        long q = bp_tensorset_find(ts, (snprintf(what, sizeof what, "%s.qtq", key), what));
        long x = bp_tensorset_find(ts, (snprintf(what, sizeof what, "%s.qtx", key), what));
        long qs = bp_tensorset_find(ts, (snprintf(what, sizeof what, "%s.qsum", key), what));
        const unsigned char *Q = q >= 0 ? f64_at(ts, q, g * d * d) : NULL;
        const unsigned char *X = x >= 0 ? f64_at(ts, x, g * d * d) : NULL;
        const unsigned char *QS = qs >= 0 ? f64_at(ts, qs, g * d) : NULL;
        if (!Q || !X || !QS)
            continue;
        double *xd = malloc((size_t)(d > 0 ? d : 1) * sizeof *xd);   /* xtx's diagonal */
        if (!xd)
            return bp_fail(err, "out of memory checking '%s'", file);
        for (int64_t j = 0; j < g; j++) {
            snprintf(what, sizeof what, "%s.qtq", key);
            if (check_gram(file, what, Q + 8 * j * d * d, get64, d, SYM_TOL, cs_tol, single, err) < 0) {
                free(xd);
                return -1;
            }
            for (int64_t c = 0; c < d; c++)
                xd[c] = rd64(A, j * d * d + c * d + c);
            for (int64_t r = 0; r < d; r++) {
                double s = rd64(QS, j * d + r), qq = rd64(Q, j * d * d + r * d + r);
                if (!isfinite(s) || s * s > n * qq * (1.0 + cs_tol) + 1e-300) {
                    free(xd);
                    return bp_fail(err, "%s: tensor '%s.qsum': element %lld (%g) does not fit "
                                   "count %.17g and qtq's diagonal %g", file, key,
                                   (long long)(j * d + r), s, n, qq);
                }
                for (int64_t c = 0; c < d; c++) {
                    double v = rd64(X, j * d * d + r * d + c);
                    double xx = xd[c];
                    if (!isfinite(v) || v * v > qq * xx * (1.0 + cs_tol) + 1e-300) {
                        free(xd);
                        return bp_fail(err, "%s: tensor '%s.qtx': element (%lld, %lld) = %g "
                                       "exceeds what qtq's and xtx's diagonals allow "
                                       "(Cauchy-Schwarz)", file, key, (long long)r,
                                       (long long)c, v);
                    }
                }
            }
        }
        free(xd);
    }
    return 0;
}

/* An output factor: dense (g x og x og) or low rank (U g x k x og, s, d). */
static int check_factor(const bp_tensorset *ts, const char *name, const char *kind, long dense,
                        long u, long s, long dd, int64_t g, int64_t og, int64_t k,
                        bp_error *err)
{
    const char *file = ts->path;
    char what[1200];
    if (dense >= 0 && !numel_is(ts, dense, g * og * og))
        return 0;                    /* shapes are model.c's to refuse */
    if (u >= 0 && (!numel_is(ts, u, g * k * og) || s < 0 || dd < 0 || !numel_is(ts, s, g * k) ||
                   !numel_is(ts, dd, g * og)))
        return 0;
    if (dense >= 0) {
        float *F = malloc((size_t)(g * og * og) * sizeof *F);
        int rc = F ? bp_tensorset_read_f32(ts, (size_t)dense, F, err) : -1;
        snprintf(what, sizeof what, "%s.%s", name, kind);
        for (int64_t j = 0; rc == 0 && j < g; j++)
            rc = check_gram(file, what, F + j * og * og, get32, og, 1e-5, CS_TOL, 1, err);
        free(F);
        return rc;
    }
    if (u < 0)
        return 0;
    if (k > og)
        return bp_fail(err, "%s: tensor '%s.%s_u' holds %lld vectors for %lld outputs (at most "
                       "as many as outputs)", file, name, kind, (long long)k, (long long)og);
    float *U = malloc((size_t)(g * k * og) * sizeof *U), *S = malloc((size_t)(g * k) * sizeof *S);
    float *D = malloc((size_t)(g * og) * sizeof *D);
    int rc = U && S && D && bp_tensorset_read_f32(ts, (size_t)u, U, err) == 0 &&
             bp_tensorset_read_f32(ts, (size_t)s, S, err) == 0 &&
             bp_tensorset_read_f32(ts, (size_t)dd, D, err) == 0 ? 0 : -1;
    for (int64_t i = 0; rc == 0 && i < g * k; i++)
        if (!(S[i] >= 0.0f) || !isfinite(S[i]))
            rc = bp_fail(err, "%s: tensor '%s.%s_s': eigenvalue %lld is %g (expected >= 0)", file,
                         name, kind, (long long)i, (double)S[i]);
    for (int64_t i = 0; rc == 0 && i < g * og; i++)
        if (!(D[i] >= 0.0f) || !isfinite(D[i]))
            rc = bp_fail(err, "%s: tensor '%s.%s_d': element %lld is %g (expected >= 0)", file,
                         name, kind, (long long)i, (double)D[i]);
    for (int64_t j = 0; rc == 0 && j < g; j++)      /* rows orthonormal: U U^T = I */
        for (int64_t a = 0; rc == 0 && a < k; a++)
            for (int64_t b = a; rc == 0 && b < k; b++) {
                double dot = 0.0;
                const float *ua = U + (j * k + a) * og, *ub = U + (j * k + b) * og;
                for (int64_t i = 0; i < og; i++)
                    dot += (double)ua[i] * ub[i];
                if (!isfinite(dot) || fabs(dot - (a == b)) > 1e-3)
                    rc = bp_fail(err, "%s: tensor '%s.%s_u': rows %lld and %lld have dot product "
                                 "%g (the eigenvectors must be orthonormal)", file, name, kind,
                                 (long long)a, (long long)b, dot);
            }
    free(U), free(S), free(D);
    return rc;
}

static int check_grad2(const bp_tensorset *ts, long idx, int64_t n, bp_error *err)
{
    if (!numel_is(ts, idx, n))
        return 0;
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    int rc = v ? bp_tensorset_read_f32(ts, (size_t)idx, v, err) : -1;
    for (int64_t i = 0; rc == 0 && i < n; i++)
        if (!isfinite(v[i]) || v[i] < 0.0f)
            rc = bp_fail(err, "%s: tensor '%s': element %lld is %g (squared gradients are finite "
                         "and >= 0)", ts->path, bp_tensorset_get(ts, (size_t)idx).name,
                         (long long)i, (double)v[i]);
    free(v);
    return rc;
}

int bp_validate_calibration(const bp_model *m, bp_error *err)
{
    if (!m->has_calib)
        return 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const bp_layer_desc *d = &m->layers[i];
        int seen = 0;
        for (size_t p = 0; d->stats && p < i && !seen; p++)
            seen = m->layers[p].stats && !strcmp(m->layers[p].stats, d->stats);
        if (d->stats && !seen && !m->calib.is_dir &&
            check_set(&m->calib, d->stats, d->st_xtx, d->st_count, d->st_xsum, d->groups, d->in,
                      err) < 0)
            return -1;
        int64_t og = d->out / d->groups;
        for (int f = 0; f < BP_FACTORS; f++) {
            const bp_factor_desc *fd = &d->factor[f];
            if (check_factor(&m->calib, d->name, bp_factor_kind[f], fd->dense, fd->u, fd->s, fd->d,
                             d->groups, og, fd->rank, err) < 0)
                return -1;
        }
        if (d->grad2 >= 0 && check_grad2(&m->calib, d->grad2, d->n_grad2, err) < 0)
            return -1;
    }
    return 0;
}

/* The tensor S.suffix, or -1. */
static long find2(const bp_tensorset *ts, const char *stem, const char *suffix)
{
    char key[1200];
    snprintf(key, sizeof key, "%s.%s", stem, suffix);
    return bp_tensorset_find(ts, key);
}

int bp_validate_calibration_file(const bp_tensorset *ts, size_t *checked, bp_error *err)
{
    size_t n = bp_tensorset_count(ts);
    *checked = 0;
    for (size_t i = 0; i < n; i++) {
        bp_tensor_ref t = bp_tensorset_get(ts, i);
        const char *dot = strrchr(t.name, '.');
        if (!dot)
            continue;
        char stem[1100];
        snprintf(stem, sizeof stem, "%.*s", (int)(dot - t.name), t.name);
        int rc = 0;
        if (!strcmp(dot, ".xtx") && !ts->is_dir && (t.rank == 2 || t.rank == 3)) {
            int64_t g = t.rank == 3 ? t.shape[0] : 1, d = t.shape[t.rank - 1];
            long c = find2(ts, stem, "count"), s = find2(ts, stem, "xsum");
            if (c >= 0 && s >= 0)
                rc = check_set(ts, stem, (long)i, c, s, g, d, err), ++*checked;
        } else if (!strcmp(dot, ".grad2")) {
            rc = check_grad2(ts, (long)i, t.rank == 1 ? t.shape[0] : 0, err), ++*checked;
        } else if ((!strcmp(dot, ".fisher") || !strcmp(dot, ".margin")) && t.rank >= 2) {
            int64_t og = t.shape[t.rank - 1], g = t.rank == 3 ? t.shape[0] : 1;
            rc = check_factor(ts, stem, dot + 1, (long)i, -1, -1, -1, g, og, 0, err), ++*checked;
        } else if ((!strcmp(dot, ".fisher_u") || !strcmp(dot, ".margin_u")) && t.rank >= 2) {
            char kind[8];
            snprintf(kind, sizeof kind, "%.*s", (int)(strlen(dot + 1) - 2), dot + 1);
            char ss[16], dd[16];
            snprintf(ss, sizeof ss, "%s_s", kind);
            snprintf(dd, sizeof dd, "%s_d", kind);
            long s = find2(ts, stem, ss), d = find2(ts, stem, dd);
            int64_t og = t.shape[t.rank - 1], k = t.shape[t.rank - 2];
            int64_t g = t.rank == 3 ? t.shape[0] : 1;
            if (s >= 0 && d >= 0)
                rc = check_factor(ts, stem, kind, -1, (long)i, s, d, g, og, k, err), ++*checked;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}
