/*
 * test_npy.c - the .npy reader: versions 1 and 2, f4 and f2, shapes from
 * scalars to matrices, and the files it must refuse.
 */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "planner/formats/npy.h"

/* magic, version, header (padded with spaces and '\n' to 64), data */
static size_t make_npy(unsigned char *buf, int version, const char *dict, const void *data,
                       size_t nbytes)
{
    size_t pre = version == 1 ? 10 : 12, len = strlen(dict);
    size_t hlen = (pre + len + 1 + 63) / 64 * 64 - pre;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)version, buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + pre, dict, len);
    memset(buf + pre + len, ' ', hlen - len - 1);
    buf[pre + hlen - 1] = '\n';
    memcpy(buf + pre + hlen, data, nbytes);
    return pre + hlen + nbytes;
}

static void test_good(void)
{
    unsigned char buf[1024];
    float m[6] = {1, 2, 3, 4, 5, -6.5f}, out[6];
    bp_error err;
    bp_npy npy;
    size_t n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                        m, sizeof m);
    CHECK_MSG(bp_npy_parse(&npy, buf, n, "m.npy", &err) == 0, "%s", err.msg);
    CHECK(npy.rank == 2 && npy.shape[0] == 2 && npy.shape[1] == 3 && npy.dtype == BP_DT_F32);
    CHECK(bp_npy_numel(&npy) == 6);
    CHECK(bp_npy_read_f32(&npy, out, &err) == 0 && memcmp(out, m, sizeof m) == 0);
    bp_npy_close(&npy);

    uint16_t h[5];
    for (int i = 0; i < 5; i++)
        h[i] = bp_f32_to_f16(0.5f * (float)i);
    n = make_npy(buf, 2, "{\"shape\": (5,), \"fortran_order\": False, \"descr\": \"<f2\"}", h,
                 sizeof h);
    CHECK_MSG(bp_npy_parse(&npy, buf, n, "h.npy", &err) == 0, "%s", err.msg);
    CHECK(npy.rank == 1 && npy.shape[0] == 5 && npy.dtype == BP_DT_F16);
    CHECK(bp_npy_read_f32(&npy, out, &err) == 0 && out[4] == 2.0f);
    bp_npy_close(&npy);

    n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", m, 4);
    CHECK(bp_npy_parse(&npy, buf, n, "s.npy", &err) == 0 && npy.rank == 0 &&
          bp_npy_numel(&npy) == 1);
    bp_npy_close(&npy);
    bp_npy zero;
    memset(&zero, 0, sizeof zero);
    bp_npy_close(&zero);                 /* safe on an empty struct */
}

static void test_bad(void)
{
    static const struct {
        const char *dict;
        size_t nbytes;
        const char *clue;
    } cases[] = {
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, "big-endian"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8, "not supported"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8, "Fortran order"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 8, "needs 12"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 8, "needs 4"},
        {"{'descr': '<f4', 'shape': (2,), }", 8, "needs 'descr'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8, "non-negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8, "unknown key"},
    };
    unsigned char buf[1024] = {0}, zeros[64] = {0};
    bp_error err;
    bp_npy npy;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = make_npy(buf, 1, cases[i].dict, zeros, cases[i].nbytes);
        CHECK_MSG(bp_npy_parse(&npy, buf, n, "bad.npy", &err) < 0, "case %zu accepted", i);
        CHECK_MSG(strstr(err.msg, cases[i].clue) && strstr(err.msg, "bad.npy"),
                  "case %zu: '%s' lacks '%s'", i, err.msg, cases[i].clue);
        bp_npy_close(&npy);
    }
    size_t n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                        zeros, 8);
    CHECK(bp_npy_parse(&npy, buf, 20, "cut.npy", &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "past the end");
    buf[6] = 9;
    CHECK(bp_npy_parse(&npy, buf, n, "v9.npy", &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "version 9");
    CHECK(bp_npy_parse(&npy, (const unsigned char *)"PK\x03\x04 not npy", 15, "z.npy", &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "bad magic");
    float bad[2] = {1.0f, INFINITY};
    n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", bad, 8);
    float out[2];
    CHECK(bp_npy_parse(&npy, buf, n, "inf.npy", &err) == 0);
    CHECK(bp_npy_read_f32(&npy, out, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "infinite");
    bp_npy_close(&npy);
}

int main(void)
{
    test_good();
    test_bad();
    return check_done();
}
