/*
 * session.c - the library's entry points (include/bitplan.h): a session
 * holds one config (or a bare table) with the command's overrides, runs the
 * stages in order -- the sensitivity table (measure.c), the errors the
 * program minimises (errors.c), the solve (problem.c) and the plan
 * (assemble.c) -- and writes a run's outputs as one set: the plan, its JSON,
 * the exports and the quantized weights (quantize.c), under the output
 * directory's lock.  Nothing here prints.
 */
#include "../include/bitplan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "../common/bp_file.h"
#include "../common/bp_profile.h"
#include "assemble.h"
#include "bp_version.h"
#include "cache.h"
#include "config.h"
#include "distrib.h"
#include "errors.h"
#include "formats/gguf.h"
#include "formats/imatrix.h"
#include "formats/export.h"
#include "formats/latency.h"
#include "measure.h"
#include "problem.h"
#include "quantize.h"
#include "session.h"

const char *bp_version(void)
{
    return BP_VERSION;
}

int bp_check_name(const char *kind, const char *name, bp_error *err)
{
    if (!strcmp(kind, "metric"))
        return bp_metric_parse(name) >= 0 || !strcmp(name, "auto")
                   ? 0 : bp_fail(err, "expected auto, mse, relative, weight, hawq, fisher, kfac "
                                 "or margin");
    if (!strcmp(kind, "quantizer"))
        return bp_wquantizer_parse(name) >= 0 ? 0
                                              : bp_fail(err, "expected rtn, gptq, squant or erq");
    if (!strcmp(kind, "format"))
        return bp_export_format(name) >= 0 ? 0 : bp_export_unknown(name, err);
    return bp_fail(err, "unknown kind of name '%s'", kind);
}

int bp_parse_values(const char *opt, const char *spec, double **values, size_t *n,
                    bp_error *err)
{
    return bp_sweep_parse_values(opt, spec, values, n, err);
}

void bp_interrupt(void)
{
    bp_interrupt_requested = 1;
}

/* ---- opening and closing ---------------------------------------------------- */

static int copy_str(char **dst, const char *src, bp_error *err)
{
    *dst = NULL;
    return !src || (*dst = bp_strdup(src, err)) ? 0 : -1;
}

static bp_session *session_new(const bp_options *o, bp_error *err)
{
    bp_session *s = bp_calloc(1, sizeof *s, err);
    if (!s)
        return NULL;
    s->lock_fd = -1;
    s->set_lock_fd = -1;
    s->exponent = 1.0;
    if (o)
        s->o = *o;
    if (copy_str(&s->metric, s->o.metric, err) < 0 ||
        copy_str(&s->metric_scales, s->o.metric_scales, err) < 0 ||
        copy_str(&s->errors, s->o.errors, err) < 0 ||
        copy_str(&s->choices, s->o.choices, err) < 0 ||
        copy_str(&s->latency_path, s->o.latency, err) < 0) {
        bp_close(s);
        return NULL;
    }
    return s;
}

/* --choices PLAN: every layer of that plan keeps its candidate. */
static int load_choices(bp_session *s, bp_error *err)
{
    if (!s->choices)
        return 0;
    if (bp_export_read_plan(s->choices, &s->chosen, err) < 0)
        return -1;
    s->has_chosen = 1;
    if (!(s->fixed = bp_calloc(s->chosen.n ? s->chosen.n : 1, sizeof *s->fixed, err)))
        return -1;
    for (size_t i = 0; i < s->chosen.n; i++) {
        const bp_export_layer *l = &s->chosen.layers[i];
        s->fixed[i] = (bp_choice){l->name, l->wbits, l->abits, l->quantizer};
    }
    s->n_fixed = s->chosen.n;
    return 0;
}

