/*
 * fixture.c - writes small random models for the CLI tests:
 *   bp_fixture DIR [SEED]
 * makes DIR/model.safetensors (a 3x3 conv, a depthwise conv with groups in
 * the metadata, two linear layers, a LayerNorm-style vector that is not a
 * layer) and DIR/calib.safetensors (NAME.input for every layer but "head",
 * which is left without calibration on purpose), all with correlated inputs.
 * The same tensors also go to DIR/npy_model/ and DIR/npy_calib/ as one
 * NAME.npy file each (format 1.0, '<f4'), for the .npy directory input.
 *
 *   bp_fixture --gguf DIR [SEED]
 * makes DIR/model.gguf, a small Llama-shaped model as llama.cpp names it
 * (token_embd, two blocks of attention and FFN, norms, output; F16 matrices,
 * F32 norms, general.* and llama.* keys, a tokenizer array), and its
 * importance matrix twice: DIR/model.imatrix.gguf (the GGUF form, with
 * in_sum) and DIR/model.imatrix.dat (the legacy form), both from the same
 * per-column mean squares (a few loud columns, as real activations have).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_file.h"

#include "check.h"
#include "common/bp_ggml.h"
#include "planner/formats/gguf.h"
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

#define G_EMBD 256
#define G_FF 512
#define G_VOCAB 64
#define G_BLOCKS 2

typedef struct gtensor {
    char name[64];
    int64_t ne[3];            /* ne[0] = columns (inputs), ne[1] = rows, ne[2] = experts */
    int f32;                  /* norms */
} gtensor;

static int write_gguf(const char *dir, check_rng *r)
{
    gtensor t[64];
    size_t n = 0;
#define ADD(nm, c, rows, f) (snprintf(t[n].name, sizeof t[n].name, "%s", nm), \
                             t[n].ne[0] = (c), t[n].ne[1] = (rows), t[n].ne[2] = 1, \
                             t[n].f32 = (f), n++)
    ADD("token_embd.weight", G_EMBD, G_VOCAB, 0);
    for (int b = 0; b < G_BLOCKS; b++) {
        static const char *const sq[] = {"attn_q", "attn_k", "attn_v", "attn_output"};
        char nm[64];
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", b);
        ADD(nm, G_EMBD, 1, 1);
        for (int k = 0; k < 4; k++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", b, sq[k]);
            ADD(nm, G_EMBD, G_EMBD, 0);
        }
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", b);
        ADD(nm, G_EMBD, 1, 1);
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate.weight", b);
        ADD(nm, G_EMBD, G_FF, 0);
        snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", b);
        ADD(nm, G_EMBD, G_FF, 0);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", b);
        ADD(nm, G_FF, G_EMBD, 0);
        if (b == 1) {                 /* a router (kept) and two experts (one layer) */
            ADD("blk.1.ffn_gate_inp.weight", G_EMBD, 2, 0);
            ADD("blk.1.ffn_up_exps.weight", G_EMBD, G_FF, 0);
            t[n - 1].ne[2] = 2;
        }
    }
    ADD("output_norm.weight", G_EMBD, 1, 1);
    ADD("output.weight", G_EMBD, G_VOCAB, 0);
