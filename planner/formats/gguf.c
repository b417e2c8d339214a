/*
 * gguf.c - GGUF reader (validated before any tensor byte is touched) and
 * writer.  The reader keeps pointers into the read-only mapping; only names
 * and keys are copied.
 */
#include "gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"

#define GGUF_MAX_NAME 64          /* ggml's GGML_MAX_NAME, NUL included */
#define GGUF_DEFAULT_ALIGNMENT 32

static const struct {
    const char *name;
    size_t size;
} value_types[BP_GGUF_TYPES] = {
    {"u8", 1}, {"i8", 1}, {"u16", 2}, {"i16", 2}, {"u32", 4}, {"i32", 4}, {"f32", 4},
    {"bool", 1}, {"string", 0}, {"array", 0}, {"u64", 8}, {"i64", 8}, {"f64", 8},
};

const char *bp_gguf_type_name(int type)
{
    return type >= 0 && type < BP_GGUF_TYPES ? value_types[type].name : "?";
}

/* ---- the header reader --------------------------------------------------- */

typedef struct gg_reader {
    const unsigned char *p, *end, *start;
    const char *label;
    bp_error *err;
} gg_reader;

static int gg_short(gg_reader *r, const char *what)
{
    return bp_fail(r->err, "%s: truncated at byte %zu reading %s (not a GGUF file, or cut "
                   "short)", r->label, (size_t)(r->p - r->start), what);
}

static uint64_t gg_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int gg_u32(gg_reader *r, const char *what, uint32_t *v)
{
    if (r->end - r->p < 4)
        return gg_short(r, what);
    *v = (uint32_t)gg_le(r->p, 4);
    r->p += 4;
    return 0;
}

static int gg_u64(gg_reader *r, const char *what, uint64_t *v)
{
    if (r->end - r->p < 8)
        return gg_short(r, what);
    *v = gg_le(r->p, 8);
    r->p += 8;
    return 0;
}

/* A string: its bytes in the mapping (not NUL-terminated). */
static int gg_str(gg_reader *r, const char *what, const unsigned char **s, uint64_t *n)
{
    if (gg_u64(r, what, n) < 0)
        return -1;
    if (*n > (uint64_t)(r->end - r->p))
        return bp_fail(r->err, "%s: byte %zu: %s of %" PRIu64 " bytes runs past the end of "
                       "the file", r->label, (size_t)(r->p - r->start), what, *n);
    *s = r->p;
    r->p += *n;
    return 0;
}

static char *gg_name(gg_reader *r, const char *what)
{
    const unsigned char *s = NULL;
    uint64_t n = 0;
    if (gg_str(r, what, &s, &n) < 0)
        return NULL;
    if (memchr(s, 0, (size_t)n)) {
        bp_fail(r->err, "%s: byte %zu: %s holds a NUL byte", r->label,
                (size_t)(r->p - r->start), what);
        return NULL;
    }
    char *o = bp_malloc((size_t)n + 1, r->err);
    if (o) {
        memcpy(o, s, (size_t)n);
        o[n] = '\0';
    }
    return o;
}

/* Skip one value of a scalar type or string. */
static int gg_skip(gg_reader *r, int type, const char *key)
{
    if (type == BP_GGUF_STRING) {
        const unsigned char *s = NULL;
        uint64_t n = 0;
        return gg_str(r, "a string value", &s, &n);
    }
    size_t sz = value_types[type].size;
    if ((size_t)(r->end - r->p) < sz)
        return gg_short(r, key);
    if (type == BP_GGUF_BOOL && *r->p > 1)
        return bp_fail(r->err, "%s: key '%s': a bool of value %u (expected 0 or 1)", r->label,
                       key, *r->p);
    r->p += sz;
    return 0;
}

