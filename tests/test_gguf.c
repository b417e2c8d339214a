/*
 * test_gguf.c - GGUF (formats/gguf.c), importance matrices
 * (formats/imatrix.c) and the quantized file's size (planner/gguffile.c).
 *
 * The writer's files read back exactly (every key type, arrays, float and
 * quantized tensors, default and custom alignment); a GGUF model reads as
 * the same tensors rows-first, a quantized one is refused with the reason;
 * every malformed header -- each prefix of a valid file, bad versions,
 * unknown or nested types, duplicates, misaligned, overlapping or
 * out-of-file tensors, too many dimensions, long names, rows that do not
 * fill a block -- is one error and never a crash.  An importance matrix in
 * its two forms gives the same means; corrupt ones are refused.  The
 * predicted size of a requantized file equals the size of that file.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "../common/bp_ggml.h"
#include "../planner/formats/gguf.h"
#include "../planner/formats/imatrix.h"
#include "../planner/gguffile.h"
#include "../planner/model.h"

static const char *tmp_path(const char *name)
{
    static char buf[4][4096];
    static int k;
    const char *dir = getenv("BP_TEST_TMP") ? getenv("BP_TEST_TMP") : "/tmp";
    mkdir(dir, 0755);
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* ---- a byte builder for hand-made headers ------------------------------------ */

