/*
 * plan.c - plan writers.  Both formats are emitted by hand (fixed key order,
 * fixed number formatting) so identical plans are identical bytes; strings
 * are always quoted and escaped.
 */
#include "plan.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../common/bp_file.h"

/* JSON string escaping is also valid YAML double-quoted escaping. */
static void put_str(FILE *fp, const char *s)
{
    if (!s) {
        fputs("null", fp);
        return;
    }
    fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(fp, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(fp, "\\u%04x", *p);
        else
            fputc(*p, fp);
    }
    fputc('"', fp);
}

/* Numbers: 17 significant digits round-trip exactly; non-finite -> null. */
static void put_num(FILE *fp, double v)
{
    if (!isfinite(v))
        fputs("null", fp);
    else
        fprintf(fp, "%.17g", v);
}

static double avg_bits(const bp_plan *p)
{
    return p->total_params ? (double)p->total_weight_bits / (double)p->total_params : 0.0;
}

/* key: value lines shared by both writers; `json` selects the syntax. */
typedef struct emitter {
    FILE *fp;
    int json;
    int indent;
    int first;                /* no comma needed yet at this level */
} emitter;

static void key(emitter *e, const char *k)
{
    if (e->json)
        fprintf(e->fp, "%s\n%*s\"%s\": ", e->first ? "" : ",", e->indent, "", k);
    else
        fprintf(e->fp, "%*s%s:", e->indent, "", k);
    e->first = 0;
}
/* after a key, before a scalar: YAML wants one space (JSON has it) */
static void key_val(emitter *e, const char *k)
{
    key(e, k);
    if (!e->json)
        fputc(' ', e->fp);
}
static void end_line(emitter *e)
{
    if (!e->json)
        fputc('\n', e->fp);
}
static void kv_str(emitter *e, const char *k, const char *v)
{
    key_val(e, k);
    put_str(e->fp, v);
    end_line(e);
}
static void kv_num(emitter *e, const char *k, double v)
{
    key_val(e, k);
    put_num(e->fp, v);
    end_line(e);
}
static void kv_int(emitter *e, const char *k, long long v)
{
    key_val(e, k);
    fprintf(e->fp, "%lld", v);
    end_line(e);
}
static void kv_bool(emitter *e, const char *k, int v)
{
    key_val(e, k);
    fputs(v < 0 ? "null" : v ? "true" : "false", e->fp);
    end_line(e);
}
static void open_obj(emitter *e, const char *k)
{
    key(e, k);
    fputs(e->json ? "{" : "\n", e->fp);
    e->indent += 2;
    e->first = 1;
}
static void close_obj(emitter *e)
{
    e->indent -= 2;
    if (e->json)
        fprintf(e->fp, "\n%*s}", e->indent, "");
    e->first = 0;
}

static void write_inputs(emitter *e, const bp_plan *p)
{
    open_obj(e, "model");
    kv_str(e, "weights", p->model_path);
    kv_str(e, "weights_sha256", p->model_sha256);
    kv_str(e, "calibration", p->calib_path);
    kv_str(e, "calibration_sha256", p->calib_sha256);
    if (p->imatrix_path) {      /* llama.cpp's importance matrix (a GGUF model) */
        kv_str(e, "imatrix", p->imatrix_path);
        kv_str(e, "imatrix_sha256", p->imatrix_sha256);
    }
    if (p->table_path)
        kv_str(e, "table", p->table_path);
    kv_str(e, "metric", p->metric);
    if (p->metric_scales) {
        kv_str(e, "metric_scales", p->metric_scales);
        kv_str(e, "predicts", p->predicts);
        kv_num(e, "exponent", p->exponent);
    }
    if (p->noise)
        kv_str(e, "noise", p->noise);
    close_obj(e);
}

static void write_budget(emitter *e, const bp_plan *p)
{
    open_obj(e, "budget");
    if (p->budget_avg_bits > 0)
        kv_num(e, "avg_bits", p->budget_avg_bits);
    if (p->budget_max_bytes > 0)
        kv_num(e, "max_bytes", p->budget_max_bytes);
    if (p->budget_max_bops > 0)
        kv_num(e, "max_bops", p->budget_max_bops);
    if (p->budget_max_latency > 0)
        kv_num(e, "max_latency", p->budget_max_latency);
    if (p->budget_max_error >= 0)
        kv_num(e, "max_error", p->budget_max_error);
    kv_str(e, "objective", p->objective_name);
    close_obj(e);
}