static int gg_kv(gg_reader *r, bp_gguf_kv *kv)
{
    uint32_t type = 0;
    if (!(kv->key = gg_name(r, "a key")))
        return -1;
    if (!kv->key[0])
        return bp_fail(r->err, "%s: an empty key", r->label);
    if (gg_u32(r, "a value type", &type) < 0)
        return -1;
    if (type >= BP_GGUF_TYPES)
        return bp_fail(r->err, "%s: key '%s' has value type %" PRIu32 " (expected 0..12)",
                       r->label, kv->key, type);
    kv->type = (int)type;
    kv->n = 1;
    if (type != BP_GGUF_ARRAY) {
        kv->val = r->p;
        return gg_skip(r, (int)type, kv->key);
    }
    uint32_t elem = 0;
    if (gg_u32(r, "an array's element type", &elem) < 0 || gg_u64(r, "an array's length",
                                                                   &kv->n) < 0)
        return -1;
    if (elem >= BP_GGUF_TYPES || elem == BP_GGUF_ARRAY)
        return bp_fail(r->err, "%s: key '%s' is an array of %s (expected an array of scalars "
                       "or strings)", r->label, kv->key,
                       elem == BP_GGUF_ARRAY ? "arrays" : "an unknown type");
    kv->elem = (int)elem;
    kv->val = r->p;
    size_t sz = value_types[elem].size;
    if (sz) {                     /* fixed-size elements: one bounds check */
        if (kv->n > (uint64_t)(r->end - r->p) / sz)
            return bp_fail(r->err, "%s: key '%s': %" PRIu64 " elements of %s run past the end "
                           "of the file", r->label, kv->key, kv->n, value_types[elem].name);
        if (elem == BP_GGUF_BOOL)
            for (uint64_t i = 0; i < kv->n; i++)
                if (r->p[i] > 1)
                    return bp_fail(r->err, "%s: key '%s': element %" PRIu64 " is a bool of "
                                   "value %u", r->label, kv->key, i, r->p[i]);
        r->p += kv->n * sz;
        return 0;
    }
    for (uint64_t i = 0; i < kv->n; i++)
        if (gg_skip(r, (int)elem, kv->key) < 0)
            return -1;
    return 0;
}

static int gg_tensor(gg_reader *r, bp_gguf_tensor *t)
{
    uint32_t n_dims = 0, type = 0;
    if (!(t->name = gg_name(r, "a tensor name")))
        return -1;
    if (strlen(t->name) >= GGUF_MAX_NAME)
        return bp_fail(r->err, "%s: tensor name '%.40s...' is %zu bytes (ggml allows %d)",
                       r->label, t->name, strlen(t->name), GGUF_MAX_NAME - 1);
    if (gg_u32(r, "a tensor's n_dims", &n_dims) < 0)
        return -1;
    if (n_dims > 4)
        return bp_fail(r->err, "%s: tensor '%s' has %" PRIu32 " dimensions (at most 4)",
                       r->label, t->name, n_dims);
    t->n_dims = (int)n_dims;
    int64_t numel = 1;
    for (int d = 0; d < 4; d++) {
        uint64_t v = 1;
        if (d < t->n_dims && gg_u64(r, "a tensor's dimension", &v) < 0)
            return -1;
        if (v > (uint64_t)INT64_MAX)
            return bp_fail(r->err, "%s: tensor '%s': dimension %d is negative", r->label,
                           t->name, d);
        t->ne[d] = (int64_t)v;
        if (v && numel > INT64_MAX / (int64_t)v)
            return bp_fail(r->err, "%s: tensor '%s': the element count overflows", r->label,
                           t->name);
        numel *= (int64_t)v;
    }
    if (gg_u32(r, "a tensor's type", &type) < 0 || gg_u64(r, "a tensor's offset",
                                                           &t->offset) < 0)
        return -1;
    int64_t blck;
    size_t bytes;
    if (bp_ggml_block((int)type, &blck, &bytes) < 0)
        return bp_fail(r->err, "%s: tensor '%s' has ggml type %" PRIu32 ", which is no type "
                       "(removed, or newer than bitplan)", r->label, t->name, type);
    t->type = (int)type;
    if (t->ne[0] % blck)
        return bp_fail(r->err, "%s: tensor '%s' (%s) has rows of %" PRId64 " elements, not a "
                       "multiple of the type's block of %" PRId64, r->label, t->name,
                       bp_ggml_type_name((int)type), t->ne[0], blck);
    uint64_t row = bp_ggml_row_bytes(t->type, t->ne[0]), rows = (uint64_t)(numel / (t->ne[0]
                                                                            ? t->ne[0] : 1));
    if (t->ne[0] == 0)
        rows = 0;
    if (row && rows > UINT64_MAX / row)
        return bp_fail(r->err, "%s: tensor '%s' is too large", r->label, t->name);
    t->nbytes = row * rows;
    return 0;
}

