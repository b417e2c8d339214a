/*
 * inspect.c - what a file is and holds (include/bitplan.h's bp_inspect):
 * its tensors and metadata, and what bitplan makes of it -- the layers of a
 * model, what a calibration or statistics file holds, or a quantized-weights
 * file checked layer by layer; for llama.cpp's files, a GGUF model (its
 * keys, tensors, types and size) and an importance matrix (GGUF or legacy).
 */
#include "../include/bitplan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_file.h"
#include "../common/bp_ggml.h"
#include "../common/bp_llama.h"
#include "formats/gguf.h"
#include "formats/imatrix.h"
#include "formats/qweights.h"
#include "model.h"
#include "validate.h"

/* An importance matrix (GGUF or legacy .dat), validated. */
static int inspect_imatrix(const char *path, FILE *out, bp_error *err)
{
    bp_imatrix im;
    if (bp_imatrix_open(&im, path, err) < 0)
        return -1;
    double tokens = 0.0;
    int64_t experts = 0;
    for (size_t i = 0; i < im.n; i++) {
        tokens = tokens > im.e[i].count[0] ? tokens : im.e[i].count[0];
        experts += im.e[i].n_mat > 1;
    }
    fprintf(out, "%s: an importance matrix (model.imatrix), %s form: %zu entries", path,
            im.legacy ? "legacy .dat" : "GGUF", im.n);
    if (experts)
        fprintf(out, " (%" PRId64 " with stacked experts)", experts);
    fprintf(out, "; %s %.0f\n", im.legacy ? "calls" : "tokens", tokens);
    if (im.chunks >= 0)
        fprintf(out, "chunks: %" PRId64 "%s", im.chunks, im.chunk_size >= 0 ? "" : "\n");
    if (im.chunk_size >= 0)
        fprintf(out, " of %" PRId64 " tokens\n", im.chunk_size);
    if (im.dataset)
        fprintf(out, "dataset: %s\n", im.dataset);
    for (size_t i = 0; i < im.n; i++)
        fprintf(out, "  %-48s in %-7" PRId64 " matrices %-4" PRId64 "%s\n", im.e[i].name,
                im.e[i].in, im.e[i].n_mat, im.e[i].sum ? " +in_sum" : "");
    fprintf(out, "each entry: per column the mean squared input (in_sum2 / counts): the weights "
            "llama.cpp's quantizers give each column's error, and bitplan's diagonal "
            "statistics\n");
    bp_imatrix_close(&im);
    return 0;
}

/* A GGUF: keys, tensors with their ggml types, the file's size and bits per
 * weight as llama.cpp counts them, and the layers bitplan would plan. */
static int inspect_gguf(const char *path, FILE *out, bp_error *err)
{
    bp_gguf g;
    if (bp_gguf_open(&g, path, err) < 0)
        return -1;
    char *type = bp_gguf_string(&g, "general.type");
    int im = type && !strcmp(type, "imatrix");
    free(type);
    if (im) {
        bp_gguf_close(&g);
        return inspect_imatrix(path, out, err);
    }
    fprintf(out, "%s: GGUF version %" PRIu32 ", %zu keys, %zu tensors, alignment %" PRIu32 "\n",
            path, g.version, g.n_kv, g.n_tensors, g.alignment);
    fprintf(out, "metadata:\n");
    for (size_t i = 0; i < g.n_kv; i++) {
        char *v = bp_gguf_render(&g.kv[i], 96);
        fprintf(out, "  %-44s %s\n", g.kv[i].key, v ? v : "?");
        free(v);
    }
    uint64_t elems = 0, bytes = 0, n_types[BP_GGML_TYPES] = {0}, planned = 0, quantized = 0;
    fprintf(out, "tensors:\n");
    for (size_t i = 0; i < g.n_tensors; i++) {
        const bp_gguf_tensor *t = &g.tensors[i];
        uint64_t ne = 1;
        fprintf(out, "  %-44s %-7s [", t->name, bp_ggml_type_name(t->type));
        for (int d = 0; d < t->n_dims; d++) {
            fprintf(out, "%s%" PRId64, d ? ", " : "", t->ne[d]);
            ne *= (uint64_t)t->ne[d];
        }
        int q = bp_llama_quantizable(t->name, t->n_dims);
        fprintf(out, "]%s\n", q ? "" : "  (llama-quantize keeps it)");
        elems += ne;
        bytes += t->nbytes;
        n_types[t->type]++;
        planned += q;
        quantized += bp_ggml_is_quantized(t->type);
    }
    fprintf(out, "types:");
    for (int t = 0; t < BP_GGML_TYPES; t++)
        if (n_types[t])
            fprintf(out, " %s x%" PRIu64, bp_ggml_type_name(t), n_types[t]);
    fprintf(out, "\nsize: %zu bytes, tensor data %" PRIu64 " bytes, %.4f bits per weight "
            "(llama.cpp's BPW: tensor bits / all elements)\n", g.size, bytes,
            elems ? 8.0 * (double)bytes / (double)elems : 0.0);
    fprintf(out, "layers (tensors llama-quantize quantizes): %" PRIu64 "%s\n", planned,
            quantized ? "; already quantized: bitplan plans from the F16/BF16/F32 GGUF" : "");
    bp_gguf_close(&g);
    return 0;
}