typedef struct bytes {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = 2 * (b->n + n) + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void str(bytes *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }
static void pad(bytes *b, size_t a)
{
    static const unsigned char z[64];
    while (b->n % a)
        put(b, z, 1);
}

/* One tensor info. */
static void tinfo(bytes *b, const char *name, int n_dims, const int64_t *ne, uint32_t type,
                  uint64_t off)
{
    str(b, name);
    u32(b, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++)
        u64(b, (uint64_t)ne[d]);
    u32(b, type);
    u64(b, off);
}

/* A valid little file: 2 keys, tensors a (F32 [4, 2]) and b (F16 [8]). */
static bytes small_file(void)
{
    bytes b = {0};
    put(&b, "GGUF", 4);
    u32(&b, 3);
    u64(&b, 2);
    u64(&b, 2);
    str(&b, "general.architecture");
    u32(&b, BP_GGUF_STRING);
    str(&b, "llama");
    str(&b, "n");
    u32(&b, BP_GGUF_U32);
    u32(&b, 7);
    tinfo(&b, "a", 2, (int64_t[]){4, 2}, BP_GGML_F32, 0);
    tinfo(&b, "b", 1, (int64_t[]){8}, BP_GGML_F16, 32);
    pad(&b, 32);
    for (int i = 0; i < 8; i++) {
        float f = (float)i;
        put(&b, &f, 4);
    }
    for (int i = 0; i < 8; i++) {
        uint16_t h = bp_f32_to_f16(0.5f * (float)i);
        put(&b, &h, 2);
    }
    return b;
}

static int parses(const unsigned char *p, size_t n, bp_error *err)
{
    bp_gguf g;
    int rc = bp_gguf_parse(&g, p, n, "t.gguf", err);
    if (rc == 0)
        bp_gguf_close(&g);
    return rc;
}

static void test_roundtrip(void)
{
    bp_error err = {""};
    uint8_t u8 = 200;
    int8_t i8 = -5;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint32_t u32v = 4000000000u, align = 64;
    int32_t i32 = -2000000000;
    uint64_t u64v = 18000000000000000000ull;
    int64_t i64 = -9000000000000000000ll;
    float f32 = 1.5f;
    double f64 = -2.25;
    uint8_t yes = 1;
    static const char *const toks[] = {"<s>", "h\xc3\xa9llo", ""};
    static const int32_t ints[] = {1, -2, 3};
    bp_gguf_wkv kv[] = {
        {"k.u8", BP_GGUF_U8, 0, 1, &u8}, {"k.i8", BP_GGUF_I8, 0, 1, &i8},
        {"k.u16", BP_GGUF_U16, 0, 1, &u16}, {"k.i16", BP_GGUF_I16, 0, 1, &i16},
        {"k.u32", BP_GGUF_U32, 0, 1, &u32v}, {"k.i32", BP_GGUF_I32, 0, 1, &i32},
        {"k.u64", BP_GGUF_U64, 0, 1, &u64v}, {"k.i64", BP_GGUF_I64, 0, 1, &i64},
        {"k.f32", BP_GGUF_F32, 0, 1, &f32}, {"k.f64", BP_GGUF_F64, 0, 1, &f64},
        {"k.bool", BP_GGUF_BOOL, 0, 1, &yes}, {"k.str", BP_GGUF_STRING, 0, 1, "llama"},
        {"k.toks", BP_GGUF_ARRAY, BP_GGUF_STRING, 3, toks},
        {"k.ints", BP_GGUF_ARRAY, BP_GGUF_I32, 3, ints},
        {"general.alignment", BP_GGUF_U32, 0, 1, &align},
    };
    float w[3 * 64];
    uint16_t h[32], bf[32];
    unsigned char q[2 * 144];
    for (int i = 0; i < 3 * 64; i++)
        w[i] = (float)(i % 17) - 8.0f;
    for (int i = 0; i < 32; i++)
        h[i] = bp_f32_to_f16((float)i / 4), bf[i] = (uint16_t)(0x3f80 + i);
    for (size_t i = 0; i < sizeof q; i++)
        q[i] = (unsigned char)(i * 7);
    bp_gguf_wtensor t[] = {
        {"blk.0.attn_q.weight", BP_GGML_F32, 2, {64, 3, 1, 1}, w},
        {"x.f16", BP_GGML_F16, 1, {32, 1, 1, 1}, h},
        {"x.bf16", BP_GGML_BF16, 2, {16, 2, 1, 1}, bf},
        {"x.q4k", BP_GGML_Q4_K, 2, {256, 2, 1, 1}, q},
    };
    const char *path = tmp_path("rt.gguf");
    CHECK_MSG(bp_gguf_write(path, kv, sizeof kv / sizeof *kv, t, 4, &err) == 0, "%s", err.msg);
    bp_gguf g;
    CHECK_MSG(bp_gguf_open(&g, path, &err) == 0, "%s", err.msg);
    CHECK(g.version == 3 && g.alignment == 64 && g.n_kv == 15 && g.n_tensors == 4);
    int64_t v;
    CHECK(bp_gguf_int(&g, "k.u8", &v) == 0 && v == 200);
    CHECK(bp_gguf_int(&g, "k.i8", &v) == 0 && v == -5);
    CHECK(bp_gguf_int(&g, "k.u16", &v) == 0 && v == 60000);
    CHECK(bp_gguf_int(&g, "k.i16", &v) == 0 && v == -30000);
    CHECK(bp_gguf_int(&g, "k.u32", &v) == 0 && v == 4000000000ll);
    CHECK(bp_gguf_int(&g, "k.i32", &v) == 0 && v == -2000000000);
    CHECK(bp_gguf_int(&g, "k.u64", &v) != 0);               /* beyond int64 */
    CHECK(bp_gguf_int(&g, "k.i64", &v) == 0 && v == -9000000000000000000ll);
    CHECK(bp_gguf_int(&g, "k.f32", &v) != 0 && bp_gguf_int(&g, "missing", &v) != 0);
    char *s = bp_gguf_string(&g, "k.str");
    CHECK(s && !strcmp(s, "llama"));
    free(s);
    const bp_gguf_kv *a = bp_gguf_find(&g, "k.toks");
    CHECK(a && a->type == BP_GGUF_ARRAY && a->elem == BP_GGUF_STRING && a->n == 3);
    char *r = a ? bp_gguf_render(a, 200) : NULL;
    CHECK_MSG(r && strstr(r, "[3 string]") && strstr(r, "\"h\xc3\xa9llo\""), "%s", r ? r : "");
    free(r);
    r = bp_gguf_render(bp_gguf_find(&g, "k.f64"), 50);
    CHECK(r && !strcmp(r, "-2.25"));
    free(r);
    r = bp_gguf_render(bp_gguf_find(&g, "k.u64"), 50);
    CHECK(r && !strcmp(r, "18000000000000000000"));
    free(r);
    for (size_t i = 0; i < g.n_tensors; i++) {
        const bp_gguf_tensor *gt = &g.tensors[i];
        CHECK(gt->offset % 64 == 0 && !strcmp(gt->name, t[i].name) && gt->type == t[i].type);
        CHECK(memcmp(g.map + g.data_start + gt->offset, t[i].data, (size_t)gt->nbytes) == 0);
    }
    CHECK(g.tensors[3].nbytes == 2 * 144);
    /* the safetensors view refuses the quantized tensor, naming it */
    bp_safetensors st;
    CHECK(bp_gguf_as_safetensors(&g, &st, &err) == -1 && strstr(err.msg, "x.q4k") &&
          strstr(err.msg, "already quantized (q4_K)"));
    /* the kv byte counts add up to the header */
    uint64_t kvb = 0;
    for (size_t i = 0; i < g.n_kv; i++)
        kvb += bp_gguf_kv_bytes(&g.kv[i]);
    uint64_t infos = 0;
    for (size_t i = 0; i < g.n_tensors; i++)
        infos += 8 + strlen(g.tensors[i].name) + 4 + 8 * (uint64_t)g.tensors[i].n_dims + 12;
    CHECK((24 + kvb + infos + 63) / 64 * 64 == g.data_start);
    bp_gguf_close(&g);
}

/* A GGUF model through the tensor set: rows first, values as written. */
static void test_model_view(void)
{
    bp_error err = {""};
    bytes b = small_file();
    const char *path = tmp_path("small.gguf");
    FILE *fp = fopen(path, "wb");
    fwrite(b.p, 1, b.n, fp);
    fclose(fp);
    bp_tensorset ts;
    CHECK_MSG(bp_tensorset_open(&ts, path, &err) == 0, "%s", err.msg);
    CHECK(ts.is_gguf && bp_tensorset_count(&ts) == 2);
    long ia = bp_tensorset_find(&ts, "a"), ib = bp_tensorset_find(&ts, "b");
    bp_tensor_ref ra = bp_tensorset_get(&ts, (size_t)ia);
    CHECK(ra.rank == 2 && ra.shape[0] == 2 && ra.shape[1] == 4 && ra.dtype == BP_DT_F32);
    float v[8];
    CHECK(bp_tensorset_read_f32(&ts, (size_t)ia, v, &err) == 0 && v[5] == 5.0f);
    CHECK(bp_tensorset_read_f32(&ts, (size_t)ib, v, &err) == 0 && v[7] == 3.5f);
    CHECK(bp_tensorset_meta(&ts, "general.architecture") &&
          !strcmp(bp_tensorset_meta(&ts, "general.architecture"), "llama"));
    bp_tensorset_close(&ts);
    free(b.p);
}

/* Every malformed header is one error, never a crash. */
static void test_malformed(void)
{
    bp_error err = {""};
    bytes b = small_file();
    CHECK(parses(b.p, b.n, &err) == 0);
    for (size_t n = 0; n < b.n; n++) {                 /* every prefix */
        unsigned char *cut = malloc(n ? n : 1);
        memcpy(cut, b.p, n);
        int rc = parses(cut, n, &err);
        CHECK_MSG(rc == -1 && err.msg[0], "prefix %zu parsed", n);
        free(cut);
    }
    struct {
        size_t at;
        uint32_t v;
        const char *why;
    } pokes[] = {
        {4, 1, "version 1"}, {4, 4, "version 4"}, {4, 0x03000000, "big-endian"},
    };
    for (size_t k = 0; k < sizeof pokes / sizeof *pokes; k++) {
        bytes c = {0};
        put(&c, b.p, b.n);
        memcpy(c.p + pokes[k].at, &pokes[k].v, 4);
        CHECK_MSG(parses(c.p, c.n, &err) == -1 && strstr(err.msg, pokes[k].why), "%s: %s",
                  pokes[k].why, err.msg);
        free(c.p);
    }
    /* hand-made headers, each with one fault */
    for (int fault = 0; fault < 12; fault++) {
        bytes c = {0};
        put(&c, "GGUF", 4);
        u32(&c, 3);
        u64(&c, fault == 11 ? 1000000 : 2);             /* tensors */
        u64(&c, 2);                                     /* keys */
        str(&c, "k");
        u32(&c, fault == 0 ? 13 : fault == 1 ? BP_GGUF_ARRAY : BP_GGUF_U32);
        if (fault == 1) {                               /* an array of arrays */
            u32(&c, BP_GGUF_ARRAY);
            u64(&c, 1);
        } else {
            u32(&c, 1);
        }
        str(&c, fault == 2 ? "k" : "b");                /* a duplicate key */
        u32(&c, BP_GGUF_BOOL);
        unsigned char bv = fault == 3 ? 2 : 1;          /* a bool of 2 */
        put(&c, &bv, 1);
        char longname[80];
        memset(longname, 'x', 70);
        longname[70] = '\0';
        tinfo(&c, fault == 4 ? longname : "t0", fault == 5 ? 5 : 1, (int64_t[]){32, 1, 1, 1, 1},
              fault == 6 ? 4 : BP_GGML_F32, fault == 7 ? 4 : 0);
        tinfo(&c, fault == 8 ? "t0" : "t1", 1, (int64_t[]){fault == 9 ? 100 : 256},
              fault == 9 ? BP_GGML_Q4_K : BP_GGML_F32, fault == 10 ? 64 : 128);
        pad(&c, 32);
        static const unsigned char z[4096];
        put(&c, z, 128 + 1024);
        int rc = parses(c.p, c.n, &err);
        CHECK_MSG(rc == -1 && (fault != 10 || strstr(err.msg, "overlap")), "fault %d: %s", fault,
                  err.msg);
        free(c.p);
    }
    free(b.p);
}

/* An importance matrix in its two forms: the same means. */
static void test_imatrix(void)
{
    bp_error err = {""};
    const char *gpath = tmp_path("im.gguf"), *dpath = tmp_path("im.dat");
    float s2[2][64], cnt[2] = {512.0f, 256.0f}, s1[64];
    for (int j = 0; j < 64; j++) {
        s2[0][j] = (float)(j + 1) * 512.0f;
        s2[1][j] = (float)(64 - j) * 256.0f;
        s1[j] = (float)j;
    }
    static const char *const ds[] = {"a.txt", "b.txt"};
    uint32_t chunks = 3;
    bp_gguf_wkv kv[] = {{"general.type", BP_GGUF_STRING, 0, 1, "imatrix"},
                        {"imatrix.datasets", BP_GGUF_ARRAY, BP_GGUF_STRING, 2, ds},
                        {"imatrix.chunk_count", BP_GGUF_U32, 0, 1, &chunks}};
    bp_gguf_wtensor t[] = {{"w.weight.in_sum2", BP_GGML_F32, 2, {64, 1, 1, 1}, s2[0]},
                           {"w.weight.counts", BP_GGML_F32, 2, {1, 1, 1, 1}, cnt},
                           {"w.weight.in_sum", BP_GGML_F32, 2, {64, 1, 1, 1}, s1},
                           {"e.weight.in_sum2", BP_GGML_F32, 2, {64, 2, 1, 1}, s2},
                           {"e.weight.counts", BP_GGML_F32, 2, {1, 2, 1, 1}, cnt}};
    CHECK(bp_gguf_write(gpath, kv, 3, t, 5, &err) == 0);
    FILE *fp = fopen(dpath, "wb");
    int32_t n = 1, len = 8, ncall = 4, nval = 64;
    fwrite(&n, 4, 1, fp);
    fwrite(&len, 4, 1, fp);
    fwrite("w.weight", 1, 8, fp);
    fwrite(&ncall, 4, 1, fp);
    fwrite(&nval, 4, 1, fp);
    for (int j = 0; j < 64; j++) {
        float v = s2[0][j] / cnt[0] * (float)ncall;     /* mean x ncall */
        fwrite(&v, 4, 1, fp);
    }
    fclose(fp);
    bp_imatrix g, d;
    CHECK_MSG(bp_imatrix_open(&g, gpath, &err) == 0, "%s", err.msg);
    CHECK_MSG(bp_imatrix_open(&d, dpath, &err) == 0, "%s", err.msg);
    CHECK(g.n == 2 && d.n == 1 && d.legacy && !g.legacy && g.chunks == 3);
    CHECK(g.dataset && !strcmp(g.dataset, "b.txt"));
    CHECK(bp_imatrix_detect(gpath) && bp_imatrix_detect(dpath));
    const bp_imatrix_entry *a = bp_imatrix_find(&g, "w.weight"), *b = bp_imatrix_find(&d, "w.weight");
    const bp_imatrix_entry *e = bp_imatrix_find(&g, "e.weight");
    CHECK(a && b && e && e->n_mat == 2 && a->sum && !b->sum);
    for (int j = 0; a && b && j < 64; j++)
        CHECK_NEAR(a->sum2[j] / a->count[0], b->sum2[j] / b->count[0], 1e-6);
    CHECK(e && e->count[1] == 256.0 && e->sum2[64] == 64.0 * 256.0);
    bp_imatrix_close(&g);
    bp_imatrix_close(&d);
    /* corrupt ones */
    float neg = -1.0f;
    bp_gguf_wtensor bad1[] = {{"w.weight.in_sum2", BP_GGML_F32, 2, {1, 1, 1, 1}, &neg},
                              {"w.weight.counts", BP_GGML_F32, 2, {1, 1, 1, 1}, cnt}};
    CHECK(bp_gguf_write(gpath, kv, 3, bad1, 2, &err) == 0);
    CHECK(bp_imatrix_open(&g, gpath, &err) == -1 && strstr(err.msg, "sum of squares"));
    bp_gguf_wtensor bad2[] = {{"w.weight.in_sum2", BP_GGML_F32, 2, {64, 1, 1, 1}, s2[0]}};
    CHECK(bp_gguf_write(gpath, kv, 3, bad2, 1, &err) == 0);
    CHECK(bp_imatrix_open(&g, gpath, &err) == -1 && strstr(err.msg, "counts"));
    float half = 2.5f;
    bp_gguf_wtensor bad3[] = {{"w.weight.in_sum2", BP_GGML_F32, 2, {64, 1, 1, 1}, s2[0]},
                              {"w.weight.counts", BP_GGML_F32, 2, {1, 1, 1, 1}, &half}};
    CHECK(bp_gguf_write(gpath, kv, 3, bad3, 2, &err) == 0);
    CHECK(bp_imatrix_open(&g, gpath, &err) == -1 && strstr(err.msg, "whole number"));
    bp_gguf_wtensor bad4[] = {{"w.weight.counts", BP_GGML_F32, 2, {1, 1, 1, 1}, cnt}};
    CHECK(bp_gguf_write(gpath, kv, 3, bad4, 1, &err) == 0);
    CHECK(bp_imatrix_open(&g, gpath, &err) == -1);
    unsigned char dat[64] = {1, 0, 0, 0, 200, 0, 0, 0};       /* a name longer than the file */
    CHECK(bp_imatrix_parse_dat(&d, dat, sizeof dat, "x.dat", &err) == -1);
    int32_t hdr[] = {1, 1, 'w', 4, -3};                       /* negative value count */
    CHECK(bp_imatrix_parse_dat(&d, (const unsigned char *)hdr, sizeof hdr, "x.dat", &err) == -1);
}

/* The predicted size of a file whose planned layers keep their type is the
 * size of the same file with llama-quantize's two keys added. */
static void test_footprint(void)
{
    bp_error err = {""};
    uint32_t ft = 1, qv = 2;
    static const char *const toks[] = {"a", "bb", "ccc"};
    bp_gguf_wkv kv[] = {{"general.architecture", BP_GGUF_STRING, 0, 1, "llama"},
                        {"tokenizer.ggml.tokens", BP_GGUF_ARRAY, BP_GGUF_STRING, 3, toks},
                        {"general.file_type", BP_GGUF_U32, 0, 1, &ft},
                        {"general.quantization_version", BP_GGUF_U32, 0, 1, &qv}};
    static uint16_t w[3][256 * 8];
    static float norm[256];
    bp_gguf_wtensor t[] = {{"token_embd.weight", BP_GGML_F16, 2, {256, 8, 1, 1}, w[0]},
                           {"blk.0.attn_norm.weight", BP_GGML_F32, 1, {256, 1, 1, 1}, norm},
                           {"blk.0.attn_q.weight", BP_GGML_F16, 2, {256, 8, 1, 1}, w[1]},
                           {"output.weight", BP_GGML_F16, 2, {256, 7, 1, 1}, w[2]}};
    const char *path = tmp_path("fp.gguf");
    CHECK(bp_gguf_write(path, kv, 4, t, 4, &err) == 0);
    struct stat sb;
    stat(path, &sb);
    char *layers[] = {"blk.0.attn_q", "output", "token_embd"};
    bp_gguf_footprint f;
    CHECK_MSG(bp_gguf_footprint_of(path, NULL, NULL, layers, 3, &f, &err) == 0 && f.valid,
              "%s", err.msg);
    double planned = 0;                  /* weight_bits as the table counts them: padded */
    planned += 8.0 * ceil(256.0 * 8 * 2 / 32) * 32 * 2 + 8.0 * ceil(256.0 * 7 * 2 / 32) * 32;
    CHECK_NEAR(bp_gguf_file_bytes(&f, planned), (double)sb.st_size, 0);
    CHECK(f.all_elems == 256.0 * (8 + 1 + 8 + 7) && f.kept_raw == 1024.0);
    CHECK_NEAR(bp_gguf_bpw(&f, 8.0 * 256 * 23 * 2), (8.0 * 1024 + 16.0 * 256 * 23) / f.all_elems,
               1e-12);
    CHECK(bp_gguf_footprint_of(tmp_path("rt.gguf") /* a GGUF */, "im.gguf", "ds", layers, 0, &f,
                               &err) == 0 && f.valid && f.kept_bytes > 0);
    CHECK(bp_gguf_footprint_of("/nonexistent.gguf", NULL, NULL, layers, 0, &f, &err) == 0 &&
          !f.valid);
}

/* A GGUF model's layers and their diagonal statistics: a tied embedding
 * (no output.weight) carries its rows' weight and, as the output, the
 * square of output_norm's weight per column; a layer the imatrix lacks
 * weighs its columns by the RMSNorm in front of it; an expert stack reads
 * one row of the imatrix per expert. */
static void test_layers(void)
{
    bp_error err = {""};
    static uint16_t emb[256 * 4], q[256 * 8], ex[2 * 512 * 256];
    static float onorm[256], anorm[256];
    for (int j = 0; j < 256; j++)
        onorm[j] = 0.5f + (float)j / 256, anorm[j] = 2.0f;
    for (size_t i = 0; i < sizeof ex / sizeof *ex; i++)
        ex[i] = bp_f32_to_f16(0.01f * (float)(i % 7));
    bp_gguf_wtensor t[] = {{"token_embd.weight", BP_GGML_F16, 2, {256, 4, 1, 1}, emb},
                           {"blk.0.attn_norm.weight", BP_GGML_F32, 1, {256, 1, 1, 1}, anorm},
                           {"blk.0.attn_q.weight", BP_GGML_F16, 2, {256, 8, 1, 1}, q},
                           {"blk.0.ffn_up_exps.weight", BP_GGML_F16, 3, {256, 512, 2, 1}, ex},
                           {"output_norm.weight", BP_GGML_F32, 1, {256, 1, 1, 1}, onorm}};
    const char *mp = tmp_path("tied.gguf"), *ip = tmp_path("tied-im.gguf");
    CHECK(bp_gguf_write(mp, NULL, 0, t, 5, &err) == 0);
    static float s2[2 * 256], cnt[2] = {30.0f, 10.0f};
    for (int j = 0; j < 2 * 256; j++)
        s2[j] = (float)(j / 256 + 1) * cnt[j / 256];          /* means 1 and 2 */
    static const char *const ds[] = {"d"};
    bp_gguf_wkv kv[] = {{"general.type", BP_GGUF_STRING, 0, 1, "imatrix"},
                        {"imatrix.datasets", BP_GGUF_ARRAY, BP_GGUF_STRING, 1, ds}};
    bp_gguf_wtensor it[] = {{"blk.0.ffn_up_exps.weight.in_sum2", BP_GGML_F32, 2, {256, 2, 1, 1}, s2},
                            {"blk.0.ffn_up_exps.weight.counts", BP_GGML_F32, 2, {1, 2, 1, 1}, cnt}};
    CHECK(bp_gguf_write(ip, kv, 2, it, 2, &err) == 0);
    bp_model m;
    char *all[] = {"*"};
    CHECK_MSG(bp_model_open(&m, mp, NULL, ip, all, 1, NULL, 0, &err) == 0, "%s", err.msg);
    CHECK(m.n_layers == 3 && !strcmp(m.layers[0].name, "token_embd"));
    for (size_t i = 0; i < m.n_layers; i++) {
        bp_loaded_layer l;
        CHECK_MSG(bp_model_load_layer(&m, i, &l, &err) == 0, "%s", err.msg);
        const bp_diag *g = l.view.diag;
        CHECK(g && g->d);
        if (i == 0)                  /* tied: rows 1/4 each, columns output_norm^2 */
            CHECK(g->row_w == 0.25 && g->d[10] == (double)onorm[10] * onorm[10] && !g->qw);
        if (i == 1)                  /* no entry: attn_norm^2 */
            CHECK(g->row_w == 0 && g->d[3] == 4.0 && !g->qw);
        if (i == 2)                  /* experts: 1024 rows, a row of d per expert */
            CHECK(l.view.out == 1024 && g->n_mat == 2 && g->d[5] == 1.0 && g->d[256 + 5] == 2.0 &&
                  g->qw && g->qw[256 + 5] == 2.0f);
        bp_loaded_layer_free(&l);
    }
    bp_model_close(&m);
}

int main(void)
{
    test_roundtrip();
    test_model_view();
    test_malformed();
    test_imatrix();
    test_footprint();
    test_layers();
    return check_done();
}
