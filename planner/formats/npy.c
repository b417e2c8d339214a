/*
 * npy.c - validating reader of NumPy .npy files (versions 1.0, 2.0, 3.0).
 *
 * The header is a Python dict literal such as
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * with its keys in any order.  Only the three keys are accepted; the data
 * that follows must be exactly shape x dtype size bytes.
 */
#include "npy.h"

#include "../../common/bp_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct npy_parser {
    const char *p, *end;
    const char *label;
    bp_error *err;
} npy_parser;

static void npy_ws(npy_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n'))
        ps->p++;
}

static int npy_accept(npy_parser *ps, char c)
{
    npy_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return 1;
    }
    return 0;
}

static int npy_bad(npy_parser *ps, const char *what)
{
    return bp_fail(ps->err, "%s: .npy header: %s", ps->label, what);
}

/* A quoted Python string (no escapes needed for the keys and dtypes). */
static int npy_str(npy_parser *ps, char *out, size_t cap)
{
    npy_ws(ps);
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"'))
        return npy_bad(ps, "expected a quoted string");
    char q = *ps->p++;
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != q) {
        if (n + 1 >= cap)
            return npy_bad(ps, "string too long");
        out[n++] = *ps->p++;
    }
    if (ps->p >= ps->end)
        return npy_bad(ps, "unterminated string");
    ps->p++;
    out[n] = '\0';
    return 0;
}

static int npy_descr(npy_parser *ps, bp_npy *npy)
{
    char d[32];
    if (npy_str(ps, d, sizeof d) < 0)
        return -1;
    if (strcmp(d, "<f4") == 0)
        npy->dtype = BP_DT_F32;
    else if (strcmp(d, "<f2") == 0)
        npy->dtype = BP_DT_F16;
    else if (strcmp(d, "<f8") == 0)
        npy->dtype = BP_DT_F64;
    else if (strcmp(d, ">f4") == 0 || strcmp(d, ">f2") == 0 || strcmp(d, ">f8") == 0)
        return bp_fail(ps->err, "%s: dtype '%s' is big-endian (expected little-endian '<f4', "
                       "'<f2' or '<f8')", ps->label, d);
    else
        return bp_fail(ps->err, "%s: dtype '%s' is not supported (expected '<f4', '<f2' or "
                       "'<f8')", ps->label, d);
    return 0;
}

static int npy_bool(npy_parser *ps, int *out)
{
    npy_ws(ps);
    size_t left = (size_t)(ps->end - ps->p);
    if (left >= 5 && memcmp(ps->p, "False", 5) == 0)
        return ps->p += 5, *out = 0, 0;
    if (left >= 4 && memcmp(ps->p, "True", 4) == 0)
        return ps->p += 4, *out = 1, 0;
    return npy_bad(ps, "fortran_order: expected True or False");
}

static int npy_shape(npy_parser *ps, bp_npy *npy)
{
    npy->rank = 0;
    if (!npy_accept(ps, '('))
        return npy_bad(ps, "shape: expected a tuple");
    while (!npy_accept(ps, ')')) {
        npy_ws(ps);
        int64_t v = 0;
        const char *s = ps->p;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return npy_bad(ps, "shape: dimension too large");
            v = v * 10 + (*ps->p++ - '0');
        }
        if (ps->p == s)
            return npy_bad(ps, "shape: expected non-negative integers");
        if (npy->rank == BP_MAX_RANK)
            return npy_bad(ps, "shape: too many dimensions");
        npy->shape[npy->rank++] = v;
        if (!npy_accept(ps, ',')) {
            if (!npy_accept(ps, ')'))
                return npy_bad(ps, "shape: expected ',' or ')'");
            break;
        }
    }
    return 0;
}

