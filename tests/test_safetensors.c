/*
 * test_safetensors.c - the safetensors reader and writer.
 *
 * Round trips through bp_st_write / bp_st_open, half-precision
 * conversions, a table of corrupt headers (each rejected with a message
 * that names the problem), and a mutation loop: thousands of randomly
 * damaged files must be rejected or accepted, never crash (run under the
 * sanitizers in CI's debug job).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "common/bp_file.h"
#include "planner/formats/safetensors.h"

static char tmpdir[512];

/* name inside the test's scratch directory, into buf */
static const char *tmp_path(char buf[1024], const char *name)
{
    snprintf(buf, 1024, "%s/%s", tmpdir, name);
    return buf;
}

static void test_half(void)
{
    CHECK(bp_f16_to_f32(0x3c00) == 1.0f);
    CHECK(bp_f16_to_f32(0xc000) == -2.0f);
    CHECK(bp_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(bp_f16_to_f32(0x0001) == ldexpf(1.0f, -24));      /* smallest subnormal */
    CHECK(bp_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));   /* largest subnormal */
    CHECK(isinf(bp_f16_to_f32(0x7c00)) && bp_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(bp_f16_to_f32(0x7e00)));
    CHECK(bp_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(bp_bf16_to_f32(0xc0a0) == -5.0f);
    CHECK(bp_f32_to_f16(1.0f) == 0x3c00);
    CHECK(bp_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(bp_f32_to_f16(65536.0f) == 0x7c00);               /* overflow -> inf */
    CHECK(bp_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001);
    CHECK(bp_f32_to_f16(ldexpf(1.0f, -26)) == 0x0000);      /* rounds to zero */
    /* ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 */
    CHECK(bp_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00);
    CHECK(bp_f32_to_f16(1.0f + 3.0f * ldexpf(1.0f, -11)) == 0x3c02);
    /* every finite half survives the round trip */
    int same = 1;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = bp_f16_to_f32((uint16_t)h);
        if (isfinite(f) && bp_f32_to_f16(f) != h)
            same = 0;
    }
    CHECK(same);
}

static void test_round_trip(void)
{
    float w[6] = {1, -2, 3.5f, 0.25f, -0.125f, 100};
    uint16_t h[4], b[3] = {0x3f80, 0x4000, 0xbf80};
    for (int i = 0; i < 4; i++)
        h[i] = bp_f32_to_f16((float)i - 1.5f);
    bp_st_entry e[4] = {
        {"layer.\"odd\"\\name\n", BP_DT_F32, 2, {2, 3}, w, sizeof w},
        {"h", BP_DT_F16, 1, {4}, h, sizeof h},
        {"b", BP_DT_BF16, 3, {1, 3, 1}, b, sizeof b},
        {"empty", BP_DT_F32, 2, {0, 5}, NULL, 0},
    };
    bp_st_meta meta[2] = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\""}};
    bp_error err = {{0}};
    char pbuf[1024], bbuf[1024];
    const char *path = tmp_path(pbuf, "rt.safetensors");
    const char *badpath = tmp_path(bbuf, "bad.safetensors");
    remove(badpath);
    CHECK_MSG(bp_st_write(path, e, 4, meta, 2, &err) == 0, "%s", err.msg);
    bp_safetensors st;
    CHECK_MSG(bp_st_open(&st, path, &err) == 0, "%s", err.msg);
    CHECK(st.n_tensors == 4 && st.n_meta == 2);
    CHECK(st.data_start % 8 == 0);
    const bp_st_tensor *t = bp_st_find(&st, e[0].name);
    CHECK(t && t->dtype == BP_DT_F32 && t->rank == 2 && t->shape[1] == 3);
    float out[6];
    if (t && bp_st_read_f32(&st, t, out, &err) == 0)
        CHECK(memcmp(out, w, sizeof w) == 0);
    t = bp_st_find(&st, "h");
    if (t && bp_st_read_f32(&st, t, out, &err) == 0)
        CHECK(out[0] == -1.5f && out[3] == 1.5f);
    t = bp_st_find(&st, "b");
    if (t && bp_st_read_f32(&st, t, out, &err) == 0)
        CHECK(out[0] == 1.0f && out[1] == 2.0f && out[2] == -1.0f);
    t = bp_st_find(&st, "empty");
    CHECK(t && bp_st_numel(t) == 0);
    CHECK(bp_st_find(&st, "nope") == NULL);
    CHECK(bp_st_meta_get(&st, "note") && strcmp(bp_st_meta_get(&st, "note"), meta[1].value) == 0);
    /* tensors come in file order */
    for (size_t i = 1; i < st.n_tensors; i++)
        CHECK(st.tensors[i - 1].begin <= st.tensors[i].begin);
    bp_st_close(&st);
    bp_st_close(&st);                    /* closing twice is harmless */

    /* writer refuses inconsistent entries and leaves no file */
    bp_st_entry badsize = {"x", BP_DT_F32, 1, {3}, w, 8};
    CHECK(bp_st_write(badpath, &badsize, 1, NULL, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "'x'");
    FILE *fp = fopen(badpath, "rb");
    CHECK(fp == NULL);
    if (fp)
        fclose(fp);

    /* NaN in data is an error naming the tensor */
    float nan_data[2] = {1.0f, NAN};
    bp_st_entry n = {"has_nan", BP_DT_F32, 1, {2}, nan_data, sizeof nan_data};
    CHECK(bp_st_write(path, &n, 1, NULL, 0, &err) == 0);
    if (bp_st_open(&st, path, &err) == 0) {
        CHECK(bp_st_read_f32(&st, &st.tensors[0], out, &err) < 0);
        CHECK_STR_CONTAINS(err.msg, "has_nan");
        bp_st_close(&st);
    }
}

