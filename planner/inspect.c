/*
 * inspect.c - what a file is and holds (include/bitplan.h's bp_inspect):
 * its tensors and metadata, and what bitplan makes of it -- the layers of a
 * model, what a calibration or statistics file holds, or a quantized-weights
 * file checked layer by layer.
 */
#include "../include/bitplan.h"

#include <stdio.h>
#include <string.h>

#include "formats/qweights.h"
#include "model.h"

int bp_inspect(const char *path, FILE *out, bp_error *err)
{
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
        bp_tensorset_close(&ts);
        return 0;
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

