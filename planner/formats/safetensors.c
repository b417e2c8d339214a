/*
 * safetensors.c - validating reader and atomic writer of safetensors files.
 *
 * The header is parsed by a small strict JSON reader that knows the schema:
 * a top-level object whose members are tensors ({"dtype", "shape",
 * "data_offsets"}, each exactly once) or "__metadata__" (string -> string).
 * Nothing in the data buffer is touched until every tensor's span has been
 * checked against the file.
 *
 * Ownership: bp_st_open maps the file and sets st->path; bp_st_close unmaps
 * only then.  bp_st_parse borrows the caller's buffer and leaves path NULL.
 */
#include "safetensors.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"

static const struct {
    const char *name;
    size_t size;
} st_dtypes[BP_DT_COUNT] = {
    [BP_DT_BOOL] = {"BOOL", 1},     [BP_DT_U8] = {"U8", 1},
    [BP_DT_I8] = {"I8", 1},         [BP_DT_F8_E5M2] = {"F8_E5M2", 1},
    [BP_DT_F8_E4M3] = {"F8_E4M3", 1}, [BP_DT_I16] = {"I16", 2},
    [BP_DT_U16] = {"U16", 2},       [BP_DT_F16] = {"F16", 2},
    [BP_DT_BF16] = {"BF16", 2},     [BP_DT_I32] = {"I32", 4},
    [BP_DT_U32] = {"U32", 4},       [BP_DT_F32] = {"F32", 4},
    [BP_DT_I64] = {"I64", 8},       [BP_DT_U64] = {"U64", 8},
    [BP_DT_F64] = {"F64", 8},
};

const char *bp_dtype_name(bp_dtype dt)
{
    return (unsigned)dt < BP_DT_COUNT ? st_dtypes[dt].name : "?";
}

size_t bp_dtype_size(bp_dtype dt)
{
    return (unsigned)dt < BP_DT_COUNT ? st_dtypes[dt].size : 0;
}

/* ---- the header parser --------------------------------------------------- */

typedef struct st_parser {
    const char *p, *end, *start;
    const char *label;
    bp_error *err;
} st_parser;

static int st_fail_at(st_parser *ps, const char *what)
{
    return bp_fail(ps->err, "%s: header byte %ld: %s", ps->label, (long)(ps->p - ps->start),
                   what);
}

static void st_ws(st_parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int st_expect(st_parser *ps, char c)
{
    st_ws(ps);
    if (ps->p >= ps->end || *ps->p != c) {
        char msg[64];
        snprintf(msg, sizeof msg, "expected '%c' in the JSON header", c);
        return st_fail_at(ps, msg);
    }
    ps->p++;
    return 0;
}

/* Next non-space character is c (consumed)? */
static int st_accept(st_parser *ps, char c)
{
    st_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return 1;
    }
    return 0;
}

static int st_hex4(st_parser *ps, unsigned *out)
{
    unsigned v = 0;
    if (ps->end - ps->p < 4)
        return st_fail_at(ps, "truncated \\u escape");
    for (int i = 0; i < 4; i++) {
        char c = *ps->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return st_fail_at(ps, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

static size_t st_utf8(unsigned cp, char *o)
{
    if (cp < 0x80)
        return o[0] = (char)cp, 1;
    if (cp < 0x800)
        return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 63)),
               o[2] = (char)(0x80 | (cp & 63)), 3;
    o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63)), o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