static int gg_cmp_offset(const void *a, const void *b)
{
    const bp_gguf_tensor *s = *(const bp_gguf_tensor *const *)a,
                         *t = *(const bp_gguf_tensor *const *)b;
    return s->offset < t->offset ? -1 : s->offset > t->offset;
}

static int gg_cmp_name(const void *a, const void *b)
{
    return strcmp((*(const bp_gguf_tensor *const *)a)->name,
                  (*(const bp_gguf_tensor *const *)b)->name);
}

static int gg_cmp_key(const void *a, const void *b)
{
    return strcmp((*(const bp_gguf_kv *const *)a)->key, (*(const bp_gguf_kv *const *)b)->key);
}

/* Duplicates, alignment, spans, overlaps. */
static int gg_validate(bp_gguf *g, const char *label, bp_error *err)
{
    size_t n = g->n_tensors, m = g->n_kv, big = n > m ? n : m;
    const void **v = bp_calloc(big ? big : 1, sizeof *v, err);
    int rc = v ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < m; i++)
        v[i] = &g->kv[i];
    if (rc == 0 && m > 1)
        qsort(v, m, sizeof *v, gg_cmp_key);
    for (size_t i = 1; rc == 0 && i < m; i++)
        if (!strcmp(((const bp_gguf_kv *)v[i])->key, ((const bp_gguf_kv *)v[i - 1])->key))
            rc = bp_fail(err, "%s: key '%s' appears twice", label,
                         ((const bp_gguf_kv *)v[i])->key);
    for (size_t i = 0; rc == 0 && i < n; i++)
        v[i] = &g->tensors[i];
    if (rc == 0 && n > 1)
        qsort(v, n, sizeof *v, gg_cmp_name);
    for (size_t i = 1; rc == 0 && i < n; i++)
        if (!strcmp(((const bp_gguf_tensor *)v[i])->name,
                    ((const bp_gguf_tensor *)v[i - 1])->name))
            rc = bp_fail(err, "%s: tensor '%s' appears twice", label,
                         ((const bp_gguf_tensor *)v[i])->name);
    uint64_t data = g->size - g->data_start;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const bp_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            rc = bp_fail(err, "%s: tensor '%s' starts at offset %" PRIu64 ", not a multiple of "
                         "the alignment %" PRIu32, label, t->name, t->offset, g->alignment);
        else if (t->offset > data || t->nbytes > data - t->offset)
            rc = bp_fail(err, "%s: tensor '%s' (%" PRIu64 " bytes at offset %" PRIu64 ") runs "
                         "past the %" PRIu64 "-byte data section (file truncated?)", label,
                         t->name, t->nbytes, t->offset, data);
    }
    if (rc == 0 && n > 1)
        qsort(v, n, sizeof *v, gg_cmp_offset);
    for (size_t i = 1; rc == 0 && i < n; i++) {
        const bp_gguf_tensor *a = v[i - 1], *b = v[i];
        if (a->nbytes && b->nbytes && b->offset < a->offset + a->nbytes)
            rc = bp_fail(err, "%s: tensors '%s' and '%s' overlap in the data section", label,
                         a->name, b->name);
    }
    free(v);
    return rc;
}

static void gg_free(bp_gguf *g)
{
    for (size_t i = 0; i < g->n_kv; i++)
        free(g->kv[i].key);
    for (size_t i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->path);
    memset(g, 0, sizeof *g);
}

int bp_gguf_is(const unsigned char *buf, size_t size)
{
    return size >= 4 && memcmp(buf, "GGUF", 4) == 0;
}

int bp_gguf_file(const char *path)
{
    unsigned char head[4];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat sb;
    if (fd < 0)
        return 0;
    int yes = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && read(fd, head, 4) == 4 &&
              memcmp(head, "GGUF", 4) == 0;
    close(fd);
    return yes;
}

static int gg_alignment(bp_gguf *g, const char *label, bp_error *err)
{
    const bp_gguf_kv *a = bp_gguf_find(g, "general.alignment");
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!a)
        return 0;
    if (a->type != BP_GGUF_U32)
        return bp_fail(err, "%s: general.alignment is a %s (expected u32)", label,
                       bp_gguf_type_name(a->type));
    g->alignment = (uint32_t)gg_le(a->val, 4);
    if (g->alignment == 0 || (g->alignment & (g->alignment - 1)))
        return bp_fail(err, "%s: general.alignment %" PRIu32 " is not a power of two", label,
                       g->alignment);
    return 0;
}

