/*
 * gguffile.c - the GGUF llama-quantize will write for a plan, sized before
 * it is written (gguffile.h).
 */
#include "gguffile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_ggml.h"
#include "formats/gguf.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static double pad(double n, uint32_t a)
{
    return ceil(n / a) * a;
}

/* Keys llama-quantize sets itself (or drops): not copied from the model. */
static int replaced(const char *key)
{
    return !strcmp(key, "general.quantization_version") || !strcmp(key, "general.file_type") ||
           !strncmp(key, "split.", 6) || !strncmp(key, "quantize.imatrix.", 17);
}

int bp_gguf_footprint_of(const char *model, const char *imatrix_arg, const char *dataset,
                         char *const *layers, size_t n_layers, bp_gguf_footprint *f,
                         bp_error *err)
{
    bp_gguf g;
    memset(f, 0, sizeof *f);
    if (!bp_gguf_file(model))
        return 0;                    /* not a GGUF: no footprint */
    if (bp_gguf_open(&g, model, err) < 0)
        return -1;
    char **sorted = bp_malloc((n_layers ? n_layers : 1) * sizeof *sorted, err);
    if (!sorted) {
        bp_gguf_close(&g);
        return -1;
    }
    memcpy(sorted, layers, n_layers * sizeof *sorted);
    qsort(sorted, n_layers, sizeof *sorted, cmp_str);
    double meta = 4 + 4 + 8 + 8;             /* magic, version, tensor and key counts */
    for (size_t i = 0; i < g.n_kv; i++)
        if (!replaced(g.kv[i].key))
            meta += (double)bp_gguf_kv_bytes(&g.kv[i]);
    meta += 2 * (8 + 4 + 4) + strlen("general.quantization_version") + strlen("general.file_type");
    if (imatrix_arg) {               /* four keys: file, dataset, entries, chunks */
        size_t ds = dataset ? strlen(dataset) : 0;
        meta += 8 + strlen("quantize.imatrix.file") + 4 + 8 + fmin(strlen(imatrix_arg), 127);
        if (dataset)
            meta += 8 + strlen("quantize.imatrix.dataset") + 4 + 8 + fmin(ds, 127);
        meta += 8 + strlen("quantize.imatrix.entries_count") + 4 + 4;
        meta += 8 + strlen("quantize.imatrix.chunks_count") + 4 + 4;
    }
    f->alignment = g.alignment;
    for (size_t i = 0; i < g.n_tensors; i++) {
        const bp_gguf_tensor *t = &g.tensors[i];
        double ne = 1;
        for (int d = 0; d < t->n_dims; d++)
            ne *= (double)t->ne[d];
        meta += 8 + strlen(t->name) + 4 + 8.0 * t->n_dims + 4 + 8;
        f->all_elems += ne;
        size_t len = strlen(t->name);
        char stem[128];
        snprintf(stem, sizeof stem, "%.*s", len > 7 && !strcmp(t->name + len - 7, ".weight")
                                                ? (int)(len - 7) : (int)len, t->name);
        char *key = stem;
        if (len > 7 && !strcmp(t->name + len - 7, ".weight") &&
            bsearch(&key, sorted, n_layers, sizeof *sorted, cmp_str))
            continue;                /* planned: its bytes come from the plan */
        f->kept_bytes += pad((double)t->nbytes, g.alignment);
        f->kept_raw += (double)t->nbytes;
    }
    f->meta_bytes = pad(meta, g.alignment);
    f->valid = 1;
    free(sorted);
    bp_gguf_close(&g);
    return 0;
}

double bp_gguf_file_bytes(const bp_gguf_footprint *f, double planned_bits)
{
    return f->meta_bytes + f->kept_bytes + planned_bits / 8.0;
}

double bp_gguf_bpw(const bp_gguf_footprint *f, double planned_bits)
{
    return f->all_elems > 0 ? (8.0 * f->kept_raw + planned_bits) / f->all_elems : 0.0;
}