static int st_escape(st_parser *ps, char *o, size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (ps->p >= ps->end)
        return st_fail_at(ps, "unterminated string");
    char c = *ps->p++;
    const char *k = c ? strchr(from, c) : NULL;
    if (k) {
        o[(*n)++] = to[k - from];
        return 0;
    }
    if (c != 'u')
        return st_fail_at(ps, "bad escape in string");
    unsigned cp, lo;
    if (st_hex4(ps, &cp) < 0)
        return -1;
    if (cp >= 0xdc00 && cp < 0xe000)
        return st_fail_at(ps, "unpaired low surrogate in string");
    if (cp >= 0xd800 && cp < 0xdc00) {
        if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
            return st_fail_at(ps, "unpaired high surrogate in string");
        ps->p += 2;
        if (st_hex4(ps, &lo) < 0)
            return -1;
        if (lo < 0xdc00 || lo >= 0xe000)
            return st_fail_at(ps, "bad low surrogate in string");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (cp == 0)
        return st_fail_at(ps, "NUL character in string");
    *n += st_utf8(cp, o + *n);
    return 0;
}

/* A JSON string, unescaped into a new NUL-terminated buffer. */
static int st_string(st_parser *ps, char **out)
{
    *out = NULL;
    if (st_expect(ps, '"') < 0)
        return -1;
    const char *q = ps->p;
    while (q < ps->end && *q != '"')
        q += *q == '\\' && q + 1 < ps->end ? 2 : 1;
    if (q >= ps->end)
        return st_fail_at(ps, "unterminated string");
    char *o = bp_malloc((size_t)(q - ps->p) + 1, ps->err);
    size_t n = 0;
    if (!o)
        return -1;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) {
            free(o);
            return st_fail_at(ps, "control character in string");
        }
        if (c != '\\')
            o[n++] = (char)c;
        else if (st_escape(ps, o, &n) < 0) {
            free(o);
            return -1;
        }
    }
    ps->p++;
    o[n] = '\0';
    *out = o;
    return 0;
}

/* A non-negative JSON integer (no sign, fraction or exponent). */
static int st_uint(st_parser *ps, const char *what, uint64_t *out)
{
    char msg[160];
    st_ws(ps);
    const char *s = ps->p;
    uint64_t v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        unsigned d = (unsigned)(*ps->p++ - '0');
        if (v > (UINT64_MAX - d) / 10) {
            snprintf(msg, sizeof msg, "%s: integer too large", what);
            return st_fail_at(ps, msg);
        }
        v = v * 10 + d;
    }
    int bad = ps->p == s || (ps->p - s > 1 && *s == '0') ||
              (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'));
    if (bad) {
        snprintf(msg, sizeof msg, "%s: expected a non-negative integer", what);
        return st_fail_at(ps, msg);
    }
    *out = v;
    return 0;
}

/* ---- schema -------------------------------------------------------------- */

static int st_dtype_parse(const char *s, bp_dtype *out)
{
    for (int i = 0; i < BP_DT_COUNT; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (bp_dtype)i;
            return 0;
        }
    return -1;
}

static int st_shape(st_parser *ps, bp_st_tensor *t)
{
    t->rank = 0;
    if (st_expect(ps, '[') < 0)
        return -1;
    if (st_accept(ps, ']'))
        return 0;
    do {
        uint64_t d;
        if (t->rank == BP_MAX_RANK)
            return bp_fail(ps->err, "%s: tensor '%s': rank above %d", ps->label, t->name,
                           BP_MAX_RANK);
        if (st_uint(ps, "shape", &d) < 0)
            return -1;
        if (d > (uint64_t)INT64_MAX)
            return st_fail_at(ps, "shape: dimension too large");
        t->shape[t->rank++] = (int64_t)d;
    } while (st_accept(ps, ','));
    return st_expect(ps, ']');
}

static int st_offsets(st_parser *ps, bp_st_tensor *t)
{
    if (st_expect(ps, '[') < 0 || st_uint(ps, "data_offsets", &t->begin) < 0 ||
        st_expect(ps, ',') < 0 || st_uint(ps, "data_offsets", &t->end) < 0)
        return -1;
    if (!st_accept(ps, ']'))
        return bp_fail(ps->err, "%s: tensor '%s': data_offsets must be [begin, end]",
                       ps->label, t->name);
    return 0;
}

/* One member of a tensor object, by key. */
static int st_tensor_member(st_parser *ps, bp_st_tensor *t, const char *key, int *seen)
{
    int which = strcmp(key, "dtype") == 0 ? 0 : strcmp(key, "shape") == 0 ? 1
              : strcmp(key, "data_offsets") == 0 ? 2 : -1;
    if (which < 0)
        return bp_fail(ps->err, "%s: tensor '%s': unknown key '%s' (expected dtype, shape, "
                       "data_offsets)", ps->label, t->name, key);
    if (seen[which]++)
        return bp_fail(ps->err, "%s: tensor '%s': key '%s' given twice", ps->label, t->name,
                       key);
    if (which == 1)
        return st_shape(ps, t);
    if (which == 2)
        return st_offsets(ps, t);
    char *dt;
    if (st_string(ps, &dt) < 0)
        return -1;
    int rc = st_dtype_parse(dt, &t->dtype);
    if (rc < 0)
        bp_fail(ps->err, "%s: tensor '%s': unknown dtype '%s'", ps->label, t->name, dt);
    free(dt);
    return rc;
}