static int gg_header(bp_gguf *g, gg_reader *r)
{
    uint64_t n_t = 0, n_kv = 0;
    if (gg_u32(r, "the version", &g->version) < 0 || gg_u64(r, "the tensor count", &n_t) < 0 ||
        gg_u64(r, "the key count", &n_kv) < 0)
        return -1;
    if (g->version == 1)
        return bp_fail(r->err, "%s: GGUF version 1 (bitplan reads versions 2 and 3; convert "
                       "the model again with llama.cpp's convert_hf_to_gguf.py)", r->label);
    if (g->version >= 1u << 16)
        return bp_fail(r->err, "%s: the version field reads %" PRIu32 ": a big-endian GGUF "
                       "(bitplan reads little-endian GGUF)", r->label, g->version);
    if (g->version != 2 && g->version != 3)
        return bp_fail(r->err, "%s: GGUF version %" PRIu32 " (bitplan reads versions 2 and 3)",
                       r->label, g->version);
    /* each key needs at least 12 bytes, each tensor at least 24: bound the counts
     * by the file before allocating */
    uint64_t left = (uint64_t)(r->end - r->p);
    if (n_kv > left / 12 || n_t > left / 24)
        return bp_fail(r->err, "%s: %" PRIu64 " keys and %" PRIu64 " tensors cannot fit in the "
                       "%zu-byte file", r->label, n_kv, n_t, (size_t)(r->end - r->start));
    g->kv = bp_calloc(n_kv ? n_kv : 1, sizeof *g->kv, r->err);
    g->tensors = bp_calloc(n_t ? n_t : 1, sizeof *g->tensors, r->err);
    if (!g->kv || !g->tensors)
        return -1;
    for (; g->n_kv < n_kv; g->n_kv++)
        if (gg_kv(r, &g->kv[g->n_kv]) < 0)
            return g->n_kv++, -1;
    if (gg_alignment(g, r->label, r->err) < 0)
        return -1;
    for (; g->n_tensors < n_t; g->n_tensors++)
        if (gg_tensor(r, &g->tensors[g->n_tensors]) < 0)
            return g->n_tensors++, -1;
    size_t at = (size_t)(r->p - r->start), pad = (at + g->alignment - 1) / g->alignment *
                                                 g->alignment;
    if (n_t && pad > g->size)
        return bp_fail(r->err, "%s: the data section would start at byte %zu, past the end of "
                       "the %zu-byte file", r->label, pad, g->size);
    g->data_start = pad > g->size ? g->size : pad;
    return 0;
}

int bp_gguf_parse(bp_gguf *g, const unsigned char *buf, size_t size, const char *label,
                  bp_error *err)
{
    memset(g, 0, sizeof *g);
    if (!bp_gguf_is(buf, size))
        return bp_fail(err, "%s: not a GGUF file (it does not start with \"GGUF\")", label);
    g->map = buf;
    g->size = size;
    gg_reader r = {buf + 4, buf + size, buf, label, err};
    if (gg_header(g, &r) < 0 || gg_validate(g, label, err) < 0) {
        gg_free(g);
        return -1;
    }
    return 0;
}

int bp_gguf_open(bp_gguf *g, const char *path, bp_error *err)
{
    const unsigned char *map;
    size_t size;
    memset(g, 0, sizeof *g);
    if (bp_map_file(path, 24, "a GGUF file", &map, &size, err) < 0)
        return -1;
    char *copy = bp_strdup(path, err);
    if (!copy || bp_gguf_parse(g, map, size, path, err) < 0) {
        free(copy);
        bp_unmap_file(map, size);
        return -1;
    }
    g->path = copy;
    return 0;
}

void bp_gguf_close(bp_gguf *g)
{
    if (!g)
        return;
    if (g->path)
        bp_unmap_file(g->map, g->size);
    gg_free(g);
}

const bp_gguf_kv *bp_gguf_find(const bp_gguf *g, const char *key)
{
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0)
            return &g->kv[i];
    return NULL;
}

char *bp_gguf_string(const bp_gguf *g, const char *key)
{
    const bp_gguf_kv *kv = bp_gguf_find(g, key);
    if (!kv || kv->type != BP_GGUF_STRING)
        return NULL;
    uint64_t n = gg_le(kv->val, 8);
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, kv->val + 8, (size_t)n);
        s[n] = '\0';
    }
    return s;
}