static void write_solver(emitter *e, const bp_plan *p)
{
    open_obj(e, "solver");
    kv_str(e, "name", p->solver);
    kv_str(e, "status", p->status);
    kv_num(e, "objective", p->objective);
    kv_num(e, "gap", p->gap);
    key_val(e, "seconds");            /* tenths of a second, printed as such */
    fprintf(e->fp, "%.1f", isfinite(p->seconds) ? p->seconds : 0.0);
    end_line(e);
    close_obj(e);
}

static void write_totals(emitter *e, const bp_plan *p)
{
    open_obj(e, "totals");
    kv_int(e, "layers", (long long)p->n_layers);
    kv_int(e, "params", (long long)p->total_params);
    kv_int(e, "weight_bits", (long long)p->total_weight_bits);
    kv_num(e, "weight_bytes", ceil((double)p->total_weight_bits / 8.0));
    kv_num(e, "avg_bits", avg_bits(p));
    kv_num(e, "bops", p->total_bops);
    if (!isnan(p->total_latency))
        kv_num(e, "latency", p->total_latency);
    if (p->gguf_file_bytes > 0) {    /* what llama-quantize will write */
        kv_num(e, "gguf_file_bytes", p->gguf_file_bytes);
        kv_num(e, "gguf_bpw", p->gguf_bpw);
    }
    kv_num(e, "predicted_error", p->total_error);
    if (p->metric_scales)            /* the objective: (sum of errors)^exponent */
        kv_num(e, "predicted", pow(fmax(p->total_error, 0.0), p->exponent));
    close_obj(e);
}

/* `first` emits the name key (inline after "- " in YAML), `rest` the others. */
static void write_layer(emitter *first, emitter *rest, const bp_plan_layer *l)
{
    kv_str(first, "name", l->name);
    rest->first = first->first;
    kv_int(rest, "wbits", l->wbits);
    kv_int(rest, "abits", l->abits);
    kv_str(rest, "quantizer", l->quantizer);
    kv_str(rest, "granularity", l->granularity);
    kv_int(rest, "group_size", (long long)l->group_size);
    kv_bool(rest, "symmetric", l->symmetric);
    kv_str(rest, "act_kind", l->act_kind);
    kv_str(rest, "act_granularity", l->act_granularity);
    kv_bool(rest, "act_symmetric", l->act_kind ? l->act_symmetric : -1);
    if (l->in_features > 0)
        kv_int(rest, "in_features", (long long)l->in_features);
    else
        kv_str(rest, "in_features", NULL);
    if (l->tied_with)
        kv_str(rest, "tied_with", l->tied_with);
    kv_num(rest, "error", l->error);
    kv_int(rest, "params", (long long)l->params);
    kv_int(rest, "weight_bits", (long long)l->weight_bits);
}

static void write_layers(emitter *e, const bp_plan *p)
{
    key(e, "layers");
    if (!e->json)
        fputs(p->n_layers ? "\n" : " []\n", e->fp);
    else
        fputc('[', e->fp);
    for (size_t i = 0; i < p->n_layers; i++) {
        if (e->json) {
            fprintf(e->fp, "%s\n%*s{", i ? "," : "", e->indent + 2, "");
            emitter item = {e->fp, 1, e->indent + 4, 1};
            write_layer(&item, &item, &p->layers[i]);
            fprintf(e->fp, "\n%*s}", e->indent + 2, "");
        } else {
            fprintf(e->fp, "%*s- ", e->indent + 2, "");
            emitter first = {e->fp, 0, 0, 1}, rest = {e->fp, 0, e->indent + 4, 1};
            write_layer(&first, &rest, &p->layers[i]);
        }
    }
    if (e->json)
        fprintf(e->fp, "\n%*s]", e->indent, "");
}

static void write_plan(FILE *fp, const bp_plan *p, int json)
{
    emitter e = {fp, json, json ? 2 : 0, 1};
    if (json)
        fputc('{', fp);
    else
        fputs("# bitplan quantization plan\n", fp);
    kv_int(&e, "format_version", BP_PLAN_FORMAT_VERSION);
    write_inputs(&e, p);
    write_budget(&e, p);
    write_solver(&e, p);
    write_totals(&e, p);
    write_layers(&e, p);
    if (json)
        fputs("\n}\n", fp);
}

static int write_atomic(const bp_plan *p, const char *path, int json, bp_error *err)
{
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    write_plan(a.fp, p, json);
    return bp_atomic_commit(&a, err);
}

int bp_plan_write_yaml(const bp_plan *p, const char *path, bp_error *err)
{
    return write_atomic(p, path, 0, err);
}

int bp_plan_write_json(const bp_plan *p, const char *path, bp_error *err)
{
    return write_atomic(p, path, 1, err);
}