static int st_tensor(st_parser *ps, bp_st_tensor *t)
{
    int seen[3] = {0, 0, 0};
    static const char *const names[3] = {"dtype", "shape", "data_offsets"};
    if (st_expect(ps, '{') < 0)
        return -1;
    if (!st_accept(ps, '}')) {
        do {
            char *key;
            if (st_string(ps, &key) < 0)
                return -1;
            int rc = st_expect(ps, ':');
            if (rc == 0)
                rc = st_tensor_member(ps, t, key, seen);
            free(key);
            if (rc < 0)
                return -1;
        } while (st_accept(ps, ','));
        if (st_expect(ps, '}') < 0)
            return -1;
    }
    for (int i = 0; i < 3; i++)
        if (!seen[i])
            return bp_fail(ps->err, "%s: tensor '%s': missing key '%s'", ps->label, t->name,
                           names[i]);
    return 0;
}

static int st_metadata(st_parser *ps, bp_safetensors *st)
{
    if (st->meta)
        return bp_fail(ps->err, "%s: __metadata__ given twice", ps->label);
    st->meta = bp_calloc(1, sizeof *st->meta, ps->err);
    if (!st->meta || st_expect(ps, '{') < 0)
        return -1;
    if (st_accept(ps, '}'))
        return 0;
    size_t cap = 1;
    do {
        if (st->n_meta == cap) {
            bp_st_meta *m = realloc(st->meta, 2 * cap * sizeof *m);
            if (!m)
                return bp_fail(ps->err, "%s: out of memory", ps->label);
            st->meta = m, cap *= 2;
        }
        bp_st_meta *m = &st->meta[st->n_meta];
        m->key = m->value = NULL;
        if (st_string(ps, &m->key) < 0)
            return -1;
        st->n_meta++;
        st_ws(ps);
        if (st_expect(ps, ':') < 0)
            return -1;
        st_ws(ps);
        if (ps->p < ps->end && *ps->p != '"')
            return bp_fail(ps->err, "%s: __metadata__ '%s': expected a string value",
                           ps->label, m->key);
        if (st_string(ps, &m->value) < 0)
            return -1;
    } while (st_accept(ps, ','));
    return st_expect(ps, '}');
}