/* A scalar at p of type t as a signed integer (1 when t is not an integer type). */
static int gg_int_at(const unsigned char *p, int t, int64_t *v)
{
    switch (t) {
    case BP_GGUF_U8: case BP_GGUF_BOOL: *v = p[0]; return 0;
    case BP_GGUF_I8: *v = (int8_t)p[0]; return 0;
    case BP_GGUF_U16: *v = (int64_t)gg_le(p, 2); return 0;
    case BP_GGUF_I16: *v = (int16_t)gg_le(p, 2); return 0;
    case BP_GGUF_U32: *v = (int64_t)gg_le(p, 4); return 0;
    case BP_GGUF_I32: *v = (int32_t)gg_le(p, 4); return 0;
    case BP_GGUF_U64: *v = (int64_t)gg_le(p, 8); return gg_le(p, 8) > INT64_MAX;
    case BP_GGUF_I64: *v = (int64_t)gg_le(p, 8); return 0;
    default: return 1;
    }
}

int bp_gguf_int(const bp_gguf *g, const char *key, int64_t *out)
{
    const bp_gguf_kv *kv = bp_gguf_find(g, key);
    return kv && kv->type != BP_GGUF_ARRAY && gg_int_at(kv->val, kv->type, out) == 0 ? 0 : -1;
}

/* One scalar at *p of type t appended to buf; advances *p. */
static void gg_render_one(const unsigned char **p, int t, char *buf, size_t cap, size_t max)
{
    size_t k = strlen(buf);
    int64_t v;
    if (t == BP_GGUF_STRING) {
        uint64_t n = gg_le(*p, 8);
        size_t show = n > max ? max : (size_t)n;
        snprintf(buf + k, cap - k, "\"%.*s%s\"", (int)show, (const char *)*p + 8,
                 n > show ? "..." : "");
        *p += 8 + n;
        return;
    }
    if (t == BP_GGUF_F32) {
        float f;
        uint32_t u = (uint32_t)gg_le(*p, 4);
        memcpy(&f, &u, 4);
        snprintf(buf + k, cap - k, "%.9g", (double)f);
    } else if (t == BP_GGUF_F64) {
        double d;
        uint64_t u = gg_le(*p, 8);
        memcpy(&d, &u, 8);
        snprintf(buf + k, cap - k, "%.17g", d);
    } else if (t == BP_GGUF_BOOL) {
        snprintf(buf + k, cap - k, "%s", **p ? "true" : "false");
    } else if (t == BP_GGUF_U64) {
        snprintf(buf + k, cap - k, "%" PRIu64, gg_le(*p, 8));
    } else if (gg_int_at(*p, t, &v) == 0) {
        snprintf(buf + k, cap - k, "%" PRId64, v);
    }
    *p += value_types[t].size;
}

uint64_t bp_gguf_kv_bytes(const bp_gguf_kv *kv)
{
    uint64_t head = 8 + strlen(kv->key) + 4;
    int t = kv->type == BP_GGUF_ARRAY ? kv->elem : kv->type;
    uint64_t n = kv->type == BP_GGUF_ARRAY ? kv->n : 1, payload = 0;
    if (t != BP_GGUF_STRING) {
        payload = n * value_types[t].size;
    } else {
        const unsigned char *p = kv->val;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len = gg_le(p, 8);
            payload += 8 + len;
            p += 8 + len;
        }
    }
    return head + (kv->type == BP_GGUF_ARRAY ? 12 : 0) + payload;
}

char *bp_gguf_render(const bp_gguf_kv *kv, size_t max)
{
    size_t cap = 2 * max + 128;
    char *buf = calloc(1, cap);
    if (!buf)
        return NULL;
    const unsigned char *p = kv->val;
    if (kv->type != BP_GGUF_ARRAY) {
        gg_render_one(&p, kv->type, buf, cap, max);
        return buf;
    }
    snprintf(buf, cap, "[%" PRIu64 " %s]", kv->n, value_types[kv->elem].name);
    for (uint64_t i = 0; i < kv->n && strlen(buf) < max; i++) {
        strncat(buf, i ? ", " : " ", cap - strlen(buf) - 1);
        gg_render_one(&p, kv->elem, buf, cap, 24);
    }
    if (strlen(buf) >= max && kv->n)
        strncat(buf, " ...", cap - strlen(buf) - 1);
    return buf;
}