int bp_inspect(const char *path, FILE *out, bp_error *err)
{
    const unsigned char *map;
    size_t size;
    int gguf = 0;
    if (bp_map_file(path, 0, "a file", &map, &size, NULL) == 0) {
        gguf = bp_gguf_is(map, size);
        bp_unmap_file(map, size);
    }
    if (gguf)
        return inspect_gguf(path, out, err);
    if (bp_imatrix_detect(path))
        return inspect_imatrix(path, out, err);
    if (!gguf && bp_map_file(path, 0, "a file", &map, &size, NULL) == 0)
        bp_unmap_file(map, size);
    bp_tensorset ts;
    bp_model m;
    bp_error quiet;
    char *all[] = {"*"};
    if (bp_tensorset_open(&ts, path, err) < 0)
        return -1;
    size_t n = bp_tensorset_count(&ts);
    fprintf(out, "%s: %zu tensors\n", path, n);
    for (size_t i = 0; i < n; i++) {
        bp_tensor_ref t = bp_tensorset_get(&ts, i);
        fprintf(out, "  %-40s %-5s [", t.name, bp_dtype_name(t.dtype));
        for (int d = 0; d < t.rank; d++)
            fprintf(out, "%s%lld", d ? ", " : "", (long long)t.shape[d]);
        fprintf(out, "]\n");
    }
    if (!ts.is_dir && ts.st.n_meta) {
        fprintf(out, "metadata:\n");
        for (size_t i = 0; i < ts.st.n_meta; i++)
            fprintf(out, "  %-40s %s\n", ts.st.meta[i].key, ts.st.meta[i].value);
    }
    const char *fmt = bp_tensorset_meta(&ts, "format");
    int quantized = fmt && strncmp(fmt, "bitplan-quantized/", 18) == 0;
    /* a calibration or statistics file: what it holds, for which layers */
    size_t weights = 0, inputs = 0, grad2 = 0, fisher = 0, margin = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = bp_tensorset_get(&ts, i).name, *dot = strrchr(name, '.');
        weights += dot && !strcmp(dot, ".weight");
        inputs += dot && !strcmp(dot, ".input");
        grad2 += dot && !strcmp(dot, ".grad2");
        fisher += dot && (!strcmp(dot, ".fisher") || !strcmp(dot, ".fisher_u"));
        margin += dot && (!strcmp(dot, ".margin") || !strcmp(dot, ".margin_u"));
    }
    int stats = fmt && !strcmp(fmt, "bitplan-stats");
    if (!quantized && !weights && (inputs || grad2 || fisher || margin || stats)) {
        if (stats)
            fprintf(out, "a statistics file (model.calibration): sums of the inputs' squares and "
                   "products, read by bitplan in place of rows\n");
        else
            fprintf(out, "a calibration file (model.calibration): inputs of %zu layers (NAME.input), "
                   "%zu with gradients squared (NAME.grad2), %zu with an output Fisher, %zu "
                   "with a decision Fisher\n", inputs, grad2, fisher, margin);
        size_t checked;               /* what the mathematics relies on (validate.h) */
        int rc = bp_validate_calibration_file(&ts, &checked, err);
        if (rc == 0)
            fprintf(out, "checked: %zu statistics sets, Fishers and grad2: symmetric, positive "
                    "semi-definite, counts and magnitudes consistent\n", checked);
        bp_tensorset_close(&ts);
        return rc;
    }
    bp_tensorset_close(&ts);
    if (quantized) {              /* a plan's quantized weights: check them */
        fprintf(out, "bitplan quantized weights:\n");
        return bp_check_quantized(path, out, err);
    }
    if (bp_model_open(&m, path, NULL, NULL, all, 1, NULL, 0, &quiet) < 0) {
        fprintf(out, "layers: none (%s)\n", quiet.msg);
        return 0;
    }
    int64_t total = 0;
    fprintf(out, "layers: %zu\n", m.n_layers);
    for (size_t i = 0; i < m.n_layers; i++) {
        const bp_layer_desc *d = &m.layers[i];
        char kind[64];
        if (d->is_conv)
            snprintf(kind, sizeof kind, "conv %dx%d", d->kh, d->kw);
        else
            snprintf(kind, sizeof kind, "linear");
        fprintf(out, "  %-40s %-10s out %-6lld in %-7lld params %-10lld%s\n", d->name, kind,
               (long long)d->out, (long long)d->in, (long long)(d->out * d->in),
               d->bias >= 0 ? " +bias" : "");
        total += d->out * d->in;
    }
    fprintf(out, "total params in layers: %lld\n", (long long)total);
    bp_model_close(&m);
    return 0;
}