static int st_add_tensor(st_parser *ps, bp_safetensors *st, size_t *cap, char *name)
{
    if (st->n_tensors == *cap) {
        size_t ncap = *cap ? 2 * *cap : 16;
        bp_st_tensor *t = realloc(st->tensors, ncap * sizeof *t);
        if (!t) {
            free(name);
            return bp_fail(ps->err, "%s: out of memory", ps->label);
        }
        st->tensors = t, *cap = ncap;
    }
    bp_st_tensor *t = &st->tensors[st->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    return st_tensor(ps, t);
}

static int st_header(st_parser *ps, bp_safetensors *st)
{
    size_t cap = 0;
    if (st_expect(ps, '{') < 0)
        return -1;
    if (!st_accept(ps, '}')) {
        do {
            char *key;
            if (st_string(ps, &key) < 0 || st_expect(ps, ':') < 0) {
                free(key);
                return -1;
            }
            int rc;
            if (strcmp(key, "__metadata__") == 0) {
                free(key);
                rc = st_metadata(ps, st);
            } else {
                rc = st_add_tensor(ps, st, &cap, key);
            }
            if (rc < 0)
                return -1;
        } while (st_accept(ps, ','));
        if (st_expect(ps, '}') < 0)
            return -1;
    }
    st_ws(ps);
    if (ps->p != ps->end)
        return st_fail_at(ps, "trailing characters after the JSON header");
    return 0;
}

/* ---- validation of the parsed tensors ------------------------------------ */

static int st_cmp_name(const void *a, const void *b)
{
    return strcmp((*(const bp_st_tensor *const *)a)->name,
                  (*(const bp_st_tensor *const *)b)->name);
}

static int st_cmp_begin(const void *a, const void *b)
{
    const bp_st_tensor *s = a, *t = b;
    if (s->begin != t->begin)
        return s->begin < t->begin ? -1 : 1;
    if (s->end != t->end)
        return s->end < t->end ? -1 : 1;
    return strcmp(s->name, t->name);
}

static void st_shape_str(const bp_st_tensor *t, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

static int st_check_span(const bp_safetensors *st, const bp_st_tensor *t, const char *label,
                         bp_error *err)
{
    char shape[160];
    uint64_t bytes = bp_dtype_size(t->dtype);
    for (int i = 0; i < t->rank; i++) {
        uint64_t d = (uint64_t)t->shape[i];
        if (d && bytes > UINT64_MAX / d) {
            st_shape_str(t, shape, sizeof shape);
            return bp_fail(err, "%s: tensor '%s': shape %s is too large", label, t->name,
                           shape);
        }
        bytes *= d;
    }
    if (t->begin > t->end)
        return bp_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] run backwards", label,
                       t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end - t->begin != bytes) {
        st_shape_str(t, shape, sizeof shape);
        return bp_fail(err, "%s: tensor '%s': shape %s x %s needs %llu bytes but data_offsets "
                       "span %llu", label, t->name, shape, bp_dtype_name(t->dtype),
                       (unsigned long long)bytes, (unsigned long long)(t->end - t->begin));
    }
    if (t->end > st->size - st->data_start)
        return bp_fail(err, "%s: tensor '%s': data_offsets end %llu is beyond the %llu-byte "
                       "data buffer (file truncated?)", label, t->name,
                       (unsigned long long)t->end,
                       (unsigned long long)(st->size - st->data_start));
    return 0;
}

static int st_validate(bp_safetensors *st, const char *label, bp_error *err)
{
    size_t n = st->n_tensors;
    for (size_t i = 0; i < n; i++)
        if (st_check_span(st, &st->tensors[i], label, err) < 0)
            return -1;
    const bp_st_tensor **byname = bp_calloc(n ? n : 1, sizeof *byname, err);
    if (!byname)
        return -1;
    for (size_t i = 0; i < n; i++)
        byname[i] = &st->tensors[i];
    if (n > 1)
        qsort(byname, n, sizeof *byname, st_cmp_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) {
            bp_fail(err, "%s: tensor '%s' appears twice in the header", label, byname[i]->name);
            free(byname);
            return -1;
        }
    free(byname);
    if (n > 1)                       /* (tensors is NULL when there are none) */
        qsort(st->tensors, n, sizeof *st->tensors, st_cmp_begin);
    const bp_st_tensor *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const bp_st_tensor *t = &st->tensors[i];
        if (t->begin == t->end)
            continue;
        if (prev && t->begin < prev->end)
            return bp_fail(err, "%s: tensors '%s' and '%s' overlap in the data buffer", label,
                           prev->name, t->name);
        prev = t;
    }
    return 0;
}

/* ---- open / parse / close ------------------------------------------------ */

static void st_free(bp_safetensors *st)
{
    for (size_t i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->tensors);
    free(st->meta);
    free(st->path);
    memset(st, 0, sizeof *st);
}