/* Build a file from a header string (padded) and data_len zero bytes. */
static size_t make_file(unsigned char *buf, const char *header, size_t data_len)
{
    size_t n = strlen(header);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    memset(buf + 8 + n, 0, data_len);
    return 8 + n + data_len;
}

static void test_corrupt(void)
{
    static const struct {
        const char *header;
        size_t data;
        const char *clue;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "expected"},
        {"{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype 'F33'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "beyond"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12, "needs 8 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "backwards"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "appears twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "unknown key 'x'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing key 'data_offsets'"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "expected a string value"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "trailing"},
        {"[1,2]", 0, "not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2,3,4,5,6,7,8,9],\"data_offsets\":[0,4]}}", 4, "rank"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999,99999999999],\"data_offsets\":[0,4]}}",
         4, "too large"},
        {"{\"a\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "surrogate"},
    };
    unsigned char buf[512];
    bp_error err;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bp_safetensors st;
        size_t n = make_file(buf, cases[i].header, cases[i].data);
        err.msg[0] = '\0';
        CHECK_MSG(bp_st_parse(&st, buf, n, "bad.safetensors", &err) < 0, "case %zu accepted", i);
        CHECK_MSG(strstr(err.msg, cases[i].clue) && strstr(err.msg, "bad.safetensors"),
                  "case %zu: '%s' lacks '%s'", i, err.msg, cases[i].clue);
        CHECK(st.n_tensors == 0 && st.tensors == NULL);
        bp_st_close(&st);
    }
    /* header length beyond the file, and too-short files */
    memset(buf, 0, 16);
    buf[0] = 200;
    bp_safetensors st;
    CHECK(bp_st_parse(&st, buf, 16, "short", &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "header length 200");
    CHECK(bp_st_parse(&st, buf, 5, "tiny", &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "too short");
    char mbuf[1024];
    CHECK(bp_st_open(&st, tmp_path(mbuf, "does-not-exist"), &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "cannot open");
    /* regression (fuzzing): headers with no tensors at all are valid and empty */
    static const char *const empty[] = {"{}", "{\"__metadata__\":{\"a\":\"b\"}}",
                                        "{\"__metadata__\":{}}"};
    for (size_t i = 0; i < 3; i++) {
        size_t m = make_file(buf, empty[i], 0);
        CHECK_MSG(bp_st_parse(&st, buf, m, "empty", &err) == 0, "%s", err.msg);
        CHECK(st.n_tensors == 0);
        bp_st_close(&st);
    }
    /* a valid header with escapes and spaces is accepted */
    size_t n = make_file(buf, " { \"a\\u00e9\" : { \"shape\" : [ ] , \"dtype\" : \"U8\" , "
                              "\"data_offsets\" : [ 0 , 1 ] } }  ", 1);
    CHECK_MSG(bp_st_parse(&st, buf, n, "ok", &err) == 0, "%s", err.msg);
    CHECK(st.n_tensors == 1 && strcmp(st.tensors[0].name, "a\xc3\xa9") == 0 &&
          st.tensors[0].rank == 0);
    bp_st_close(&st);
}

/* Random damage to a valid file: never a crash, every result consistent. */
static void test_mutations(void)
{
    float w[12] = {0};
    uint16_t h[6] = {0};
    bp_st_entry e[3] = {{"w", BP_DT_F32, 2, {3, 4}, w, sizeof w},
                        {"h", BP_DT_F16, 1, {6}, h, sizeof h},
                        {"z", BP_DT_I8, 1, {0}, NULL, 0}};
    bp_st_meta meta = {"k", "v"};
    bp_error err;
    char fbuf[1024];
    const char *path = tmp_path(fbuf, "fuzz.safetensors");
    CHECK(bp_st_write(path, e, 3, &meta, 1, &err) == 0);
    char *orig = NULL;
    size_t size = 0;
    CHECK(bp_read_file(path, &orig, &size, &err) == 0);
    if (!orig)
        return;
    unsigned char *buf = malloc(size);
    check_rng rng = {0x9e3779b97f4a7c15ULL};
    int accepted = 0, rejected = 0, consistent = 1;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, orig, size);
        size_t n = size;
        int flips = 1 + (int)(check_uniform(&rng) * 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(check_uniform(&rng) * (double)size);
            buf[at] = (unsigned char)(check_uniform(&rng) * 256);
        }
        if (check_uniform(&rng) < 0.2)
            n = (size_t)(check_uniform(&rng) * (double)size);
        bp_safetensors st;
        if (bp_st_parse(&st, buf, n, "fuzz", &err) == 0) {
            accepted++;
            for (size_t i = 0; i < st.n_tensors; i++) {
                const bp_st_tensor *t = &st.tensors[i];
                uint64_t bytes = (uint64_t)bp_st_numel(t) * bp_dtype_size(t->dtype);
                if (t->end - t->begin != bytes || st.data_start + t->end > n)
                    consistent = 0;
            }
        } else {
            rejected++;
            if (st.n_tensors || st.tensors || st.meta)
                consistent = 0;
        }
        bp_st_close(&st);
    }
    printf("mutations: %d accepted, %d rejected\n", accepted, rejected);
    CHECK(consistent);
    CHECK(rejected > 1000 && accepted > 100);
    free(buf);
    free(orig);
}

