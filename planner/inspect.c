/*
 * inspect.c - what a file is and holds (include/bitplan.h's bp_inspect):
 * its tensors and metadata, and what bitplan makes of it -- the layers of a
 * model, what a calibration or statistics file holds, or a quantized-weights
 * file checked layer by layer; for llama.cpp's files, a GGUF model (its
 * keys, tensors, types and size) and an importance matrix (GGUF or legacy);
 * and every text file bitplan reads or writes -- configs, plans, tables and
 * their keys and journals, sweeps, scales, latency tables, grids and the
 * four exports -- read with the reader bitplan itself uses, so a file that
 * inspect describes is one bitplan accepts.  Anything else is said to be
 * none of these (exit 1), never misread as a model.
 */
#include "../include/bitplan.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bp_file.h"
#include "../common/bp_ggml.h"
#include "../common/bp_llama.h"
#include "../sensitivity/table.h"
#include "config.h"
#include "formats/export.h"
#include "formats/gguf.h"
#include "formats/imatrix.h"
#include "formats/latency.h"
#include "formats/qweights.h"
#include "formats/scales.h"
#include "formats/yamltree.h"
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

/* ---- text files ---------------------------------------------------------- */

/* Text, not a binary format: the first 4 KiB are UTF-8 without control
 * characters other than tab, newline and carriage return.  (A safetensors
 * file starts with its header's length in 8 little-endian bytes, whose high
 * bytes are zero; GGUF and the legacy imatrix are recognised before this.) */
