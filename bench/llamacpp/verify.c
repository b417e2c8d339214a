/*
 * verify.c - a GGUF llama-quantize wrote, tensor by tensor, against
 * bitplan's own quantization of the source model with the same type and
 * importance matrix: the bytes must be the same.
 *
 *   verify SOURCE.gguf QUANTIZED.gguf [IMATRIX]
 *
 * For every tensor of QUANTIZED whose type bitplan quantizes and differs
 * from the source's: the source rows (F32/F16/BF16) quantized by
 * sensitivity/ggml.c with the imatrix's weights (in_sum2 / counts in float,
 * as llama-quantize forms them; none for a tensor the imatrix lacks)
 * compared byte for byte.  Prints one line per type and "N of M tensors
 * identical"; exits 1 when any differs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_ggml.h"
#include "planner/formats/gguf.h"
#include "planner/formats/imatrix.h"
#include "sensitivity/ggml.h"

static const bp_gguf_tensor *find(const bp_gguf *g, const char *name)
{
    for (size_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

static void row_f32(const bp_gguf *g, const bp_gguf_tensor *t, int64_t r, float *out)
{
    int64_t n = t->ne[0];
    const unsigned char *p = g->map + g->data_start + t->offset;
    for (int64_t j = 0; j < n; j++) {
        if (t->type == BP_GGML_F32)
            memcpy(&out[j], p + 4 * (r * n + j), 4);
        else {
            uint16_t h;
            memcpy(&h, p + 2 * (r * n + j), 2);
            out[j] = t->type == BP_GGML_F16 ? bp_f16_to_f32(h) : bp_bf16_to_f32(h);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: verify SOURCE.gguf QUANTIZED.gguf [IMATRIX]\n");
        return 2;
    }
    bp_gguf src, q;
    bp_imatrix im;
    bp_error err;
    int has_im = argc > 3;
    if (bp_gguf_open(&src, argv[1], &err) < 0 || bp_gguf_open(&q, argv[2], &err) < 0 ||
        (has_im && bp_imatrix_open(&im, argv[3], &err) < 0)) {
        fprintf(stderr, "verify: %s\n", err.msg);
        return 2;
    }
    size_t same = 0, total = 0, per_type[BP_GGML_TYPES][2];
    memset(per_type, 0, sizeof per_type);
    for (size_t i = 0; i < q.n_tensors; i++) {
        const bp_gguf_tensor *t = &q.tensors[i], *s = find(&src, t->name);
        if (!s || s->type == t->type || !bp_ggml_can_quantize(t->type) ||
            (s->type != BP_GGML_F32 && s->type != BP_GGML_F16 && s->type != BP_GGML_BF16))
            continue;
        int64_t n = t->ne[0], rows = 1, per;
        for (int d = 1; d < t->n_dims; d++)
            rows *= t->ne[d];
        const bp_imatrix_entry *e = has_im ? bp_imatrix_find(&im, t->name) : NULL;
        int64_t nm = t->n_dims == 3 ? t->ne[2] : 1;     /* experts */
        per = rows / nm;
        if (e && e->n_mat * e->in != n * nm)
            e = NULL;
        float *x = malloc(sizeof(float) * (size_t)n), *qw = e ? malloc(sizeof(float) * (size_t)(n * nm)) : NULL;
        for (int64_t k = 0; e && k < nm; k++) {         /* llama-quantize's weights */
            float c = (float)llround(e->count[e->n_mat > 1 ? k : 0]);
            for (int64_t j = 0; j < n; j++)
                qw[k * n + j] = c > 0 ? (float)e->sum2[k * n + j] / c : 1.0f;
        }
        uint64_t rb = bp_ggml_row_bytes(t->type, n);
        unsigned char *mine = malloc(rb);
        const unsigned char *theirs = q.map + q.data_start + t->offset;
        int ok = 1;
        for (int64_t r = 0; r < rows && ok; r++) {
            row_f32(&src, s, r, x);
            bp_ggml_quantize_row(t->type, x, n, qw ? qw + (r / per) * n : NULL, mine);
            ok = memcmp(mine, theirs + r * rb, rb) == 0;
        }
        same += ok;
        total++;
        per_type[t->type][0]++;
        per_type[t->type][1] += ok;
        if (!ok)
            printf("DIFFERS: %s (%s)\n", t->name, bp_ggml_type_name(t->type));
        free(x), free(qw), free(mine);
    }
    for (int ty = 0; ty < BP_GGML_TYPES; ty++)
        if (per_type[ty][0])
            printf("  %-7s %zu of %zu tensors identical\n", bp_ggml_type_name(ty), per_type[ty][1],
                   per_type[ty][0]);
    printf("%zu of %zu tensors identical\n", same, total);
    bp_gguf_close(&src);
    bp_gguf_close(&q);
    if (has_im)
        bp_imatrix_close(&im);
    return same == total ? 0 : 1;
}