/* ---- the safetensors view ------------------------------------------------- */

static int gg_dtype(int type, bp_dtype *dt)
{
    switch (type) {
    case BP_GGML_F32: *dt = BP_DT_F32; return 0;
    case BP_GGML_F16: *dt = BP_DT_F16; return 0;
    case BP_GGML_BF16: *dt = BP_DT_BF16; return 0;
    case BP_GGML_F64: *dt = BP_DT_F64; return 0;
    case BP_GGML_I8: *dt = BP_DT_I8; return 0;
    case BP_GGML_I16: *dt = BP_DT_I16; return 0;
    case BP_GGML_I32: *dt = BP_DT_I32; return 0;
    case BP_GGML_I64: *dt = BP_DT_I64; return 0;
    default: return -1;
    }
}

static int gg_cmp_begin(const void *a, const void *b)
{
    const bp_st_tensor *s = a, *t = b;
    return s->begin < t->begin ? -1 : s->begin > t->begin ? 1 : strcmp(s->name, t->name);
}

int bp_gguf_as_safetensors(const bp_gguf *g, bp_safetensors *st, bp_error *err)
{
    const char *label = g->path ? g->path : "GGUF";
    memset(st, 0, sizeof *st);
    for (size_t i = 0; i < g->n_tensors; i++) {
        bp_dtype dt;
        const bp_gguf_tensor *t = &g->tensors[i];
        if (gg_dtype(t->type, &dt) < 0)
            return bp_fail(err, "%s: tensor '%s' is already quantized (%s): bitplan plans from "
                           "the float model (convert it with llama.cpp's convert_hf_to_gguf.py "
                           "--outtype f16, or use the F16/BF16/F32 GGUF)", label, t->name,
                           bp_ggml_type_name(t->type));
    }
    st->map = g->map;
    st->size = g->size;
    st->data_start = g->data_start;
    st->tensors = bp_calloc(g->n_tensors ? g->n_tensors : 1, sizeof *st->tensors, err);
    st->meta = bp_calloc(g->n_kv ? g->n_kv : 1, sizeof *st->meta, err);
    if (!st->tensors || !st->meta)
        goto fail;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const bp_gguf_tensor *t = &g->tensors[i];
        bp_st_tensor *o = &st->tensors[st->n_tensors++];
        if (!(o->name = bp_strdup(t->name, err)))
            goto fail;
        gg_dtype(t->type, &o->dtype);
        o->rank = t->n_dims;
        for (int d = 0; d < t->n_dims; d++)
            o->shape[d] = t->ne[t->n_dims - 1 - d];
        o->begin = t->offset;
        o->end = t->offset + t->nbytes;
    }
    if (st->n_tensors > 1)
        qsort(st->tensors, st->n_tensors, sizeof *st->tensors, gg_cmp_begin);
    for (size_t i = 0; i < g->n_kv; i++) {
        if (g->kv[i].type == BP_GGUF_ARRAY)
            continue;
        bp_st_meta *m = &st->meta[st->n_meta++];
        m->key = bp_strdup(g->kv[i].key, err);
        m->value = bp_gguf_render(&g->kv[i], 1u << 16);
        if (!m->key || !m->value) {
            bp_fail(err, "out of memory");
            goto fail;
        }
        if (g->kv[i].type == BP_GGUF_STRING) {   /* unquoted, as safetensors metadata */
            size_t n = strlen(m->value);
            memmove(m->value, m->value + 1, n - 2);
            m->value[n - 2] = '\0';
        }
    }
    return 0;
fail:
    for (size_t i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->tensors);
    free(st->meta);
    memset(st, 0, sizeof *st);
    return -1;
}

/* ---- the writer ------------------------------------------------------------ */

typedef struct gw_out {
    FILE *fp;
    uint64_t pos;             /* bytes written (outputs may be pipes) */
} gw_out;

static void gw_bytes(gw_out *o, const void *p, size_t n)
{
    fwrite(p, 1, n, o->fp);
    o->pos += n;
}

static void gw_le(gw_out *o, uint64_t v, int n)
{
    unsigned char b[8];
    for (int i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * i) & 0xff);
    gw_bytes(o, b, (size_t)n);
}

static void gw_pad(gw_out *o, uint32_t align)
{
    static const unsigned char zero[256];
    while (o->pos % align)
        gw_bytes(o, zero, (size_t)(align - o->pos % align) > sizeof zero
                              ? sizeof zero : (size_t)(align - o->pos % align));
}