int bp_open(bp_session **out, const char *config, const bp_options *o, bp_error *err)
{
    *out = NULL;
    if (o && o->metric && bp_metric_parse(o->metric) < 0 && strcmp(o->metric, "auto") != 0)
        return bp_fail(err, "metric '%s': expected auto, mse, relative, weight, hawq, fisher, "
                       "kfac or margin", o->metric);
    bp_session *s = session_new(o, err);
    if (!s)
        return -1;
    if (bp_config_load(&s->cfg, config, err) < 0) {
        bp_close(s);
        return -1;
    }
    s->has_config = 1;
    bp_config *cfg = &s->cfg;
    if (s->metric && !(cfg->metric_auto = strcmp(s->metric, "auto") == 0))
        cfg->metric = (bp_metric)bp_metric_parse(s->metric);
    if (s->metric_scales) {
        free(cfg->metric_scales);
        free(cfg->metric_scales_as_written);
        cfg->metric_scales = bp_strdup(s->metric_scales, err);
        cfg->metric_scales_as_written = bp_strdup(s->metric_scales, err);
        if (!cfg->metric_scales || !cfg->metric_scales_as_written) {
            bp_close(s);
            return -1;
        }
    }
    if (load_choices(s, err) < 0) {
        bp_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

int bp_open_table(bp_session **out, const char *table, const bp_options *o, bp_error *err)
{
    *out = NULL;
    bp_session *s = session_new(o, err);
    if (!s)
        return -1;
    if (copy_str(&s->table_path, table, err) < 0 ||
        bp_table_read_csv(&s->sens.table, table, err) < 0) {
        bp_table_init(&s->sens.table);
        bp_close(s);
        return -1;
    }
    s->measured = 1;
    *out = s;
    return 0;
}

void bp_close(bp_session *s)
{
    if (!s)
        return;
    if (s->measured && s->has_config)
        bp_sens_result_free(&s->sens);
    else if (s->measured)
        bp_table_free(&s->sens.table);
    if (s->has_config)
        bp_config_free(&s->cfg);
    if (s->has_latency)
        bp_latency_free(&s->latency);
    if (s->has_chosen)
        bp_export_plan_free(&s->chosen);
    free(s->fixed);
    bp_sweep_free(&s->sw);
    free(s->sw_csv);
    free(s->sw_svg);
    free(s->sw_pareto);
    free(s->written);
    free(s->weights_written);
    free(s->metric);
    free(s->metric_scales);
    free(s->errors);
    free(s->choices);
    free(s->latency_path);
    free(s->table_path);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (s->set_lock_fd >= 0)
        close(s->set_lock_fd);
    free(s->set_dir);
    free(s);
}

/* ---- progress ------------------------------------------------------------------ */

/* The internal per-stage steps, to the caller's progress callback. */
static void step(void *ctx, size_t done, size_t total, const char *what)
{
    bp_session *s = ctx;
    if (s->o.progress)
        s->o.progress(s->o.progress_ctx, s->stage, done, total, what);
}

/* ---- the sensitivity table ---------------------------------------------------- */

/* The run lock of output.dir, held until the session closes (one run writes
 * into a directory at a time); taking it completes a commit a killed run left
 * half done and removes the temporaries killed runs left. */
int bp_session_lock(bp_session *s, bp_error *err)
{
    const bp_config *cfg = &s->cfg;
    if (s->lock_fd >= 0)
        return 0;
    if (bp_mkdirs(cfg->out_dir, err) < 0)
        return -1;
    char *names[BP_OUTPUT_NAMES_MAX + 2];
    size_t n = bp_config_output_names(cfg, names);
    names[n] = (char *)".bitplan-hashes", names[n + 1] = NULL;    /* the hash memo */
    int rc = bp_dir_lock(cfg->out_dir, (const char *const *)names, &s->lock_fd, err);
    names[n] = NULL;
    bp_config_output_names_free(names);
    return rc;
}

/* metric_scales: errors in the objective's units; not with --errors, whose
 * errors are measured already.  Without either, a noisy Fisher's layer
 * scales are shrunk (noise: shrink). */
static int apply_scales(bp_session *s, bp_error *err)
{
    const bp_config *cfg = &s->cfg;
    int shrunk;
    if (!s->errors && !cfg->metric_scales && cfg->noise_shrink)
        return bp_shrink_noisy(&s->sens.table, &s->sens, cfg->metric, &shrunk, s->noise, err);
    if (s->errors || !cfg->metric_scales)
        return 0;
    if (bp_scale_errors(&s->sens.table, cfg->metric_scales, cfg->metric, s->predicts,
                        &s->exponent, err) < 0)
        return -1;
    s->scales_used = cfg->metric_scales_as_written;
    return 0;
}

/* A GGUF model: the quantized file's bytes outside the planned layers. */
static int footprint(bp_session *s, bp_error *err)
{
    const bp_table *t = &s->sens.table;
    if (!s->has_config || !bp_gguf_file(s->cfg.weights))
        return 0;
    char **names = bp_malloc((t->n ? t->n : 1) * sizeof *names, err);
    size_t n = 0;
    if (!names)
        return -1;
    for (size_t i = 0; i < t->n; i++)             /* rows of a layer are consecutive */
        if (i == 0 || strcmp(t->rows[i].layer, t->rows[i - 1].layer) != 0)
            names[n++] = t->rows[i].layer;
    char *dataset = NULL;
    if (s->cfg.imatrix) {
        bp_imatrix im;
        if (bp_imatrix_open(&im, s->cfg.imatrix, err) < 0) {
            free(names);
            return -1;
        }
        dataset = im.dataset ? bp_strdup(im.dataset, NULL) : NULL;
        bp_imatrix_close(&im);
    }
    /* the --imatrix argument the export's command line gives (it becomes a key) */
    char *im = s->cfg.imatrix ? bp_path_absolute(s->cfg.imatrix, err) : NULL;
    int rc = s->cfg.imatrix && !im ? -1
             : bp_gguf_footprint_of(s->cfg.weights, im, dataset, names, n, &s->gguf, err);
    free(im);
    free(dataset);
    free(names);
    return rc;
}

int bp_measure(bp_session *s, bp_error *err)
{
    if (s->measured)
        return 0;
    if (bp_session_lock(s, err) < 0)
        return -1;
    s->stage = "sensitivity";
    bp_output_managed(1);              /* the table, its key, the journal, the hash memo */
    int ran = bp_run_sensitivity(&s->cfg, s->o.force, step, s, &s->sens, err);
    bp_output_managed(0);
    if (ran < 0)
        return -1;
    s->measured = 1;
    if ((s->errors && bp_take_errors(&s->sens.table, s->errors, err) < 0) ||
        apply_scales(s, err) < 0 || footprint(s, err) < 0) {
        bp_sens_result_free(&s->sens);
        s->measured = 0;
        return -1;
    }
    return 0;
}

void bp_table_info_get(const bp_session *s, bp_table_info *info)
{
    memset(info, 0, sizeof *info);
    info->rows = s->sens.table.n;
    info->layers = s->has_config ? s->sens.n_layers : bp_table_layer_count(&s->sens.table);
    info->from_cache = s->sens.from_cache;
    info->resumed_layers = s->sens.resumed_layers;
    info->seconds = s->sens.seconds;
    info->metric = s->has_config ? bp_metric_name(s->cfg.metric) : NULL;
    if (s->has_config && !s->cache_path[0])
        snprintf((char *)s->cache_path, sizeof s->cache_path, "%s/%s", s->cfg.out_dir,
                 s->cfg.table_name);
    info->cache_path = s->has_config ? s->cache_path : NULL;
}

int bp_save_table(const bp_session *s, const char *path, bp_error *err)
{
    if (!s->measured)
        return bp_fail(err, "no sensitivity table yet (bp_measure first)");
    return bp_write_table(&s->sens.table, path, err);
}

/* ---- solving -------------------------------------------------------------------- */

/* The latency table of the options, else budget.latency_table (once). */
static int load_latency(bp_session *s, bp_error *err)
{
    const char *path = s->latency_path ? s->latency_path
                       : s->has_config  ? s->cfg.latency_table
                                        : NULL;
    if (s->has_latency || !path)
        return 0;
    if (bp_latency_load(&s->latency, path, err) < 0)
        return -1;
    s->has_latency = 1;
    return 0;
}

void bp_session_request(const bp_session *s, const bp_budget_spec *budget,
                        bp_solve_request *req)
{
    const bp_config *cfg = s->has_config ? &s->cfg : NULL;
    memset(req, 0, sizeof *req);
    req->budget = budget ? *budget
                  : cfg  ? cfg->budget
                         : (bp_budget_spec){0, 0, -1.0, 0, 0, BP_MIN_AUTO, 0, 0};
    req->pins = cfg ? cfg->pins : NULL;
    req->n_pins = cfg ? cfg->n_pins : 0;
    req->ties = cfg ? cfg->ties : NULL;
    req->n_ties = cfg ? cfg->n_ties : 0;
    req->allow = cfg ? cfg->allow : NULL;
    req->n_allow = cfg ? cfg->n_allow : 0;
    req->latency = s->has_latency ? &s->latency : NULL;
    req->time_limit = s->o.time_limit > 0 ? s->o.time_limit : cfg ? cfg->time_limit : 60.0;
    req->mip_gap = cfg ? cfg->mip_gap : 0.0;
    req->fixed = s->fixed;
    req->n_fixed = s->n_fixed;
    req->error_exponent = s->scales_used ? s->exponent : 1.0;
    req->gguf = s->gguf.valid ? &s->gguf : NULL;
}

static int has_budget(const bp_budget_spec *b)
{
    return b->avg_bits > 0 || b->max_bytes > 0 || b->max_error >= 0 || b->max_bops > 0 ||
           b->max_latency > 0 || b->max_file_bytes > 0 || b->bpw > 0;
}

int bp_check_budget(const bp_session *s, const bp_budget_spec *budget, bp_error *err)
{
    const bp_budget_spec *b = budget && has_budget(budget) ? budget
                              : s->has_config ? &s->cfg.budget : NULL;
    if (b && (b->max_file_bytes > 0 || b->bpw > 0) &&
        (!s->has_config || !bp_gguf_file(s->cfg.weights)))
        return bp_fail(err, "%s: budget.%s is a GGUF file's budget, but the model %s is not a GGUF "
                       "(use avg_bits or max_bytes)", s->has_config ? s->cfg.path : s->table_path,
                       b->max_file_bytes > 0 ? "max_file_bytes" : "bpw",
                       s->has_config ? s->cfg.weights : "of a bare table");
    if ((budget && has_budget(budget)) || s->n_fixed || (s->has_config && has_budget(&s->cfg.budget)))
        return 0;
    return bp_fail(err, "%s: no budget: set budget.avg_bits, budget.max_bytes, "
                   "budget.max_error, budget.max_bops, budget.max_latency, or for a GGUF "
                   "budget.max_file_bytes, budget.max_bytes_of or budget.bpw",
                   s->has_config ? s->cfg.path : s->table_path);
}

void bp_plan_free(bp_plan *plan)
{
    if (!plan)
        return;
    free(plan->layers);
    free(plan);
}

/* The plan of a solved request with the session's provenance. */
static int assemble(bp_session *s, const bp_solve_result *r, const bp_solve_request *req,
                    bp_plan **out, bp_error *err)
{
    bp_plan *plan = bp_calloc(1, sizeof *plan, err);
    if (!plan)
        return -1;
    const bp_config *cfg = s->has_config ? &s->cfg : NULL;
    if (bp_make_plan(&s->sens.table, r, cfg, cfg ? &s->sens : NULL, req, plan, err) < 0) {
        free(plan);
        return -1;
    }
    if (s->table_path)
        plan->table_path = s->table_path;
    if (s->errors)
        plan->table_path = s->errors, plan->metric = NULL;
    if (s->scales_used)
        plan->metric_scales = s->scales_used, plan->predicts = s->predicts,
        plan->exponent = s->exponent;
    if (s->noise[0])
        plan->noise = s->noise;
    if (s->gguf.valid) {
        plan->gguf_file_bytes = bp_gguf_file_bytes(&s->gguf, (double)plan->total_weight_bits);
        plan->gguf_bpw = bp_gguf_bpw(&s->gguf, (double)plan->total_weight_bits);
    }
    *out = plan;
    return 0;
}

int bp_session_solve(bp_session *s, const bp_solve_request *req, bp_plan **plan,
                     bp_error *err)
{
    bp_solve_result r;
    if (bp_solve_table(&s->sens.table, req, &r, err) < 0) {
        if (s->choices)
            bp_fail_prefix(err, "%s", s->choices);
        else if (s->table_path && strncmp(err->msg, s->table_path, strlen(s->table_path)) != 0)
            bp_fail_prefix(err, "%s", s->table_path);
        return -1;
    }
    int rc = assemble(s, &r, req, plan, err);
    bp_solve_result_free(&r);
    return rc;
}

int bp_solve(bp_session *s, const bp_budget_spec *budget, bp_plan **plan, bp_error *err)
{
    bp_solve_request req;
    *plan = NULL;
    if (!s->measured && bp_measure(s, err) < 0)
        return -1;
    if (load_latency(s, err) < 0)
        return -1;
    bp_session_request(s, budget, &req);
    return bp_session_solve(s, &req, plan, err);
}

/* ---- writing ---------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int write_plan_to(const bp_plan *p, const char *path, bp_error *err)
{
    return ends_with(path, ".json") ? bp_plan_write_json(p, path, err)
                                    : bp_plan_write_yaml(p, path, err);  /* "-": stdout */
}

/* Read a plan back, rename its layers, write one format; warnings (and, with
 * notes, how to run the consumer) to the options' stream. */
static int export_plan(const char *plan_path, const char *fmt, const char *out,
                       const bp_config *cfg, int llama, int compress, const bp_options *o,
                       bp_error *err)
{
    bp_export_plan p;
    if (bp_export_read_plan(plan_path, &p, err) < 0)
        return -1;
    int rc = bp_export_rename(&p, cfg ? cfg->rename : NULL, cfg ? cfg->n_rename : 0, llama, err);
    /* with a config, the command line names the files absolutely */
    char *model = cfg ? bp_path_absolute(cfg->weights, err) : NULL;
    char *im = cfg && cfg->imatrix ? bp_path_absolute(cfg->imatrix, err) : NULL;
    char *types = cfg ? bp_path_absolute(out, err) : NULL;
    bp_export_opts eo = {cfg ? cfg->ggml : NULL, cfg ? cfg->n_ggml : 0,
                         compress || (cfg && cfg->llama_compress), o ? o->messages : NULL,
                         o ? o->messages_notes : 0, model, im, types};
    if (rc == 0)
        rc = bp_export_write_opts(&p, fmt, out, &eo, err);
    free(model), free(im), free(types);
    bp_export_plan_free(&p);
    return rc;
}

/* Where the output set goes: bp_set_output_dir's directory, or output.dir. */
static const char *set_dir(const bp_session *s)
{
    return s->set_dir ? s->set_dir : s->cfg.out_dir;
}

int bp_set_output_dir(bp_session *s, const char *dir, bp_error *err)
{
    if (!s->has_config)
        return bp_fail(err, "an output directory needs a config (a bare table writes one plan)");
    if (!dir || !*dir)
        return bp_fail(err, "the output directory is an empty path");
    char *d = bp_strdup(dir, err);
    if (!d)
        return -1;
    free(s->set_dir);
    s->set_dir = d;
    return 0;
}

/* The run lock of the output set's own directory, when it is not output.dir
 * (whose lock the session holds already). */
static int lock_set_dir(bp_session *s, bp_error *err)
{
    if (!s->set_dir || s->set_lock_fd >= 0)
        return 0;
    if (bp_mkdirs(s->set_dir, err) < 0)
        return -1;
    struct stat a, b;
    if (stat(s->set_dir, &a) == 0 && stat(s->cfg.out_dir, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        return 0;                   /* output.dir itself */
    char *names[BP_OUTPUT_NAMES_MAX + 1];
    bp_config_output_names(&s->cfg, names);
    int rc = bp_dir_lock(s->set_dir, (const char *const *)names, &s->set_lock_fd, err);
    bp_config_output_names_free(names);
    return rc;
}

/* output.formats beyond yaml/json, next to the plan. */
static int export_configured(const bp_session *s, const char *plan_path, bp_error *err)
{
    const bp_config *cfg = &s->cfg;
    for (int f = 0; f < BP_EXPORT_COUNT; f++) {
        if (!(cfg->exports & (1u << f)))
            continue;
        char *out = bp_path_join(set_dir(s), bp_export_files[f], err);
        int rc = out ? export_plan(plan_path, bp_export_names[f], out, cfg, cfg->llama_names, 0,
                                   &s->o, err)
                     : -1;
        free(out);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The config's outputs as one set: each is written to a temporary, and only
 * when all are complete are they renamed into place (recorded first, so a
 * kill between renames is finished by the next run). */
static int write_set(bp_session *s, const bp_plan *plan, bp_error *err)
{
    const bp_config *cfg = &s->cfg;
    char *yaml_path = NULL, *json_path = NULL, *qpath = NULL;
    const char *dir = set_dir(s);
    int rc = bp_session_lock(s, err) < 0 ? -1 : lock_set_dir(s, err);
    bp_stage_begin();
    if (rc == 0 && !(yaml_path = bp_path_join(dir, cfg->plan_name, err)))
        rc = -1;
    char *json_name = bp_config_json_name(cfg->plan_name);
    if (rc == 0 && cfg->write_json) {
        json_path = json_name ? bp_path_join(dir, json_name, err) : NULL;
        rc = json_path ? bp_plan_write_json(plan, json_path, err) : -1;
    }
    free(json_name);
    if (rc == 0 && cfg->write_yaml)
        rc = bp_plan_write_yaml(plan, yaml_path, err);
    if (rc == 0 && cfg->exports)
        rc = export_configured(s, bp_stage_lookup(cfg->write_yaml ? yaml_path : json_path), err);
    s->stage = "quantized weights";
    if (rc == 0 && cfg->weights_out &&
        (bp_mkdirs(dir, err) < 0 ||
         !(qpath = bp_path_join(dir, cfg->weights_out, err)) ||
         bp_write_quantized(cfg, plan, qpath, cfg->dequantized, step, s, err) < 0))
        rc = -1;
    if (rc == 0)
        rc = bp_stage_commit(dir, err);
    else
        bp_stage_abort();
    free(s->written);
    s->written = cfg->write_yaml ? yaml_path : json_path;
    free(cfg->write_yaml ? json_path : yaml_path);
    free(s->weights_written);
    s->weights_written = qpath;
    return rc;
}

int bp_write(bp_session *s, const bp_plan *plan, const char *out, const char **written,
             bp_error *err)
{
    if (!out && !s->has_config)
        out = "plan.yaml";
    int rc;
    if (out) {                       /* the plan alone, written atomically by itself */
        rc = write_plan_to(plan, out, err);
        free(s->written);
        s->written = rc == 0 ? bp_strdup(out, err) : NULL;
        free(s->weights_written);
        s->weights_written = NULL;
    } else {
        rc = write_set(s, plan, err);
    }
    if (written)
        *written = rc == 0 ? s->written : NULL;
    return rc;
}

const char *bp_weights_path(const bp_session *s)
{
    return s->weights_written;
}

/* ---- candidates, uniform plans, exports --------------------------------------------- */

/* n bytes of buf to stdout (path NULL or "-") or atomically to path. */
int bp_write_output(const char *path, const char *buf, size_t n, bp_error *err)
{
    if (!path || !strcmp(path, "-"))
        return fwrite(buf, 1, n, stdout) == n ? 0 : bp_fail(err, "cannot write to stdout");
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    fwrite(buf, 1, n, a.fp);
    return bp_atomic_commit(&a, err);
}

int bp_candidates(bp_session *s, const char *out, bp_error *err)
{
    if (!s->measured && bp_measure(s, err) < 0)
        return -1;
    bp_solve_request req;
    char *buf = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&buf, &n);
    if (load_latency(s, err) < 0) {
        if (mem)
            fclose(mem);
        free(buf);
        return -1;
    }
    bp_session_request(s, NULL, &req);
    int rc = mem ? bp_write_program(&s->sens.table, &req, mem, err)
                 : bp_fail(err, "out of memory");
    if (mem)
        fclose(mem);
    if (rc == 0)
        rc = bp_write_output(out, buf, n, err);
    free(buf);
    return rc;
}

/* The uniform plan with every layer at `all`, solved over the measured (or
 * cached) table like bp_solve's, written to path alone. */
static int uniform_plan(bp_session *s, bp_choice *all, const char *path, bp_error *err)
{
    bp_choice *fixed = s->fixed;
    size_t n_fixed = s->n_fixed;
    s->fixed = all, s->n_fixed = 1;
    bp_budget_spec none = {0, 0, -1.0, 0, 0, BP_MIN_AUTO, 0, 0};
    bp_plan *plan = NULL;
    int rc = bp_solve(s, &none, &plan, err);
    if (rc == 0)
        rc = write_plan_to(plan, path, err);
    bp_plan_free(plan);
    s->fixed = fixed, s->n_fixed = n_fixed;
    return rc;
}

int bp_quantize(bp_session *s, int wbits, int abits, const char *quantizer, const char *out,
                const char *plan_out, bp_quantize_info *info, bp_error *err)
{
    if (!s->has_config)
        return bp_fail(err, "quantize needs a config");
    if (quantizer && bp_wquantizer_parse(quantizer) < 0)
        return bp_fail(err, "quantizer '%s': expected rtn, gptq, squant or erq", quantizer);
    const bp_config *cfg = &s->cfg;
    int given = abits > 0;
    for (size_t i = 0; !given && i < cfg->n_abits; i++)
        abits = cfg->abits[i] > abits ? cfg->abits[i] : abits;   /* default: the widest */
    const char *q = quantizer ? quantizer : bp_wquantizer_name(cfg->quantizers[0]);
    bp_choice all = {NULL, wbits, abits, q};
    if (plan_out && uniform_plan(s, &all, plan_out, err) < 0)
        return -1;
    bp_model m;
    bp_plan plan;
    memset(&plan, 0, sizeof plan);
    if (bp_model_open(&m, cfg->weights, cfg->calibration, cfg->imatrix, cfg->include, cfg->n_include,
                      cfg->exclude, cfg->n_exclude, err) < 0)
        return -1;
    int rc = (plan.layers = bp_calloc(m.n_layers ? m.n_layers : 1, sizeof *plan.layers, err))
                 ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < m.n_layers; i++)
        plan.layers[i] = (bp_plan_layer){.name = m.layers[i].name, .wbits = wbits,
                                         .abits = abits, .quantizer = q, .symmetric = -1,
                                         .act_symmetric = -1,
                                         .params = m.layers[i].out * m.layers[i].in};
    plan.n_layers = rc == 0 ? m.n_layers : 0;
    s->stage = "quantize";
    if (rc == 0)
        rc = bp_write_quantized(cfg, &plan, out, cfg->dequantized, step, s, err);
    if (rc == 0 && info)
        *info = (bp_quantize_info){plan.n_layers, abits, q};
    free(plan.layers);
    bp_model_close(&m);
    return rc;
}

int bp_export(const char *plan, const char *format, const char *out, const char *config,
              int llama_names, int compress, const bp_options *o, char **written,
              bp_error *err)
{
    if (written)
        *written = NULL;
    int f = bp_export_format(format);
    if (f < 0)
        return bp_export_unknown(format, err);
    bp_session *s = NULL;
    if (config && bp_open(&s, config, o, err) < 0)
        return -1;
    const bp_config *cfg = s ? &s->cfg : NULL;
    char *def = cfg && !out ? bp_path_join(cfg->out_dir, bp_export_files[f], err) : NULL;
    const char *dest = out ? out : def ? def : bp_export_files[f];
    int rc = cfg && !out && !def ? -1
             : s && bp_session_lock(s, err) < 0
                 ? -1
                 : export_plan(plan, format, dest, cfg, llama_names || (cfg && cfg->llama_names),
                               compress, o, err);
    if (rc == 0 && written && !(*written = bp_strdup(dest, err)))
        rc = -1;
    free(def);
    bp_close(s);
    return rc;
}

/* ---- distributed workers and the profile ---------------------------------------------- */

int bp_mpi_worker(const char *config, const bp_options *o)
{
    bp_session *s = NULL;
    bp_error err;
    int loaded = config && bp_open(&s, config, o, &err) == 0;
    if (!config)
        bp_fail(&err, "this command has no sensitivity stage");
    bp_sens_worker(loaded ? &s->cfg : NULL, &err);
    bp_close(s);
    return 0;
}

void bp_profile_print(FILE *out)
{
    bp_profile_report(out);
}

int bp_mpi_init(int *argc, char ***argv)
{
    return bp_dist_init(argc, argv);
}

int bp_mpi_rank(void)
{
    return bp_dist_rank();
}

void bp_mpi_end(int rc)
{
    if (bp_dist_size() > 1) {        /* failed: end every rank; done: release them */
        fflush(stdout);
        fflush(stderr);
        if (rc)
            bp_dist_abort(rc);
        for (int r = 1; r < bp_dist_size(); r++)
            bp_dist_send(r, BP_MSG_STOP, "", 0, 1);
    }
    bp_dist_finalize();
}