int bp_st_parse(bp_safetensors *st, const unsigned char *buf, size_t size, const char *label,
                bp_error *err)
{
    memset(st, 0, sizeof *st);
    if (size < 8)
        return bp_fail(err, "%s: %zu bytes is too short for a safetensors file (expected an "
                       "8-byte header length)", label, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | buf[i];
    if (n == 0 || n > size - 8)
        return bp_fail(err, "%s: header length %llu does not fit in the %zu-byte file "
                       "(not a safetensors file, or truncated)", label,
                       (unsigned long long)n, size);
    st->map = buf;
    st->size = size;
    st->data_start = 8 + (size_t)n;
    st_parser ps = {(const char *)buf + 8, (const char *)buf + 8 + n, (const char *)buf + 8,
                    label, err};
    st_ws(&ps);
    if (ps.p == ps.end || *ps.p != '{') {
        memset(st, 0, sizeof *st);
        return bp_fail(err, "%s: the header is not a JSON object (not a safetensors file?)",
                       label);
    }
    if (st_header(&ps, st) < 0 || st_validate(st, label, err) < 0) {
        st_free(st);
        return -1;
    }
    return 0;
}

int bp_st_open(bp_safetensors *st, const char *path, bp_error *err)
{
    const unsigned char *map;
    size_t size;
    memset(st, 0, sizeof *st);
    if (bp_map_file(path, 8, "a safetensors file", &map, &size, err) < 0)
        return -1;
    char *copy = bp_strdup(path, err);
    if (!copy || bp_st_parse(st, map, size, path, err) < 0) {
        free(copy);
        bp_unmap_file(map, size);
        return -1;
    }
    st->path = copy;
    return 0;
}

void bp_st_close(bp_safetensors *st)
{
    if (!st)
        return;
    if (st->path)
        bp_unmap_file(st->map, st->size);
    st_free(st);
}

const bp_st_tensor *bp_st_find(const bp_safetensors *st, const char *name)
{
    for (size_t i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return &st->tensors[i];
    return NULL;
}

const char *bp_st_meta_get(const bp_safetensors *st, const char *key)
{
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0)
            return st->meta[i].value;
    return NULL;
}

int64_t bp_st_numel(const bp_st_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->shape[i];
    return n;
}

/* ---- reading values ------------------------------------------------------ */

/* Is every one of x[0..n) finite?  (Comparisons only: vectorises.) */
static int all_finite(const float *x, int64_t n)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad |= !(fabsf(x[i]) <= FLT_MAX);
    return !bad;
}

int bp_to_f32(bp_dtype dt, const unsigned char *src, int64_t n, float *out,
              const char *label, const char *name, bp_error *err)
{
    if (dt != BP_DT_F32 && dt != BP_DT_F16 && dt != BP_DT_BF16 && dt != BP_DT_F64)
        return bp_fail(err, "%s: tensor '%s': dtype %s is not a float type (expected F32, "
                       "F16, BF16 or F64)", label, name, bp_dtype_name(dt));
    if (dt == BP_DT_F32)
        memcpy(out, src, (size_t)n * 4);
    for (int64_t i = 0; dt == BP_DT_F64 && i < n; i++) {   /* NumPy's default: read as float32 */
        double d;
        memcpy(&d, src + 8 * i, 8);
        if (isfinite(d) && fabs(d) > FLT_MAX)
            return bp_fail(err, "%s: tensor '%s': element %lld is %g, beyond float32's range "
                           "(bitplan computes in float32)", label, name, (long long)i, d);
        out[i] = (float)d;
    }
    for (int64_t i = 0; (dt == BP_DT_F16 || dt == BP_DT_BF16) && i < n; i++) {
        uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        out[i] = dt == BP_DT_F16 ? bp_f16_to_f32(h) : bp_bf16_to_f32(h);
    }
    int finite = all_finite(out, n);
    for (int64_t i = 0; !finite && i < n; i++)
        if (!isfinite(out[i]))
            return bp_fail(err, "%s: tensor '%s': element %lld is %s (expected finite values)",
                           label, name, (long long)i, isnan(out[i]) ? "NaN" : "infinite");
    return 0;
}

int bp_st_read_f32(const bp_safetensors *st, const bp_st_tensor *t, float *out,
                   bp_error *err)
{
    const unsigned char *src = st->map + st->data_start + t->begin;
    int rc = bp_to_f32(t->dtype, src, bp_st_numel(t), out, st->path ? st->path : "safetensors",
                       t->name, err);
    if (t->end - t->begin >= ((uint64_t)1 << 22))   /* a large tensor: converted, let it go */
        bp_map_release(src, (size_t)(t->end - t->begin));
    return rc;
}