static void gw_str(gw_out *o, const char *s)
{
    size_t n = strlen(s);
    gw_le(o, n, 8);
    gw_bytes(o, s, n);
}

static void gw_value(gw_out *o, int type, const void *data, uint64_t i)
{
    if (type == BP_GGUF_STRING) {
        gw_str(o, ((const char *const *)data)[i]);
        return;
    }
    size_t sz = value_types[type].size;
    gw_bytes(o, (const unsigned char *)data + i * sz, sz);   /* little-endian hosts */
}

static int gw_check(const char *path, const bp_gguf_wkv *kv, size_t n_kv,
                    const bp_gguf_wtensor *t, size_t n_t, uint32_t *align, bp_error *err)
{
    *align = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < n_kv; i++) {
        int bad = kv[i].type < 0 || kv[i].type >= BP_GGUF_TYPES ||
                  (kv[i].type == BP_GGUF_ARRAY &&
                   (kv[i].elem < 0 || kv[i].elem >= BP_GGUF_TYPES || kv[i].elem == BP_GGUF_ARRAY));
        if (bad || !kv[i].key[0])
            return bp_fail(err, "%s: key %zu ('%s'): bad type or empty key", path, i, kv[i].key);
        if (!strcmp(kv[i].key, "general.alignment")) {
            uint32_t a = *(const uint32_t *)kv[i].data;
            if (kv[i].type != BP_GGUF_U32 || !a || (a & (a - 1)))
                return bp_fail(err, "%s: general.alignment must be a u32 power of two", path);
            *align = a;
        }
    }
    for (size_t i = 0; i < n_t; i++) {
        int64_t blck;
        size_t bytes;
        if (bp_ggml_block(t[i].type, &blck, &bytes) < 0 || t[i].n_dims < 1 || t[i].n_dims > 4 ||
            t[i].ne[0] % blck || strlen(t[i].name) >= GGUF_MAX_NAME)
            return bp_fail(err, "%s: tensor '%s': bad type, shape or name", path, t[i].name);
    }
    return 0;
}

static uint64_t gw_nbytes(const bp_gguf_wtensor *t)
{
    uint64_t rows = 1;
    for (int d = 1; d < t->n_dims; d++)
        rows *= (uint64_t)t->ne[d];
    return bp_ggml_row_bytes(t->type, t->ne[0]) * rows;
}

int bp_gguf_write(const char *path, const bp_gguf_wkv *kv, size_t n_kv,
                  const bp_gguf_wtensor *t, size_t n_t, bp_error *err)
{
    uint32_t align;
    if (gw_check(path, kv, n_kv, t, n_t, &align, err) < 0)
        return -1;
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    gw_out o = {a.fp, 0}, *fp = &o;
    gw_bytes(fp, "GGUF", 4);
    gw_le(fp, 3, 4);
    gw_le(fp, n_t, 8);
    gw_le(fp, n_kv, 8);
    for (size_t i = 0; i < n_kv; i++) {
        gw_str(fp, kv[i].key);
        gw_le(fp, (uint64_t)kv[i].type, 4);
        if (kv[i].type != BP_GGUF_ARRAY) {
            const void *d = kv[i].type == BP_GGUF_STRING ? (const void *)&kv[i].data : kv[i].data;
            gw_value(fp, kv[i].type, d, 0);
            continue;
        }
        gw_le(fp, (uint64_t)kv[i].elem, 4);
        gw_le(fp, kv[i].n, 8);
        for (uint64_t j = 0; j < kv[i].n; j++)
            gw_value(fp, kv[i].elem, kv[i].data, j);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n_t; i++) {
        gw_str(fp, t[i].name);
        gw_le(fp, (uint64_t)t[i].n_dims, 4);
        for (int d = 0; d < t[i].n_dims; d++)
            gw_le(fp, (uint64_t)t[i].ne[d], 8);
        gw_le(fp, (uint64_t)t[i].type, 4);
        gw_le(fp, off, 8);
        off += (gw_nbytes(&t[i]) + align - 1) / align * align;
    }
    gw_pad(fp, align);
    for (size_t i = 0; i < n_t; i++) {
        gw_bytes(fp, t[i].data, (size_t)gw_nbytes(&t[i]));
        gw_pad(fp, align);
    }
    return bp_atomic_commit(&a, err);
}
