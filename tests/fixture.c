/*
 * fixture.c - writes small random models for the CLI tests:
 *   bp_fixture DIR [SEED]
 * makes DIR/model.safetensors (a 3x3 conv, a depthwise conv with groups in
 * the metadata, two linear layers, a LayerNorm-style vector that is not a
 * layer) and DIR/calib.safetensors (NAME.input for every layer but "head",
 * which is left without calibration on purpose), all with correlated inputs.
 * The same tensors also go to DIR/npy_model/ and DIR/npy_calib/ as one
 * NAME.npy file each (format 1.0, '<f4'), for the .npy directory input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_file.h"

#include "check.h"
#include "planner/formats/safetensors.h"

typedef struct buf {
    float *data;
    size_t n;
} buf;

static buf randn(check_rng *r, size_t n, double scale)
{
    buf b = {malloc(n * sizeof(float)), n};
    for (size_t i = 0; i < n; i++)
        b.data[i] = (float)(scale * check_normal(r));
    return b;
}

/* n x d inputs with a shared factor so columns correlate */
static buf inputs(check_rng *r, size_t n, size_t d)
{
    buf b = {malloc(n * d * sizeof(float)), n * d};
    for (size_t i = 0; i < n; i++) {
        double f = check_normal(r);
        for (size_t j = 0; j < d; j++)
            b.data[i * d + j] = (float)(0.7 * f + 0.5 * check_normal(r) + 0.1);
    }
    return b;
}

static bp_st_entry entry(const char *name, int rank, const int64_t *shape, buf b)
{
    bp_st_entry e = {name, BP_DT_F32, rank, {0}, b.data, b.n * sizeof(float)};
    for (int i = 0; i < rank; i++)
        e.shape[i] = shape[i];
    return e;
}

/* DIR/SUB/NAME.npy for every entry */
static int write_npy_dir(const char *dir, const char *sub, const bp_st_entry *e, size_t n)
{
    char path[4096], dict[256];
    bp_error err;
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    if (bp_mkdirs(path, &err) < 0)
        return fprintf(stderr, "%s\n", err.msg), -1;
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
        for (int d = 0; d < e[i].rank; d++)
            k += snprintf(dict + k, sizeof dict - (size_t)k, "%lld,%s", (long long)e[i].shape[d],
                          d + 1 < e[i].rank ? " " : "");
        k += snprintf(dict + k, sizeof dict - (size_t)k, "), }");
        size_t hlen = ((size_t)k + 10 + 1 + 63) / 64 * 64 - 10;
        snprintf(path, sizeof path, "%s/%s/%s.npy", dir, sub, e[i].name);
        FILE *fp = fopen(path, "wb");
        if (!fp)
            return fprintf(stderr, "%s: cannot write\n", path), -1;
        fwrite("\x93NUMPY\x01\x00", 1, 8, fp);
        fputc((int)(hlen & 255), fp);
        fputc((int)(hlen >> 8), fp);
        fputs(dict, fp);
        for (size_t j = (size_t)k; j + 1 < hlen; j++)
            fputc(' ', fp);
        fputc('\n', fp);
        fwrite(e[i].data, 1, e[i].nbytes, fp);
        if (fclose(fp) != 0)
            return fprintf(stderr, "%s: write failed\n", path), -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bp_fixture DIR [SEED]\n");
        return 2;
    }
    check_rng r = {argc > 2 ? strtoull(argv[2], NULL, 10) : 1};
    char path[4096];
    bp_error err;
    const size_t n = 256;
    buf w1 = randn(&r, 8 * 3 * 3 * 3, 0.3), b1 = randn(&r, 8, 0.1);
    buf w2 = randn(&r, 8 * 1 * 3 * 3, 0.3);                 /* depthwise, groups 8 */
    buf w3 = randn(&r, 16 * 72, 0.1), b3 = randn(&r, 16, 0.1);
    buf ln = randn(&r, 16, 1.0);
    buf w4 = randn(&r, 10 * 16, 0.2);
    bp_st_entry model[] = {
        entry("conv1.weight", 4, (int64_t[]){8, 3, 3, 3}, w1),
        entry("conv1.bias", 1, (int64_t[]){8}, b1),
        entry("dw.weight", 4, (int64_t[]){8, 1, 3, 3}, w2),
        entry("fc.weight", 2, (int64_t[]){16, 72}, w3),
        entry("fc.bias", 1, (int64_t[]){16}, b3),
        entry("norm.weight", 1, (int64_t[]){16}, ln),
        entry("head.weight", 2, (int64_t[]){10, 16}, w4),
    };
    bp_st_meta meta[] = {{"dw.groups", "8"}, {"format", "pt"}};
    buf x1 = inputs(&r, n, 27), x2 = inputs(&r, n, 72), x3 = inputs(&r, n, 72);
    int rc = 0;
    snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
    if (bp_st_write(path, model, 7, meta, 2, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        rc = 1;
    }
    bp_st_entry calib[] = {
        entry("conv1.input", 2, (int64_t[]){n, 27}, x1),
        entry("dw.input", 2, (int64_t[]){n, 72}, x2),
        entry("fc.input", 2, (int64_t[]){n, 72}, x3),
    };
    snprintf(path, sizeof path, "%s/calib.safetensors", argv[1]);
    if (rc == 0 && bp_st_write(path, calib, 3, NULL, 0, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        rc = 1;
    }
    if (rc == 0 && (write_npy_dir(argv[1], "npy_model", model, 7) < 0 ||
                    write_npy_dir(argv[1], "npy_calib", calib, 3) < 0))
        rc = 1;
    buf all[] = {w1, b1, w2, w3, b3, ln, w4, x1, x2, x3};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(all[i].data);
    return rc;
}