static int npy_dict(npy_parser *ps, bp_npy *npy)
{
    int seen[3] = {0, 0, 0}, fortran = 0;
    if (!npy_accept(ps, '{'))
        return npy_bad(ps, "expected a dict");
    while (!npy_accept(ps, '}')) {
        char key[32];
        if (npy_str(ps, key, sizeof key) < 0)
            return -1;
        if (!npy_accept(ps, ':'))
            return npy_bad(ps, "expected ':'");
        int which = strcmp(key, "descr") == 0 ? 0 : strcmp(key, "fortran_order") == 0 ? 1
                  : strcmp(key, "shape") == 0 ? 2 : -1;
        if (which < 0)
            return bp_fail(ps->err, "%s: .npy header: unknown key '%s'", ps->label, key);
        if (seen[which]++)
            return bp_fail(ps->err, "%s: .npy header: key '%s' twice", ps->label, key);
        int rc = which == 0 ? npy_descr(ps, npy) : which == 1 ? npy_bool(ps, &fortran)
                                                               : npy_shape(ps, npy);
        if (rc < 0)
            return -1;
        if (!npy_accept(ps, ',')) {
            if (!npy_accept(ps, '}'))
                return npy_bad(ps, "expected ',' or '}'");
            break;
        }
    }
    if (!seen[0] || !seen[1] || !seen[2])
        return npy_bad(ps, "needs 'descr', 'fortran_order' and 'shape'");
    if (fortran)
        return bp_fail(ps->err, "%s: Fortran order not supported (save the array in C order)",
                       ps->label);
    npy_ws(ps);
    if (ps->p != ps->end)
        return npy_bad(ps, "trailing characters after the dict");
    return 0;
}

int bp_npy_parse(bp_npy *npy, const unsigned char *buf, size_t size, const char *label,
                 bp_error *err)
{
    memset(npy, 0, sizeof *npy);
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return bp_fail(err, "%s: not a .npy file (bad magic)", label);
    int major = buf[6];
    size_t hlen, start;
    if (major == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        start = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12)
            return bp_fail(err, "%s: truncated .npy header", label);
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 |
               (size_t)buf[11] << 24;
        start = 12;
    } else {
        return bp_fail(err, "%s: .npy format version %d is not supported (expected 1-3)",
                       label, major);
    }
    if (hlen > size - start)
        return bp_fail(err, "%s: .npy header length %zu runs past the end of the file", label,
                       hlen);
    npy_parser ps = {(const char *)buf + start, (const char *)buf + start + hlen, label, err};
    if (npy_dict(&ps, npy) < 0) {
        memset(npy, 0, sizeof *npy);
        return -1;
    }
    uint64_t bytes = bp_dtype_size(npy->dtype);
    for (int i = 0; i < npy->rank; i++) {
        uint64_t d = (uint64_t)npy->shape[i];
        if (d && bytes > UINT64_MAX / d) {
            memset(npy, 0, sizeof *npy);
            return bp_fail(err, "%s: shape is too large", label);
        }
        bytes *= d;
    }
    size_t have = size - start - hlen;
    if (bytes != have) {
        memset(npy, 0, sizeof *npy);
        return bp_fail(err, "%s: the shape needs %llu data bytes but the file has %zu",
                       label, (unsigned long long)bytes, have);
    }
    npy->map = buf;
    npy->size = size;
    npy->data_start = start + hlen;
    return 0;
}

int bp_npy_open(bp_npy *npy, const char *path, bp_error *err)
{
    const unsigned char *map;
    size_t size;
    memset(npy, 0, sizeof *npy);
    if (bp_map_file(path, 10, "a .npy file", &map, &size, err) < 0)
        return -1;
    char *copy = bp_strdup(path, err);
    if (!copy || bp_npy_parse(npy, map, size, path, err) < 0) {
        free(copy);
        bp_unmap_file(map, size);
        return -1;
    }
    npy->path = copy;
    return 0;
}

void bp_npy_close(bp_npy *npy)
{
    if (!npy)
        return;
    if (npy->path)
        bp_unmap_file(npy->map, npy->size);
    free(npy->path);
    memset(npy, 0, sizeof *npy);
}

int64_t bp_npy_numel(const bp_npy *npy)
{
    int64_t n = 1;
    for (int i = 0; i < npy->rank; i++)
        n *= npy->shape[i];
    return n;
}

int bp_npy_read_f32(const bp_npy *npy, float *out, bp_error *err)
{
    const char *label = npy->path ? npy->path : "npy";
    return bp_to_f32(npy->dtype, npy->map + npy->data_start, bp_npy_numel(npy), out, label,
                     "array", err);
}