/* Inputs the fuzzer once broke (tests/fuzz_regressions/safetensors-*): they
 * must parse or fail cleanly (the sanitizer build would flag anything else). */
static void test_fuzz_regressions(void)
{
    DIR *dir = opendir(BP_SOURCE_DIR "/tests/fuzz_regressions");
    struct dirent *e;
    int seen = 0;
    while (dir && (e = readdir(dir))) {
        if (strncmp(e->d_name, "safetensors-", 12) != 0)
            continue;
        char path[2048], *data;
        size_t n;
        bp_error err;
        bp_safetensors st;
        snprintf(path, sizeof path, "%s/tests/fuzz_regressions/%s", BP_SOURCE_DIR, e->d_name);
        if (bp_read_file(path, &data, &n, &err) == 0) {
            bp_st_parse(&st, (const unsigned char *)data, n, e->d_name, &err);
            bp_st_close(&st);
            free(data);
            seen++;
        }
    }
    if (dir)
        closedir(dir);
    CHECK(seen >= 1);
}

int main(void)
{
    const char *base = getenv("BP_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", base ? base : "/tmp/bp_test_safetensors");
    bp_error err;
    if (bp_mkdirs(tmpdir, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_half();
    test_round_trip();
    test_corrupt();
    test_mutations();
    test_fuzz_regressions();
    return check_done();
}