static int looks_like_text(const unsigned char *p, size_t n)
{
    size_t lim = n < 4096 ? n : 4096;
    if (!lim)
        return 0;
    for (size_t i = 0; i < lim;) {
        unsigned c = p[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                return 0;
            if (c == 0x7f)
                return 0;
            i++;
            continue;
        }
        size_t k = c >= 0xf0 && c < 0xf5 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 && c < 0xe0 ? 1 : 0;
        if (!k || c >= 0xf5)
            return 0;
        for (size_t j = 1; j <= k; j++)
            if (i + j < n && (p[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

/* The value of a top-level mapping key, or NULL. */
static const bp_ynode *ykey(const bp_ynode *m, const char *key)
{
    if (!m || m->type != BP_Y_MAP)
        return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (m->items[2 * i]->type == BP_Y_SCALAR && !strcmp(m->items[2 * i]->str, key))
            return m->items[2 * i + 1];
    return NULL;
}

static const char *yscalar(const bp_ynode *m, const char *key)
{
    const bp_ynode *v = ykey(m, key);
    return v && v->type == BP_Y_SCALAR ? v->str : NULL;
}

/* A plan (YAML or JSON), read as every consumer reads it. */
static int inspect_plan(const char *path, const bp_ynode *root, FILE *out, bp_error *err)
{
    bp_export_plan p;
    if (bp_export_read_plan(path, &p, err) < 0)
        return -1;
    int ggml = 0, counts[17][17] = {{0}};
    for (size_t i = 0; i < p.n; i++) {
        ggml |= p.layers[i].ggml;
        counts[p.layers[i].wbits][p.layers[i].abits]++;
    }
    fprintf(out, "%s: a bitplan plan (format_version 1) of %zu layers%s\n", path, p.n,
            ggml ? ", in llama.cpp types (planned from a GGUF)" : "");
    if (p.model)
        fprintf(out, "model: %s\n", p.model);
    if (p.imatrix)
        fprintf(out, "imatrix: %s\n", p.imatrix);
    fprintf(out, "layers by weight/activation bits:");
    for (int w = 0; w <= 16; w++)
        for (int a = 0; a <= 16; a++)
            if (counts[w][a])
                fprintf(out, " %d/%d x%d", w, a, counts[w][a]);
    fputc('\n', out);
    const bp_ynode *totals = ykey(root, "totals");
    static const char *keys[] = {"avg_bits", "weight_bytes", "predicted_error", "gguf_file_bytes",
                                 "gguf_bpw", "bops"};
    if (totals) {
        fprintf(out, "totals:");
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            if (yscalar(totals, keys[k]))
                fprintf(out, " %s %s", keys[k], yscalar(totals, keys[k]));
        fputc('\n', out);
    }
    fprintf(out, "use: bitplan export %s --format F; bitplan run CONFIG --choices %s\n", path, path);
    bp_export_plan_free(&p);
    return 0;
}

/* A config, loaded (and so checked) as run loads it. */
static int inspect_config(const char *path, FILE *out, bp_error *err)
{
    bp_config c;
    if (bp_config_load(&c, path, err) < 0)
        return -1;
    const char *files[][2] = {{"model.weights", c.weights}, {"model.calibration", c.calibration},
                              {"model.imatrix", c.imatrix}};
    for (size_t i = 0; i < 3; i++)
        if (files[i][1] && access(files[i][1], R_OK) != 0) {
            int e = errno;
            bp_fail(err, "%s: %s: %s: %s", path, files[i][0], files[i][1], strerror(e));
            bp_config_free(&c);
            return -1;
        }
    fprintf(out, "%s: a bitplan config, checked: model %s\n", path, c.weights);
    fprintf(out, "output.dir: %s\n", c.out_dir);
    fprintf(out, "output.formats:%s%s", c.write_yaml ? " yaml" : "", c.write_json ? " json" : "");
    for (int f = 0; f < BP_EXPORT_COUNT; f++)
        if (c.exports & (1u << f))
            fprintf(out, " %s", bp_export_names[f]);
    fputc('\n', out);
    if (c.weights_out)
        fprintf(out, "output.weights: %s\n", c.weights_out);
    fprintf(out, "use: bitplan run %s\n", path);
    bp_config_free(&c);
    return 0;
}

/* The first line of the text, without its end. */
static void first_line(const unsigned char *p, size_t n, char *line, size_t cap)
{
    size_t k = 0;
    if (n >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)   /* a byte-order mark */
        p += 3, n -= 3;
    while (k < n && k + 1 < cap && p[k] != '\n' && p[k] != '\r')
        line[k] = (char)p[k], k++;
    line[k] = '\0';
}

/* Does the CSV header line hold every one of the comma-separated `cols`? */
static int has_columns(const char *header, const char *cols)
{
    char want[64];
    for (const char *c = cols; *c;) {
        size_t n = strcspn(c, ",");
        snprintf(want, sizeof want, "%.*s", (int)n, c);
        int found = 0;
        for (const char *h = header; *h && !found;) {
            size_t m = strcspn(h, ",");
            found = m == n && !strncmp(h, want, n);
            h += m + (h[m] == ',');
        }
        if (!found)
            return 0;
        c += n + (c[n] == ',');
    }
    return 1;
}

static size_t count_lines(const unsigned char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] == '\n';
    return k + (n && p[n - 1] != '\n');
}

/* A sensitivity table (or measured deltas), read as solve --table reads it. */
static int inspect_table(const char *path, FILE *out, bp_error *err)
{
    bp_table t;
    bp_table_init(&t);
    if (bp_table_read_csv(&t, path, err) < 0) {
        bp_table_free(&t);
        return -1;
    }
    size_t layers = 0;
    int wmin = 99, wmax = 0;
    for (size_t i = 0; i < t.n; i++) {
        size_t j = 0;
        while (j < i && strcmp(t.rows[j].layer, t.rows[i].layer))
            j++;
        layers += j == i;
        wmin = t.rows[i].wbits < wmin ? t.rows[i].wbits : wmin;
        wmax = t.rows[i].wbits > wmax ? t.rows[i].wbits : wmax;
    }
    fprintf(out, "%s: a sensitivity table: %zu rows, %zu layers, weight bits %d..%d\n", path, t.n,
            layers, t.n ? wmin : 0, wmax);
    fprintf(out, "metrics measured:");
    for (int m = 0; m < BP_METRIC_COUNT; m++) {
        size_t have = 0;
        for (size_t i = 0; i < t.n; i++)
            have += !isnan(t.rows[i].value[m]);
        if (have)
            fprintf(out, " %s%s", bp_metric_name((bp_metric)m), have < t.n ? " (some rows)" : "");
    }
    fprintf(out, "\nuse: bitplan solve --table %s --avg-bits X (or run CONFIG --errors %s)\n", path,
            path);
    bp_table_free(&t);
    return 0;
}

static int inspect_text(const char *path, const unsigned char *p, size_t n, FILE *out,
                        bp_error *err)
{
    char line[1024];
    first_line(p, n, line, sizeof line);
    /* bitplan's own small files */
    if (!strncmp(line, "key ", 4) && n > 5) {
        const char *nl = memchr(p, '\n', n);
        const char *second = nl ? nl + 1 : "";
        if (!strncmp(second, "csv ", 4)) {
            fprintf(out, "%s: the key of a cached sensitivity table (the hashes of what it was "
                    "measured from, and of the table): a table whose key differs is measured "
                    "again\n", path);
            return 0;
        }
        if (!strncmp(second, "layer,wbits,", 12)) {
            size_t done = 0;
            for (const char *q = second; (q = strstr(q, "\n#done ")); q++)
                done++;
            fprintf(out, "%s: the journal of an interrupted sensitivity run: %zu layers complete "
                    "(the next run with the same inputs resumes after them)\n", path, done);
            return 0;
        }
    }
    /* CSV files: by their header */
    if (strchr(line, ',') && !strchr(line, ':') && !strchr(line, '{')) {
        if (has_columns(line, "layer,wbits,abits,error,params"))
            return inspect_table(path, out, err);
        size_t rows = count_lines(p, n);
        rows = rows ? rows - 1 : 0;
        if (has_columns(line, "group,choice,layer,wbits,abits"))
            return fprintf(out, "%s: the program the solver sees (bitplan candidates): %zu "
                           "choices\n", path, rows), 0;
        if (has_columns(line, "kind,budget,status,weight_bytes"))
            return fprintf(out, "%s: a sweep's frontier (bitplan sweep): %zu plans and "
                           "baselines\n", path, rows), 0;
        if (has_columns(line, "weight_bytes,avg_bits,predicted_error,on_hull"))
            return fprintf(out, "%s: a sweep's exact Pareto set (bitplan sweep): %zu plans\n",
                           path, rows), 0;
        if (has_columns(line, "layer,metric,objective,scale")) {
            bp_scales sc;
            if (bp_scales_load(&sc, path, err) < 0)
                return -1;
            fprintf(out, "%s: metric scales (--metric-scales): %zu rows, objective %s, "
                    "exponent %g\n", path, sc.n, sc.objective, sc.exponent);
            bp_scales_free(&sc);
            return 0;
        }
        if (has_columns(line, "layer,wbits,abits,latency")) {
            bp_latency lt;
            if (bp_latency_load(&lt, path, err) < 0)
                return -1;
            fprintf(out, "%s: a latency table (--latency): %zu rows\n", path, lt.n);
            bp_latency_free(&lt);
            return 0;
        }
    }
    if (!strncmp(line, "<svg", 4) && n < (16u << 20)) {
        char *t = strndup((const char *)p, n);
        int ours = t && strstr(t, ">bitplan sweep over ");
        free(t);
        if (ours)
            return fprintf(out, "%s: a sweep's frontier plot (bitplan sweep)\n", path), 0;
    }
    /* llama-quantize's files from the llamacpp export */
    if (strstr(line, "llama-quantize"))
        return fprintf(out, "%s: the llama-quantize command of a llamacpp export (run it with "
                       "sh)\n", path), 0;
    if (!strncmp(line, "--tensor-type", 13))
        return fprintf(out, "%s: llama-quantize arguments of a llamacpp export (--tensor-type "
                       "PATTERN=TYPE ...)\n", path), 0;
    int tokens = 0, typed = 1;
    for (size_t i = 0; i < n && typed;) {
        while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t' || p[i] == '\r'))
            i++;
        size_t j = i;
        while (j < n && !(p[j] == ' ' || p[j] == '\n' || p[j] == '\t' || p[j] == '\r'))
            j++;
        if (j > i) {
            const unsigned char *eq = memchr(p + i, '=', j - i);
            char type[16];
            snprintf(type, sizeof type, "%.*s", eq ? (int)(p + j - eq - 1) : 0,
                     eq ? (const char *)eq + 1 : "");
            typed = eq && eq > p + i && bp_ggml_type_parse(type) >= 0;
            tokens++;
        }
        i = j;
    }
    if (typed && tokens)
        return fprintf(out, "%s: a llamacpp export (llama-quantize --tensor-type-file): %d "
                       "PATTERN=TYPE rules\n", path, tokens), 0;
    /* YAML and JSON: by their keys */
    bp_ynode *root = NULL;
    bp_error perr;
    int rc = -1;
    if (n <= (64u << 20) && bp_yaml_parse((const char *)p, n, path, &root, &perr) == 0 && root &&
        root->type == BP_Y_MAP) {
        const bp_ynode *qs = ykey(root, "quant_stage");
        if (ykey(root, "format_version") && ykey(root, "layers"))
            rc = inspect_plan(path, root, out, err);
        else if (yscalar(root, "format") && !strcmp(yscalar(root, "format"), "bitplan-grids-v1")) {
            const bp_ynode *l = ykey(root, "layers");
            fprintf(out, "%s: activation grids (bitplan grids) for %zu layers, for "
                    "tools/capture.py --stats\n", path, l && l->type == BP_Y_SEQ ? l->n : 0);
            rc = 0;
        } else if (ykey(root, "model") && (ykey(root, "candidates") || ykey(root, "budget") ||
                                           ykey(root, "output")))
            rc = inspect_config(path, out, err);
        else if (qs) {
            fprintf(out, "%s: an llm-compressor recipe (llmcompressor export)\n", path);
            rc = 0;
        } else if (yscalar(root, "quant_method") && ykey(root, "bits")) {
            const bp_ynode *d = ykey(root, "dynamic");
            fprintf(out, "%s: a GPTQModel quantize_config.json (gptqmodel export): %s bits by "
                    "default, %zu per-layer rules\n", path, yscalar(root, "bits"),
                    d && d->type == BP_Y_MAP ? d->n : 0);
            rc = 0;
        } else {
            size_t layers = 0;
            for (size_t i = 0; i < root->n; i++)
                layers += ykey(root->items[2 * i + 1], "act_data_type") != NULL;
            if (layers && layers == root->n) {
                fprintf(out, "%s: an AutoRound layer_config (autoround export): %zu layers\n",
                        path, layers);
                rc = 0;
            }
        }
        bp_ynode_free(root);
        if (rc == 0 || err->msg[0])
            return rc;
    } else if (root)
        bp_ynode_free(root);
    return bp_fail(err, "%s: not a file bitplan reads or writes (a text file starting \"%.40s\"): "
                   "expected a model, calibration, statistics, imatrix, quantized weights, config, "
                   "plan, table, sweep, scales, latency, grids or export file", path, line);
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
    if (bp_map_file(path, 0, "a file", &map, &size, NULL) == 0) {
        if (looks_like_text(map, size)) {
            err->msg[0] = '\0';
            int rc = inspect_text(path, map, size, out, err);
            bp_unmap_file(map, size);
            return rc;
        }
        bp_unmap_file(map, size);
    }
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