#undef ADD
    bp_gguf_wtensor wt[64];
    void *data[64];
    bp_error err;
    for (size_t i = 0; i < n; i++) {
        int64_t cnt = t[i].ne[0] * t[i].ne[1] * t[i].ne[2];
        double scale = t[i].f32 ? 1.0 : 1.0 / sqrt((double)t[i].ne[0]);
        if (t[i].f32) {
            float *f = malloc((size_t)cnt * sizeof *f);
            for (int64_t k = 0; k < cnt; k++)
                f[k] = (float)(1.0 + 0.1 * check_normal(r));
            data[i] = f;
        } else {
            uint16_t *h = malloc((size_t)cnt * sizeof *h);
            for (int64_t k = 0; k < cnt; k++)       /* heavier tails in some rows */
                h[k] = bp_f32_to_f16((float)(scale * check_normal(r) *
                                             ((k / t[i].ne[0]) % 17 == 3 ? 4.0 : 1.0)));
            data[i] = h;
        }
        wt[i] = (bp_gguf_wtensor){t[i].name, t[i].f32 ? BP_GGML_F32 : BP_GGML_F16,
                                  t[i].f32 ? 1 : t[i].ne[2] > 1 ? 3 : 2,
                                  {t[i].ne[0], t[i].ne[1], t[i].ne[2], 1}, data[i]};
    }
    static const char *const tokens[] = {"<unk>", "<s>", "</s>", "a", "b"};
    uint32_t ctx = 128, embd = G_EMBD, ff = G_FF, blocks = G_BLOCKS, heads = 4, ftype = 1;
    float eps = 1e-5f;
    bp_gguf_wkv kv[] = {
        {"general.architecture", BP_GGUF_STRING, 0, 1, "llama"},
        {"general.name", BP_GGUF_STRING, 0, 1, "bitplan test llama"},
        {"general.file_type", BP_GGUF_U32, 0, 1, &ftype},
        {"llama.context_length", BP_GGUF_U32, 0, 1, &ctx},
        {"llama.embedding_length", BP_GGUF_U32, 0, 1, &embd},
        {"llama.feed_forward_length", BP_GGUF_U32, 0, 1, &ff},
        {"llama.block_count", BP_GGUF_U32, 0, 1, &blocks},
        {"llama.attention.head_count", BP_GGUF_U32, 0, 1, &heads},
        {"llama.attention.layer_norm_rms_epsilon", BP_GGUF_F32, 0, 1, &eps},
        {"tokenizer.ggml.tokens", BP_GGUF_ARRAY, BP_GGUF_STRING, 5, tokens},
    };
    char path[4096];
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    int rc = bp_gguf_write(path, kv, sizeof kv / sizeof *kv, wt, n, &err);
    if (rc < 0)
        fprintf(stderr, "%s\n", err.msg);
    for (size_t i = 0; i < n; i++)
        free(data[i]);
    if (rc < 0)
        return rc;
    /* the importance matrix: for every matrix but token_embd (read by rows,
     * never multiplied), sums of squares over `tokens` inputs per column */
    const float tokens_seen = 2048.0f;
    bp_gguf_wtensor it[3 * 64];
    float *sums[64] = {0}, *lin[64] = {0}, count[1] = {tokens_seen};
    float expert_counts[2] = {1500.0f, 548.0f};   /* the router's split of the tokens */
    size_t m = 0, ents = 0;
    char names[3 * 64][80];
    snprintf(path, sizeof path, "%s/model.imatrix.dat", dir);
    FILE *dat = fopen(path, "wb");
    if (!dat)
        return fprintf(stderr, "%s: cannot write\n", path), -1;
    int32_t n_ent = 0;
    for (size_t i = 0; i < n; i++)
        n_ent += !t[i].f32 && strcmp(t[i].name, "token_embd.weight") != 0;
    fwrite(&n_ent, 4, 1, dat);
    for (size_t i = 0; i < n; i++) {
        if (t[i].f32 || !strcmp(t[i].name, "token_embd.weight"))
            continue;
        int64_t c = t[i].ne[0], e = t[i].ne[2];
        const float *cnt = e > 1 ? expert_counts : count;
        sums[ents] = malloc((size_t)(c * e) * sizeof(float));
        lin[ents] = malloc((size_t)(c * e) * sizeof(float));
        for (int64_t j = 0; j < c * e; j++) {
            double ms = (j % 37 == 5 ? 25.0 : 1.0) * (0.5 + check_uniform(r));
            sums[ents][j] = (float)(ms * cnt[j / c]);
            lin[ents][j] = (float)(0.1 * check_normal(r) * cnt[j / c]);
        }
        static const char *const sfx[3] = {".in_sum2", ".counts", ".in_sum"};
        for (int k = 0; k < 3; k++) {
            snprintf(names[m], sizeof names[m], "%.60s%s", t[i].name, sfx[k]);
            it[m] = (bp_gguf_wtensor){names[m], BP_GGML_F32, 2,
                                      {k == 1 ? 1 : c, e, 1, 1},
                                      k == 0 ? (void *)sums[ents] : k == 1 ? (void *)cnt
                                                                           : (void *)lin[ents]};
            m++;
        }
        /* legacy: name, ncall, nval, mean squares x ncall (ncall 4: 512-token chunks;
         * experts one after the other, as llama-imatrix's legacy output stacks them) */
        int32_t len = (int32_t)strlen(t[i].name), ncall = 4, nval = (int32_t)(c * e);
        fwrite(&len, 4, 1, dat);
        fwrite(t[i].name, 1, (size_t)len, dat);
        fwrite(&ncall, 4, 1, dat);
        fwrite(&nval, 4, 1, dat);
        for (int64_t j = 0; j < c * e; j++) {
            float v = sums[ents][j] / cnt[j / c] * (float)ncall;
            fwrite(&v, 4, 1, dat);
        }
        ents++;
    }
    int32_t chunks = 4, dlen = 9;
    fwrite(&chunks, 4, 1, dat);
    fwrite(&dlen, 4, 1, dat);
    fwrite("train.txt", 1, 9, dat);
    rc = fclose(dat) == 0 ? 0 : -1;
    static const char *const datasets[] = {"train.txt"};
    uint32_t chunk_count = 4, chunk_size = 512;
    bp_gguf_wkv ikv[] = {
        {"general.type", BP_GGUF_STRING, 0, 1, "imatrix"},
        {"imatrix.datasets", BP_GGUF_ARRAY, BP_GGUF_STRING, 1, datasets},
        {"imatrix.chunk_count", BP_GGUF_U32, 0, 1, &chunk_count},
        {"imatrix.chunk_size", BP_GGUF_U32, 0, 1, &chunk_size},
    };
    snprintf(path, sizeof path, "%s/model.imatrix.gguf", dir);
    if (rc == 0 && (rc = bp_gguf_write(path, ikv, 4, it, m, &err)) < 0)
        fprintf(stderr, "%s\n", err.msg);
    for (size_t i = 0; i < ents; i++)
        free(sums[i]), free(lin[i]);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--gguf") == 0) {
        check_rng rg = {argc > 3 ? strtoull(argv[3], NULL, 10) : 1};
        return write_gguf(argv[2], &rg) < 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: bp_fixture DIR [SEED] | bp_fixture --gguf DIR [SEED]\n");
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