int bp_st_read_f64(const bp_safetensors *st, const bp_st_tensor *t, double *out,
                   bp_error *err)
{
    const unsigned char *src = st->map + st->data_start + t->begin;
    const char *label = st->path ? st->path : "safetensors";
    int64_t n = bp_st_numel(t);
    if (t->dtype != BP_DT_F64) {
        float *f = bp_malloc((size_t)(n ? n : 1) * sizeof *f, err);
        int rc = f ? bp_st_read_f32(st, t, f, err) : -1;
        for (int64_t i = 0; rc == 0 && i < n; i++)
            out[i] = f[i];
        free(f);
        return rc;
    }
    memcpy(out, src, (size_t)n * sizeof *out);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(out[i]))
            return bp_fail(err, "%s: tensor '%s': element %lld is %s (expected finite values)",
                           label, t->name, (long long)i, isnan(out[i]) ? "NaN" : "infinite");
    return 0;
}

/* ---- writing ------------------------------------------------------------- */

/* The header JSON (unpadded) into a memory stream. */
static char *st_header_json(const bp_st_entry *e, size_t n, const bp_st_meta *meta,
                            size_t n_meta, size_t *len)
{
    char *buf = NULL;
    FILE *fp = open_memstream(&buf, len);
    if (!fp)
        return NULL;
    uint64_t off = 0;
    fputc('{', fp);
    if (n_meta) {
        fputs("\"__metadata__\":{", fp);
        for (size_t i = 0; i < n_meta; i++) {
            if (i)
                fputc(',', fp);
            bp_json_string(fp, meta[i].key);
            fputc(':', fp);
            bp_json_string(fp, meta[i].value);
        }
        fputc('}', fp);
    }
    for (size_t i = 0; i < n; i++) {
        if (i || n_meta)
            fputc(',', fp);
        bp_json_string(fp, e[i].name);
        fprintf(fp, ":{\"dtype\":\"%s\",\"shape\":[", bp_dtype_name(e[i].dtype));
        for (int d = 0; d < e[i].rank; d++)
            fprintf(fp, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
        fprintf(fp, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                (unsigned long long)(off + e[i].nbytes));
        off += e[i].nbytes;
    }
    fputc('}', fp);
    if (fclose(fp) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int st_check_entries(const char *path, const bp_st_entry *e, size_t n, bp_error *err)
{
    for (size_t i = 0; i < n; i++) {
        bp_st_tensor t = {(char *)e[i].name, e[i].dtype, e[i].rank, {0}, 0, e[i].nbytes};
        if ((unsigned)e[i].dtype >= BP_DT_COUNT || e[i].rank < 0 || e[i].rank > BP_MAX_RANK)
            return bp_fail(err, "%s: tensor '%s': bad dtype or rank", path, e[i].name);
        memcpy(t.shape, e[i].shape, sizeof t.shape);
        uint64_t bytes = bp_dtype_size(e[i].dtype);
        for (int d = 0; d < e[i].rank; d++) {
            if (e[i].shape[d] < 0)
                return bp_fail(err, "%s: tensor '%s': negative dimension", path, e[i].name);
            bytes *= (uint64_t)e[i].shape[d];
        }
        if (bytes != e[i].nbytes)
            return bp_fail(err, "%s: tensor '%s': %zu bytes given, shape needs %llu", path,
                           e[i].name, e[i].nbytes, (unsigned long long)bytes);
        for (size_t j = 0; j < i; j++)
            if (strcmp(e[j].name, e[i].name) == 0)
                return bp_fail(err, "%s: tensor '%s' given twice", path, e[i].name);
    }
    return 0;
}

int bp_st_write(const char *path, const bp_st_entry *entries, size_t n,
                const bp_st_meta *meta, size_t n_meta, bp_error *err)
{
    if (st_check_entries(path, entries, n, err) < 0)
        return -1;
    size_t len = 0;
    char *json = st_header_json(entries, n, meta, meta ? n_meta : 0, &len);
    if (!json)
        return bp_fail(err, "%s: out of memory writing the header", path);
    size_t padded = (len + 7) / 8 * 8;
    unsigned char head[8];
    for (int i = 0; i < 8; i++)
        head[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0) {
        free(json);
        return -1;
    }
    fwrite(head, 1, 8, a.fp);
    fwrite(json, 1, len, a.fp);
    for (size_t i = len; i < padded; i++)
        fputc(' ', a.fp);
    free(json);
    for (size_t i = 0; i < n; i++)
        if (entries[i].nbytes)
            fwrite(entries[i].data, 1, entries[i].nbytes, a.fp);
    return bp_atomic_commit(&a, err);
}
