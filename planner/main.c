/*
 * main.c - the bitplan command: argument parsing, progress, summaries and
 * error printing.  The only file that talks to the terminal.
 */
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bp_file.h"
#include "../common/bp_profile.h"
#include "bp_version.h"
#include "config.h"
#include "model.h"
#include "assemble.h"
#include "cache.h"
#include "errors.h"
#include "measure.h"
#include "problem.h"
#include "formats/qweights.h"
#include "quantize.h"
#include "distrib.h"
#include "sweep.h"

static const char usage_text[] =
    "usage: bitplan <command> [options]\n"
    "\n"
    "Mixed-precision bit allocation: measure each layer's error under every\n"
    "candidate (weight bits, activation bits), then pick one candidate per layer\n"
    "with an integer program under a size or error budget.\n"
    "\n"
    "commands:\n"
    "  run CONFIG            sensitivity (cached) + solve + write the plan; prints a summary\n"
    "  sensitivity CONFIG    measure (or reuse) the sensitivity table only\n"
    "  solve CONFIG          like run; budget flags override the config's budget\n"
    "  solve --table CSV (--avg-bits X | --max-bytes N | --max-bops N | --max-latency T\n"
    "                     | --max-error E)\n"
    "                        solve over any table with columns layer,wbits,abits,error,params\n"
    "  sweep CONFIG | sweep --table CSV  (--avg-bits S | --max-bytes S | --max-bops S |\n"
    "                     --max-latency S | --max-error S)\n"
    "                        one plan per budget (S = START:STOP:STEP or a comma list),\n"
    "                        with baselines: frontier.csv and frontier.svg in -o DIR\n"
    "  candidates CONFIG [-o FILE]\n"
    "                        the program the solver sees (after pins, allowed widths and\n"
    "                        ties) as CSV group,choice,layer,wbits,abits,quantizer,error,\n"
    "                        weight_bits, for tools that search plans themselves\n"
    "  quantize CONFIG --wbits B [--abits A] [--quantizer Q] -o FILE [--plan PLAN]\n"
    "                        every layer quantized at one candidate (a uniform plan's\n"
    "                        weights, same layout as output.weights); --plan also writes\n"
    "                        that uniform plan\n"
    "  export PLAN --format F [-o FILE] [--llama-names] [--compress-blocks]\n"
    "                        [--config CONFIG]\n"
    "                        the plan for llamacpp, gptqmodel, llmcompressor or autoround;\n"
    "                        --config applies its export settings (rename, ggml_types,\n"
    "                        llama_names) and writes into its output.dir\n"
    "  grids CONFIG --calibration ROWS [-o FILE]\n"
    "                        the static activation grid every layer's activation candidate\n"
    "                        fits on the rows of ROWS (JSON), for tools/capture.py --stats\n"
    "  inspect FILE          list the tensors and the layers found in a model file\n"
    "  help                  this text (also COMMAND --help)\n"
    "\n"
    "options:\n"
    "  -o, --output FILE     sensitivity: table path; solve: plan path (.json -> JSON,\n"
    "                        '-' -> YAML on stdout)\n"
    "  --avg-bits X          budget: average weight bits, scales included\n"
    "  --max-bytes N         budget: total weight bytes, scales included\n"
    "  --max-error E         budget: total predicted error (then size is minimised)\n"
    "  --max-bops N          budget: bit operations per sample, sum of macs x wbits x abits\n"
    "  --max-latency T       budget: total latency from a latency table\n"
    "  --latency FILE        the latency table (CSV layer,wbits,abits,latency)\n"
    "  --time-limit S        solver time limit in seconds (default 60)\n"
    "  --force               ignore the cached sensitivity table and measure again\n"
    "  --plans               sweep: also write every point's plan (DIR/plans/)\n"
    "  --metric M            the metric to plan with (overrides the config's metric)\n"
    "  --errors FILE         plan with the errors of FILE (e.g. measured deltas), keeping\n"
    "                        the config's candidates, pins and ties\n"
    "  --metric-scales FILE  multiply each layer's errors by its scale in FILE (from\n"
    "                        tools/calibrate.py): errors in the units the user measures\n"
    "  --calibration FILE    grids: the calibration rows to fit the grids on\n"
    "  --choices PLAN        run/solve: take these layers' candidates from PLAN (YAML or\n"
    "                        JSON, e.g. a refined plan) instead of choosing them\n"
    "  -q, --quiet           no progress and no summary (errors still go to stderr)\n"
    "  --version             print the version\n"
    "\n"
    "Exit status: 0 on success, 1 on any error (one message on stderr), 2 on usage errors.\n";

typedef struct cli {
    const char *command;
    const char *arg;          /* CONFIG or FILE */
    const char *table;
    const char *output;
    bp_budget_spec budget;
    int budget_set;
    double time_limit;
    int force, quiet;
    int progress;             /* stderr is a terminal and not quiet */
    const char *stage;        /* what the progress line names (NULL: sensitivity) */
    double t_start, t_last;
    const char *sweep_spec;   /* sweep: the budget list as given */
    const char *sweep_opt;    /* which budget flag it came with */
    int plans;                /* sweep --plans */
    const char *latency_path; /* --latency FILE */
    bp_latency latency;       /* loaded from --latency or budget.latency_table */
    int has_latency;
    const char *format;       /* export --format */
    int llama_names;          /* export --llama-names */
    int compress;             /* export --compress-blocks */
    int q_wbits, q_abits;     /* quantize --wbits / --abits (0: not given) */
    const char *q_quantizer;  /* quantize --quantizer */
    const char *q_plan;       /* quantize --plan FILE */
    const char *choices;      /* run/solve --choices PLAN */
    const char *metric;       /* --metric NAME */
    const char *errors;       /* --errors FILE: the errors to plan with */
    const char *metric_scales; /* --metric-scales FILE (overrides the config's) */
    const char *scales_used;  /* the scales file the errors were multiplied by, or NULL */
    char predicts[16];        /* ... and the objective they are then in units of */
    double exponent;          /* ... which is their sum to this power */
    char noise[512];          /* what was done about a noisy Fisher ("" nothing) */
    const char *calibration;  /* grids --calibration FILE */
    const char *config;       /* export --config FILE */
    bp_export_plan chosen;    /* its layers */
    bp_choice *fixed;         /* given candidates for the solve request */
    size_t n_fixed;
} cli;

static int die(const bp_error *err)
{
    fprintf(stderr, "bitplan: error: %s\n", err->msg);
    return 1;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "bitplan: %s\nRun 'bitplan help' for usage.\n", msg);
    return 2;
}

/* ---- progress (stderr, terminals only) ---------------------------------- */

static void progress(void *ctx, size_t done, size_t total, const char *layer)
{
    cli *c = ctx;
    if (!c->progress)
        return;
    double t = bp_now();
    if (done == 0 || c->t_start == 0)
        c->t_start = t;
    if (!layer) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        return;
    }
    double el = t - c->t_start, rate = done ? (double)done / el : 0.0;
    char eta[32] = "--";
    if (rate > 0)
        snprintf(eta, sizeof eta, "%.0fs", (double)(total - done) / rate);
    fprintf(stderr, "\r\033[K%s: layer %zu/%zu %.40s  %.2f layers/s  ETA %s",
            c->stage ? c->stage : "sensitivity", done + 1, total, layer, rate, eta);
    fflush(stderr);
}

/* ---- interrupts ---------------------------------------------------------- */

static void on_signal(int sig)
{
    if (bp_interrupt_requested)      /* a second signal: stop right away */
        signal(sig, SIG_DFL), raise(sig);
    bp_interrupt_requested = 1;
}

static int apply_errors(const cli *c, bp_table *t, bp_error *err);

/* metric_scales (or --metric-scales): errors in the objective's units; not
 * with --errors, whose errors are measured already.  Without either, a noisy
 * Fisher's layer scales are shrunk (noise: shrink). */
static int apply_scales(cli *c, const bp_config *cfg, bp_sens_result *sens, bp_error *err)
{
    int shrunk;
    if (!c->errors && !cfg->metric_scales && cfg->noise_shrink)
        return bp_shrink_noisy(&sens->table, sens, cfg->metric, &shrunk, c->noise, err);
    if (c->errors || !cfg->metric_scales)
        return 0;
    if (bp_scale_errors(&sens->table, cfg->metric_scales, cfg->metric, c->predicts,
                        &c->exponent, err) < 0)
        return -1;
    c->scales_used = cfg->metric_scales_as_written;
    return 0;
}

/* The run lock of output.dir, held until the process ends (one run writes
 * into a directory at a time); taking it completes a commit a killed run left
 * half done and removes the temporaries killed runs left. */
static int lock_outputs(const bp_config *cfg, bp_error *err)
{
    static int held = -1;
    if (held >= 0)
        return 0;
    if (bp_mkdirs(cfg->out_dir, err) < 0)
        return -1;
    char *names[BP_OUTPUT_NAMES_MAX + 2];
    size_t n = bp_config_output_names(cfg, names);
    names[n] = (char *)".bitplan-hashes", names[n + 1] = NULL;    /* the hash memo */
    int rc = bp_dir_lock(cfg->out_dir, (const char *const *)names, &held, err);
    names[n] = NULL;
    bp_config_output_names_free(names);
    return rc;
}

/* SIGINT/SIGTERM finish the layer in progress during the sensitivity stage
 * (its journal then resumes the next run); elsewhere they act as usual. */
static int sensitivity_with_journal(bp_config *cfg, cli *c, bp_sens_result *sens,
                                    bp_error *err)
{
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (lock_outputs(cfg, err) < 0)
        return -1;
    int rc = bp_run_sensitivity(cfg, c->force, progress, c, sens, err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc == 0 && (apply_errors(c, &sens->table, err) < 0 || apply_scales(c, cfg, sens, err) < 0)) {
        bp_sens_result_free(sens);
        return -1;
    }
    return rc;
}

/* ---- argument parsing --------------------------------------------------- */

static int parse_number(const char *opt, const char *s, double lo, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < lo) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: expected a number >= %g, got '%s'", opt, lo, s);
        return usage_error(msg);
    }
    *out = v;
    return 0;
}

static int parse_args(cli *c, int argc, char **argv)
{
    enum { O_AVG = 256, O_BYTES, O_ERROR, O_TABLE, O_TIME, O_FORCE, O_PLANS, O_BOPS, O_LAT,
           O_LATFILE, O_FORMAT, O_LLAMA, O_QW, O_QA, O_QQ, O_QPLAN, O_CHOICES, O_METRIC, O_ERRORS,
           O_CALIB, O_CONFIG, O_COMPRESS, O_SCALES };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"quiet", no_argument, 0, 'q'},
        {"avg-bits", required_argument, 0, O_AVG}, {"max-bytes", required_argument, 0, O_BYTES},
        {"max-error", required_argument, 0, O_ERROR}, {"table", required_argument, 0, O_TABLE},
        {"time-limit", required_argument, 0, O_TIME}, {"force", no_argument, 0, O_FORCE},
        {"plans", no_argument, 0, O_PLANS}, {"max-bops", required_argument, 0, O_BOPS},
        {"max-latency", required_argument, 0, O_LAT}, {"latency", required_argument, 0, O_LATFILE},
        {"format", required_argument, 0, O_FORMAT}, {"llama-names", no_argument, 0, O_LLAMA},
        {"wbits", required_argument, 0, O_QW}, {"abits", required_argument, 0, O_QA},
        {"quantizer", required_argument, 0, O_QQ}, {"plan", required_argument, 0, O_QPLAN},
        {"choices", required_argument, 0, O_CHOICES}, {"metric", required_argument, 0, O_METRIC},
        {"errors", required_argument, 0, O_ERRORS},
        {"calibration", required_argument, 0, O_CALIB},
        {"config", required_argument, 0, O_CONFIG},
        {"compress-blocks", no_argument, 0, O_COMPRESS},
        {"metric-scales", required_argument, 0, O_SCALES},
        {0, 0, 0, 0}};
    int sweep = c->command && strcmp(c->command, "sweep") == 0;
    int ch;
    c->budget.max_error = -1.0;
    c->time_limit = -1.0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "o:q", opts, NULL)) != -1) {
        int rc = 0;
        switch (ch) {
        case 'o': c->output = optarg; break;
        case 'q': c->quiet = 1; break;
        case O_TABLE: c->table = optarg; break;
        case O_FORCE: c->force = 1; break;
        case O_PLANS: c->plans = 1; break;
        case O_LATFILE: c->latency_path = optarg; break;
        case O_FORMAT: c->format = optarg; break;
        case O_LLAMA: c->llama_names = 1; break;
        case O_QQ: c->q_quantizer = optarg; break;
        case O_QPLAN: c->q_plan = optarg; break;
        case O_CHOICES: c->choices = optarg; break;
        case O_ERRORS: c->errors = optarg; break;
        case O_CALIB: c->calibration = optarg; break;
        case O_CONFIG: c->config = optarg; break;
        case O_COMPRESS: c->compress = 1; break;
        case O_SCALES: c->metric_scales = optarg; break;
        case O_METRIC:
            if (bp_metric_parse(optarg) < 0 && strcmp(optarg, "auto") != 0)
                return usage_error("--metric: expected auto, mse, relative, weight, hawq, fisher, "
                                   "kfac or margin");
            c->metric = optarg;
            break;
        case O_QW:
        case O_QA: {
            double v;
            if ((rc = parse_number(ch == O_QW ? "--wbits" : "--abits", optarg, 2, &v)) != 0)
                return rc;
            if (v != floor(v) || v > BP_BITS_FLOAT)
                return usage_error(ch == O_QW ? "--wbits: expected an integer in 2..16"
                                              : "--abits: expected an integer in 2..16");
            *(ch == O_QW ? &c->q_wbits : &c->q_abits) = (int)v;
            break;
        }
        case O_AVG:
        case O_BYTES:
        case O_BOPS:
        case O_LAT:
        case O_ERROR:
            if (sweep) {
                if (c->sweep_spec)
                    return usage_error("sweep takes one budget list");
                c->sweep_spec = optarg;
                c->sweep_opt = ch == O_AVG     ? "--avg-bits"
                               : ch == O_BYTES ? "--max-bytes"
                               : ch == O_BOPS  ? "--max-bops"
                               : ch == O_LAT   ? "--max-latency"
                                               : "--max-error";
                break;
            }
            if (ch == O_AVG)
                rc = parse_number("--avg-bits", optarg, 1e-9, &c->budget.avg_bits);
            else if (ch == O_BYTES)
                rc = parse_number("--max-bytes", optarg, 1, &c->budget.max_bytes);
            else if (ch == O_BOPS)
                rc = parse_number("--max-bops", optarg, 1, &c->budget.max_bops);
            else if (ch == O_LAT)
                rc = parse_number("--max-latency", optarg, 1e-300, &c->budget.max_latency);
            else
                rc = parse_number("--max-error", optarg, 0, &c->budget.max_error);
            c->budget_set = 1;
            break;
        case O_TIME: rc = parse_number("--time-limit", optarg, 1e-3, &c->time_limit); break;
        default: return 2;
        }
        if (rc)
            return rc;
    }
    if (optind < argc)
        c->arg = argv[optind++];
    if (optind < argc)
        return usage_error("too many arguments");
    c->progress = !c->quiet && isatty(STDERR_FILENO);
    return 0;
}

/* ---- output ------------------------------------------------------------- */

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

/* ---- exports ------------------------------------------------------------- */

/* Read a plan back, rename its layers, write one format; warnings (and,
 * unless quiet, notes on running the consumer) on stderr. */
static int export_plan(const char *plan_path, const char *fmt, const char *out,
                       const bp_config *cfg, int llama, int compress, int quiet, bp_error *err)
{
    bp_export_plan p;
    if (bp_export_read_plan(plan_path, &p, err) < 0)
        return -1;
    int rc = bp_export_rename(&p, cfg ? cfg->rename : NULL, cfg ? cfg->n_rename : 0, llama, err);
    bp_export_opts o = {cfg ? cfg->ggml : NULL, cfg ? cfg->n_ggml : 0,
                        compress || (cfg && cfg->llama_compress), stderr, !quiet};
    if (rc == 0)
        rc = bp_export_write_opts(&p, fmt, out, &o, err);
    bp_export_plan_free(&p);
    return rc;
}

/* output.formats beyond yaml/json, next to the plan. */
static int export_configured(const bp_config *cfg, const char *plan_path, int quiet,
                             bp_error *err)
{
    for (int f = 0; f < BP_EXPORT_COUNT; f++) {
        if (!(cfg->exports & (1u << f)))
            continue;
        char *out = bp_path_join(cfg->out_dir, bp_export_files[f], err);
        int rc = out ? export_plan(plan_path, bp_export_names[f], out, cfg, cfg->llama_names, 0,
                                   quiet, err)
                     : -1;
        free(out);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void print_summary(const bp_plan *p, const bp_sens_result *s, const char *written,
                          double total_seconds)
{
    printf("%-32s %5s %5s %12s %14s\n", "layer", "wbits", "abits", "params", "error");
    for (size_t i = 0; i < p->n_layers; i++) {
        const bp_plan_layer *l = &p->layers[i];
        printf("%-32.32s %5d %5d %12lld %14.6g\n", l->name, l->wbits, l->abits,
               (long long)l->params, l->error);
    }
    double bytes = ceil((double)p->total_weight_bits / 8.0);
    printf("layers: %zu   params: %lld\n", p->n_layers, (long long)p->total_params);
    printf("size: %.0f bytes (%.3f MiB), %.4f bits per weight (scales included)\n", bytes,
           bytes / 1048576.0, (double)p->total_weight_bits / (double)p->total_params);
    if (p->metric_scales)
        printf("predicted %s: %.6g (%s scaled by %s)\n", p->predicts,
               pow(fmax(p->total_error, 0.0), p->exponent), p->metric ? p->metric : "table",
               p->metric_scales);
    else
        printf("predicted error: %.6g (%s)\n", p->total_error, p->metric ? p->metric : "table");
    printf("solver: %s %s, objective %s = %.6g, %.3f s\n", p->solver, p->status,
           p->objective_name, p->objective, p->seconds);
    if (s)
        printf("sensitivity: %s, %zu rows, %.2f s\n",
               s->from_cache ? "cached" : s->resumed_layers ? "resumed" : "measured",
               s->table.n, s->seconds);
    printf("plan: %s\n", written);
    printf("time: %.2f s\n", total_seconds);
}

/* ---- commands ----------------------------------------------------------- */

/* The latency table of --latency, else budget.latency_table (once). */
static int load_latency(cli *c, const bp_config *cfg, bp_error *err)
{
    const char *path = c->latency_path ? c->latency_path : cfg ? cfg->latency_table : NULL;
    if (c->has_latency || !path)
        return 0;
    if (bp_latency_load(&c->latency, path, err) < 0)
        return -1;
    c->has_latency = 1;
    return 0;
}

static void request_from(const cli *c, const bp_config *cfg, bp_solve_request *req)
{
    memset(req, 0, sizeof *req);
    req->budget = cfg ? cfg->budget : (bp_budget_spec){0, 0, -1.0, 0, 0, BP_MIN_AUTO};
    if (c->budget_set)
        req->budget = c->budget;
    req->pins = cfg ? cfg->pins : NULL;
    req->n_pins = cfg ? cfg->n_pins : 0;
    req->ties = cfg ? cfg->ties : NULL;
    req->n_ties = cfg ? cfg->n_ties : 0;
    req->allow = cfg ? cfg->allow : NULL;
    req->n_allow = cfg ? cfg->n_allow : 0;
    req->latency = c->has_latency ? &c->latency : NULL;
    req->time_limit = c->time_limit > 0 ? c->time_limit : cfg ? cfg->time_limit : 60.0;
    req->mip_gap = cfg ? cfg->mip_gap : 0.0;
    req->fixed = c->fixed;
    req->n_fixed = c->n_fixed;
    req->error_exponent = c->scales_used ? c->exponent : 1.0;
}

/* The config with the command line's overrides (--metric). */
static int load_config(const cli *c, bp_config *cfg, bp_error *err)
{
    if (bp_config_load(cfg, c->arg, err) < 0)
        return -1;
    if (c->metric && !(cfg->metric_auto = strcmp(c->metric, "auto") == 0))
        cfg->metric = (bp_metric)bp_metric_parse(c->metric);
    if (c->metric_scales) {
        free(cfg->metric_scales);
        free(cfg->metric_scales_as_written);
        cfg->metric_scales = bp_strdup(c->metric_scales, err);
        cfg->metric_scales_as_written = bp_strdup(c->metric_scales, err);
        if (!cfg->metric_scales || !cfg->metric_scales_as_written)
            return -1;
    }
    return 0;
}

/* --errors FILE: every candidate's error taken from FILE (a table such as
 * tools/measure_deltas.py writes) instead of the metric's. */
static int apply_errors(const cli *c, bp_table *t, bp_error *err)
{
    bp_table from;
    if (!c->errors)
        return 0;
    if (bp_table_read_csv(&from, c->errors, err) < 0)
        return -1;
    int rc = bp_table_take_errors(t, &from, c->errors, err);
    bp_table_free(&from);
    return rc;
}

/* --choices PLAN: every layer of that plan keeps its candidate. */
static int load_choices(cli *c, bp_error *err)
{
    if (!c->choices || c->fixed)
        return 0;
    if (bp_export_read_plan(c->choices, &c->chosen, err) < 0)
        return -1;
    if (!(c->fixed = bp_calloc(c->chosen.n ? c->chosen.n : 1, sizeof *c->fixed, err)))
        return -1;
    for (size_t i = 0; i < c->chosen.n; i++) {
        const bp_export_layer *l = &c->chosen.layers[i];
        c->fixed[i] = (bp_choice){l->name, l->wbits, l->abits, l->quantizer};
    }
    c->n_fixed = c->chosen.n;
    return 0;
}

static int has_budget(const bp_budget_spec *b)
{
    return b->avg_bits > 0 || b->max_bytes > 0 || b->max_error >= 0 || b->max_bops > 0 ||
           b->max_latency > 0;
}

/* Solve, write the plan(s), print the summary. */
static int solve_and_write(cli *c, const bp_table *t, const bp_config *cfg,
                           const bp_sens_result *sens, double t0)
{
    bp_solve_request req;
    bp_solve_result r;
    bp_plan plan;
    bp_error err;
    char *yaml_path = NULL, *json_path = NULL;
    if (load_latency(c, cfg, &err) < 0)
        return die(&err);
    request_from(c, cfg, &req);
    if (bp_solve_table(t, &req, &r, &err) < 0) {
        if (c->choices)
            bp_fail_prefix(&err, "%s", c->choices);
        else if (c->table && strncmp(err.msg, c->table, strlen(c->table)) != 0)
            bp_fail_prefix(&err, "%s", c->table);
        return die(&err);
    }
    int rc = bp_make_plan(t, &r, cfg, sens, &req, &plan, &err);
    if (rc == 0 && c->table)
        plan.table_path = c->table;
    if (rc == 0 && c->errors)
        plan.table_path = c->errors, plan.metric = NULL;
    if (rc == 0 && c->scales_used)
        plan.metric_scales = c->scales_used, plan.predicts = c->predicts,
        plan.exponent = c->exponent;
    if (rc == 0 && c->noise[0])
        plan.noise = c->noise;
    const char *shown = NULL;
    /* the plan, its JSON, the exports and the quantized weights land together:
     * each is written to a temporary, and only when all are complete are they
     * renamed into place (recorded first, so a kill between renames is finished
     * by the next run) */
    char *commit_dir = c->output ? NULL : bp_strdup(cfg->out_dir, &err);
    if (!c->output && !commit_dir)
        rc = -1;
    if (!c->output)          /* -o: the plan alone, written atomically by itself */
        bp_stage_begin();
    if (rc == 0 && c->output) {
        rc = write_plan_to(&plan, c->output, &err);
        shown = c->output;
    } else if (rc == 0) {
        if (!(yaml_path = bp_path_join(cfg->out_dir, cfg->plan_name, &err)))
            rc = -1;
        char *json_name = bp_config_json_name(cfg->plan_name);
        if (rc == 0 && cfg->write_json) {
            json_path = json_name ? bp_path_join(cfg->out_dir, json_name, &err) : NULL;
            rc = json_path ? bp_plan_write_json(&plan, json_path, &err) : -1;
        }
        free(json_name);
        if (rc == 0 && cfg->write_yaml)
            rc = bp_plan_write_yaml(&plan, yaml_path, &err);
        if (rc == 0 && cfg->exports)
            rc = export_configured(cfg, bp_stage_lookup(cfg->write_yaml ? yaml_path : json_path),
                                   c->quiet, &err);
        shown = cfg->write_yaml ? yaml_path : json_path;
    }
    char *qpath = NULL;
    c->stage = "quantized weights";
    /* -o: the plan alone (weights or exports in output.dir would describe a plan
     * that is not the one there) */
    if (rc == 0 && cfg && cfg->weights_out && !c->table && !c->output) {
        if (bp_mkdirs(cfg->out_dir, &err) < 0 ||
            !(qpath = bp_path_join(cfg->out_dir, cfg->weights_out, &err)) ||
            bp_write_quantized(cfg, &plan, qpath, cfg->dequantized, progress, c, &err) < 0)
            rc = -1;
    }
    if (rc == 0 && commit_dir)
        rc = bp_stage_commit(commit_dir, &err);
    else if (commit_dir)
        bp_stage_abort();
    free(commit_dir);
    if (rc == 0 && !c->quiet && !(c->output && strcmp(c->output, "-") == 0)) {
        print_summary(&plan, sens, shown, bp_now() - t0);
        if (qpath)
            printf("quantized weights: %s\n", qpath);
    }
    free(qpath);
    if (rc < 0)
        die(&err);
    free(plan.layers);
    free(yaml_path);
    free(json_path);
    bp_solve_result_free(&r);
    return rc < 0 ? 1 : 0;
}

static int cmd_config_pipeline(cli *c, int solve)
{
    bp_config cfg;
    bp_sens_result sens;
    bp_error err;
    double t0 = bp_now();
    if (!c->arg)
        return usage_error("missing CONFIG argument");
    if (load_config(c, &cfg, &err) < 0)
        return die(&err);
    if (load_choices(c, &err) < 0) {
        bp_config_free(&cfg);
        return die(&err);
    }
    if (solve && !c->budget_set && !bp_config_has_budget(&cfg) && !c->choices) {
        bp_config_free(&cfg);
        bp_fail(&err, "%s: no budget: set budget.avg_bits, budget.max_bytes or "
                "budget.max_error (or pass --avg-bits, --max-bytes or --max-error)", c->arg);
        return die(&err);
    }
    int rc = 0;
    if (sensitivity_with_journal(&cfg, c, &sens, &err) < 0) {
        bp_config_free(&cfg);
        return die(&err);
    }
    if (solve) {
        rc = solve_and_write(c, &sens.table, &cfg, &sens, t0);
    } else {
        char *path = bp_path_join(cfg.out_dir, cfg.table_name, &err);
        if (!path || (c->output && bp_write_table(&sens.table, c->output, &err) < 0))
            rc = die(&err);
        else if (!c->quiet)
            printf("sensitivity: %zu layers x %zu candidates, %s in %.2f s -> %s\n",
                   sens.n_layers, sens.n_layers ? sens.table.n / sens.n_layers : 0,
                   sens.from_cache ? "cached" : sens.resumed_layers ? "resumed" : "measured",
                   sens.seconds,
                   c->output ? c->output : path);
        free(path);
    }
    bp_sens_result_free(&sens);
    bp_config_free(&cfg);
    return rc;
}

static int cmd_solve_table(cli *c)
{
    bp_table t;
    bp_error err;
    double t0 = bp_now();
    if (c->arg)
        return usage_error("solve --table takes no CONFIG argument");
    if (!has_budget(&c->budget))
        return usage_error("solve --table needs --avg-bits, --max-bytes, --max-bops, "
                           "--max-latency or --max-error");
    if (!c->output)
        c->output = "plan.yaml";
    if (bp_table_read_csv(&t, c->table, &err) < 0)
        return die(&err);
    int rc = solve_and_write(c, &t, NULL, NULL, t0);
    bp_table_free(&t);
    return rc;
}

/* ---- sweep --------------------------------------------------------------- */

static void sweep_progress(const cli *c, size_t i, size_t n, double t0)
{
    if (!c->progress)
        return;
    double el = bp_now() - t0, rate = i ? (double)i / el : 0.0;
    fprintf(stderr, "\r\033[Ksweep: budget %zu/%zu  %.1f plans/s  ETA %s%.0fs", i + 1, n, rate,
            rate > 0 ? "" : "~", rate > 0 ? (double)(n - i) / rate : 0.0);
    fflush(stderr);
}

/* One point's plan into DIR/plans/plan_NNN.yaml. */
static int sweep_plan(const cli *c, const bp_table *t, const bp_config *cfg,
                      const bp_sens_result *sens, const bp_solve_request *req,
                      const bp_solve_result *r, const char *dir, size_t i, bp_error *err)
{
    bp_plan plan;
    char name[64];
    if (!c->plans || !r->chosen)
        return 0;
    snprintf(name, sizeof name, "plans/plan_%03zu.yaml", i);
    char *path = bp_path_join(dir, name, err), *pdir = path ? bp_path_dir(path, err) : NULL;
    int rc = path && pdir && bp_mkdirs(pdir, err) == 0 ? 0 : -1;
    if (rc == 0 && (rc = bp_make_plan(t, r, cfg, sens, req, &plan, err)) == 0) {
        rc = bp_plan_write_yaml(&plan, path, err);
        free(plan.layers);
    }
    free(path);
    free(pdir);
    return rc;
}

static int sweep_solve_all(const cli *c, const bp_table *t, const bp_config *cfg,
                           const bp_sens_result *sens, const double *v, size_t n,
                           const char *dir, bp_sweep *sw, bp_error *err)
{
    double t0 = bp_now();
    for (size_t i = 0; i < n; i++) {
        bp_solve_request req;
        bp_solve_result r;
        request_from(c, cfg, &req);
        req.budget = (bp_budget_spec){0, 0, -1.0, 0, 0, BP_MIN_AUTO};
        if (!strcmp(c->sweep_opt, "--avg-bits"))
            req.budget.avg_bits = v[i];
        else if (!strcmp(c->sweep_opt, "--max-bytes"))
            req.budget.max_bytes = v[i];
        else if (!strcmp(c->sweep_opt, "--max-bops"))
            req.budget.max_bops = v[i];
        else if (!strcmp(c->sweep_opt, "--max-latency"))
            req.budget.max_latency = v[i];
        else
            req.budget.max_error = v[i];
        sweep_progress(c, i, n, t0);
        if (bp_solve_table(t, &req, &r, err) < 0 && !r.infeasible)
            return -1;
        int rc = bp_sweep_add_plan(sw, t, v[i], &r, err);
        if (rc == 0)
            rc = sweep_plan(c, t, cfg, sens, &req, &r, dir, i, err);
        bp_solve_result_free(&r);
        if (rc < 0)
            return -1;
    }
    if (c->progress)
        fprintf(stderr, "\r\033[K");
    return 0;
}

static void sweep_summary(const bp_sweep *sw, const char *csv, const char *svg, double secs)
{
    printf("%-13s %12s %11s %10s %14s %14s\n", "kind", sw->budget_name, "status", "avg bits",
           "bytes", "error");
    for (size_t i = 0; i < sw->n; i++) {
        const bp_sweep_point *p = &sw->p[i];
        printf("%-13s %12g %11s %10.4f %14.0f %14.6g\n", p->kind, p->budget, p->status,
               p->avg_bits, p->weight_bytes, p->error);
    }
    printf("frontier: %s\nplot: %s\ntime: %.2f s\n", csv, svg, secs);
}

/* pareto.csv: at most this many (point, layer) cells (about 60 MB) */
#define PARETO_CELLS 20000000u

static int cmd_sweep(cli *c)
{
    bp_config cfg;
    bp_sens_result sens;
    bp_table table;
    bp_sweep sw = {0};
    bp_error err;
    double *v = NULL, t0 = bp_now();
    size_t n = 0;
    char *csv = NULL, *svg = NULL;
    if (!c->sweep_spec)
        return usage_error("sweep needs --avg-bits, --max-bytes or --max-error with a list "
                           "or a range START:STOP:STEP");
    if ((c->table != NULL) == (c->arg != NULL))
        return usage_error("sweep takes a CONFIG or --table CSV");
    if (bp_sweep_parse_values(c->sweep_opt, c->sweep_spec, &v, &n, &err) < 0)
        return usage_error(err.msg);
    const bp_config *cp = NULL;
    const bp_table *t = &table;
    int rc = 0;
    memset(&sens, 0, sizeof sens);
    if (c->table) {
        rc = bp_table_read_csv(&table, c->table, &err);
    } else if ((rc = load_config(c, &cfg, &err)) == 0) {
        cp = &cfg;
        rc = sensitivity_with_journal(&cfg, c, &sens, &err);
        t = &sens.table;
    }
    const char *dir = c->output ? c->output : cp ? cp->out_dir : ".";
    sw.budget_name = !strcmp(c->sweep_opt, "--avg-bits")    ? "avg_bits"
                     : !strcmp(c->sweep_opt, "--max-bytes") ? "max_bytes"
                     : !strcmp(c->sweep_opt, "--max-bops")  ? "max_bops"
                     : !strcmp(c->sweep_opt, "--max-latency") ? "max_latency"
                                                            : "max_error";
    if (rc == 0 && bp_mkdirs(dir, &err) < 0)
        rc = -1;
    if (rc == 0 && load_latency(c, cp, &err) < 0)
        rc = -1;
    if (rc == 0 && (!(csv = bp_path_join(dir, "frontier.csv", &err)) ||
                    !(svg = bp_path_join(dir, "frontier.svg", &err))))
        rc = -1;
    if (rc == 0)
        rc = sweep_solve_all(c, t, cp, c->table ? NULL : &sens, v, n, dir, &sw, &err);
    if (rc == 0)
        rc = bp_sweep_add_baselines(&sw, t, &err);
    char *pareto = NULL;
    const char *pareto_note = NULL;
    if (rc == 0 && !(pareto = bp_path_join(dir, "pareto.csv", &err)))
        rc = -1;
    if (rc == 0) {                   /* the exact frontier, when it stays small */
        bp_solve_request req;
        bp_frontier f;
        bp_error ferr;
        request_from(c, cp, &req);
        /* points x layers bounded: memory and pareto.csv stay near 20 M cells */
        size_t nl = bp_table_layer_count(t), cap = PARETO_CELLS / (nl ? nl : 1);
        cap = cap > 200000 ? 200000 : cap < 16 ? 16 : cap;
        static char note[160];
        if (bp_table_frontier(t, &req, cap, &f, &ferr) < 0) {
            snprintf(note, sizeof note, "skipped (more than %zu points for %zu layers; "
                     "frontier.csv has the plans)", cap, nl);
            pareto_note = note;
        } else {
            rc = bp_sweep_write_pareto(t, &f, pareto, &err);
            bp_frontier_free(&f);
        }
    }
    if (rc == 0)
        rc = bp_sweep_write_csv(&sw, csv, &err);
    if (rc == 0)
        rc = bp_sweep_write_svg(&sw, svg, &err);
    if (rc == 0 && !c->quiet) {
        sweep_summary(&sw, csv, svg, bp_now() - t0);
        printf("exact frontier: %s\n", pareto_note ? pareto_note : pareto);
    }
    free(pareto);
    if (rc < 0)
        die(&err);
    bp_sweep_free(&sw);
    free(v);
    free(csv);
    free(svg);
    if (c->table)
        bp_table_free(&table);
    else if (cp) {
        bp_sens_result_free(&sens);
        bp_config_free(&cfg);
    }
    return rc < 0 ? 1 : 0;
}

static int cmd_inspect(cli *c)
{
    bp_tensorset ts;
    bp_model m;
    bp_error err;
    char *all[] = {"*"};
    if (!c->arg)
        return usage_error("missing FILE argument");
    if (bp_tensorset_open(&ts, c->arg, &err) < 0)
        return die(&err);
    size_t n = bp_tensorset_count(&ts);
    printf("%s: %zu tensors\n", c->arg, n);
    for (size_t i = 0; i < n; i++) {
        bp_tensor_ref t = bp_tensorset_get(&ts, i);
        printf("  %-40s %-5s [", t.name, bp_dtype_name(t.dtype));
        for (int d = 0; d < t.rank; d++)
            printf("%s%lld", d ? ", " : "", (long long)t.shape[d]);
        printf("]\n");
    }
    if (!ts.is_dir && ts.st.n_meta) {
        printf("metadata:\n");
        for (size_t i = 0; i < ts.st.n_meta; i++)
            printf("  %-40s %s\n", ts.st.meta[i].key, ts.st.meta[i].value);
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
            printf("a statistics file (model.calibration): sums of the inputs' squares and "
                   "products, read by bitplan in place of rows\n");
        else
            printf("a calibration file (model.calibration): inputs of %zu layers (NAME.input), "
                   "%zu with gradients squared (NAME.grad2), %zu with an output Fisher, %zu "
                   "with a decision Fisher\n", inputs, grad2, fisher, margin);
        bp_tensorset_close(&ts);
        return 0;
    }
    bp_tensorset_close(&ts);
    if (quantized) {              /* a plan's quantized weights: check them */
        printf("bitplan quantized weights:\n");
        return bp_check_quantized(c->arg, stdout, &err) < 0 ? die(&err) : 0;
    }
    if (bp_model_open(&m, c->arg, NULL, all, 1, NULL, 0, &err) < 0) {
        printf("layers: none (%s)\n", err.msg);
        return 0;
    }
    int64_t total = 0;
    printf("layers: %zu\n", m.n_layers);
    for (size_t i = 0; i < m.n_layers; i++) {
        const bp_layer_desc *d = &m.layers[i];
        char kind[64];
        if (d->is_conv)
            snprintf(kind, sizeof kind, "conv %dx%d", d->kh, d->kw);
        else
            snprintf(kind, sizeof kind, "linear");
        printf("  %-40s %-10s out %-6lld in %-7lld params %-10lld%s\n", d->name, kind,
               (long long)d->out, (long long)d->in, (long long)(d->out * d->in),
               d->bias >= 0 ? " +bias" : "");
        total += d->out * d->in;
    }
    printf("total params in layers: %lld\n", (long long)total);
    bp_model_close(&m);
    return 0;
}

static int cmd_export(cli *c)
{
    bp_error err;
    if (!c->arg)
        return usage_error("export needs a PLAN file (plan.yaml or plan.json)");
    if (!c->format)
        return usage_error("export needs --format llamacpp|gptqmodel|llmcompressor|autoround");
    int f = bp_export_format(c->format);
    if (f < 0) {
        bp_export_unknown(c->format, &err);
        char msg[sizeof err.msg + 16];
        snprintf(msg, sizeof msg, "--format: %s", err.msg);
        return usage_error(msg);
    }
    bp_config cfg;
    if (c->config && bp_config_load(&cfg, c->config, &err) < 0)
        return die(&err);
    char *def = c->config && !c->output ? bp_path_join(cfg.out_dir, bp_export_files[f], &err)
                                        : NULL;
    const char *out = c->output ? c->output : def ? def : bp_export_files[f];
    int rc = c->config && !c->output && !def ? -1
             : c->config && lock_outputs(&cfg, &err) < 0
                 ? -1
                 : export_plan(c->arg, c->format, out, c->config ? &cfg : NULL,
                               c->llama_names || (c->config && cfg.llama_names), c->compress,
                               c->quiet, &err);
    if (rc == 0 && !c->quiet && strcmp(out, "-") != 0)
        printf("%s: %s\n", c->format, out);
    free(def);
    if (c->config)
        bp_config_free(&cfg);
    return rc < 0 ? die(&err) : 0;
}

/* n bytes of buf to stdout (path NULL or "-") or atomically to path. */
static int write_output(const char *path, const char *buf, size_t n, bp_error *err)
{
    if (!path || !strcmp(path, "-"))
        return fwrite(buf, 1, n, stdout) == n ? 0 : bp_fail(err, "cannot write to stdout");
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    fwrite(buf, 1, n, a.fp);
    return bp_atomic_commit(&a, err);
}

/* candidates CONFIG [-o FILE]: the solver's program as CSV. */
static int cmd_candidates(cli *c)
{
    bp_config cfg;
    bp_sens_result sens;
    bp_error err;
    if (!c->arg)
        return usage_error("missing CONFIG argument");
    if (load_config(c, &cfg, &err) < 0)
        return die(&err);
    int rc = load_choices(c, &err) < 0 || sensitivity_with_journal(&cfg, c, &sens, &err) < 0
             ? -1 : 0;
    if (rc == 0) {
        bp_solve_request req;
        char *buf = NULL;
        size_t n = 0;
        FILE *mem = open_memstream(&buf, &n);
        request_from(c, &cfg, &req);
        rc = mem ? bp_write_program(&sens.table, &req, mem, &err) : bp_fail(&err, "out of memory");
        if (mem)
            fclose(mem);
        if (rc == 0)
            rc = write_output(c->output, buf, n, &err);
        free(buf);
        bp_sens_result_free(&sens);
    }
    bp_config_free(&cfg);
    return rc < 0 ? die(&err) : 0;
}

/* quantize --plan PLAN: the plan with every layer at `all`, solved over the
 * measured (or cached) table like run's, written to PLAN only (the weights
 * are cmd_quantize's -o).  Returns an exit status. */
static int uniform_plan(cli *c, bp_config *cfg, bp_choice *all, double t0)
{
    bp_sens_result sens;
    bp_error err;
    cli u = *c;                    /* the same command line, solving for the uniform plan */
    u.fixed = all, u.n_fixed = 1, u.budget_set = 1, u.quiet = 1, u.output = c->q_plan;
    u.budget = (bp_budget_spec){0, 0, -1.0, 0, 0, BP_MIN_AUTO};
    char *weights_out = cfg->weights_out;
    cfg->weights_out = NULL;
    int rc = sensitivity_with_journal(cfg, &u, &sens, &err) < 0 ? die(&err) : 0;
    if (rc == 0) {
        rc = solve_and_write(&u, &sens.table, cfg, &sens, t0);
        bp_sens_result_free(&sens);
    }
    if (u.has_latency && !c->has_latency)     /* loaded for the copy only */
        bp_latency_free(&u.latency);
    cfg->weights_out = weights_out;
    return rc;
}

/* quantize CONFIG --wbits B [--abits A] [--quantizer Q] -o FILE [--plan PLAN] */
static int cmd_quantize(cli *c)
{
    bp_config cfg;
    bp_error err;
    double t0 = bp_now();
    if (!c->arg)
        return usage_error("missing CONFIG argument");
    if (!c->q_wbits)
        return usage_error("quantize needs --wbits B (2..16)");
    if (!c->output || !strcmp(c->output, "-"))
        return usage_error("quantize needs -o FILE for the quantized weights");
    if (c->q_quantizer && bp_wquantizer_parse(c->q_quantizer) < 0)
        return usage_error("--quantizer: expected rtn, gptq, squant or erq");
    if (load_config(c, &cfg, &err) < 0)
        return die(&err);
    int abits = c->q_abits;
    for (size_t i = 0; !c->q_abits && i < cfg.n_abits; i++)
        abits = cfg.abits[i] > abits ? cfg.abits[i] : abits;   /* default: the widest */
    const char *q = c->q_quantizer ? c->q_quantizer : bp_wquantizer_name(cfg.quantizers[0]);
    bp_choice all = {NULL, c->q_wbits, abits, q};
    int rc = c->q_plan ? uniform_plan(c, &cfg, &all, t0) : 0;
    if (rc) {
        bp_config_free(&cfg);
        return rc;
    }
    bp_model m;
    bp_plan plan;
    memset(&plan, 0, sizeof plan);
    rc = bp_model_open(&m, cfg.weights, cfg.calibration, cfg.include, cfg.n_include, cfg.exclude,
                       cfg.n_exclude, &err);
    if (rc == 0 && !(plan.layers = bp_calloc(m.n_layers, sizeof *plan.layers, &err)))
        rc = -1;
    for (size_t i = 0; rc == 0 && i < m.n_layers; i++)
        plan.layers[i] = (bp_plan_layer){.name = m.layers[i].name, .wbits = c->q_wbits,
                                         .abits = abits, .quantizer = q, .symmetric = -1,
                                         .act_symmetric = -1,
                                         .params = m.layers[i].out * m.layers[i].in};
    plan.n_layers = rc == 0 ? m.n_layers : 0;
    c->stage = "quantize";
    if (rc == 0)
        rc = bp_write_quantized(&cfg, &plan, c->output, cfg.dequantized, progress, c, &err);
    if (rc == 0 && !c->quiet)
        printf("quantized %zu layers at %d-bit weights, %d-bit activations (%s) -> %s%s%s in "
               "%.2f s\n", plan.n_layers, c->q_wbits, abits, q, c->output,
               c->q_plan ? ", plan " : "", c->q_plan ? c->q_plan : "", bp_now() - t0);
    if (rc < 0)
        die(&err);
    free(plan.layers);
    if (m.layers)
        bp_model_close(&m);
    bp_config_free(&cfg);
    return rc < 0 ? 1 : 0;
}

/* One layer's grids as JSON: every quantizer's activation setting at every
 * width below 16 bits, fitted on the layer's rows; the same grid once. */
static int layer_grids(const bp_config *cfg, const bp_model *m, size_t i, FILE *fp, int first,
                       bp_error *err)
{
    bp_loaded_layer l;
    if (bp_model_load_layer(m, i, &l, err) < 0)
        return -1;
    const bp_layer *v = &l.view;
    int64_t w = v->in * v->groups;
    float *sc = bp_malloc((size_t)(2 * w * (int64_t)(cfg->n_abits * cfg->n_quantizers + 1)) *
                          sizeof *sc, err);
    int64_t *cnt = bp_calloc(cfg->n_abits * cfg->n_quantizers + 1, sizeof *cnt, err);
    int *kb = bp_calloc(2 * (cfg->n_abits * cfg->n_quantizers + 1), sizeof *kb, err);
    int rc = sc && cnt && kb ? 0 : -1, ng = 0;
    if (rc == 0 && !v->X)
        rc = bp_fail(err, "%s: layer '%s' has no calibration rows ('%s.input') to fit "
                     "activation grids on", m->calib.path, v->name, v->name);
    fprintf(fp, "%s\n  {\"layer\": ", first ? "" : ",");
    bp_json_string(fp, v->name);
    fputs(", \"grids\": [", fp);
    for (size_t q = 0; rc == 0 && q < cfg->n_quantizers; q++)
        for (size_t a = 0; rc == 0 && a < cfg->n_abits; a++) {
            bp_qspec s = bp_config_acts_for_quantizer(cfg, v->name, cfg->quantizers[q]);
            s.bits = cfg->abits[a];
            if (s.bits >= BP_BITS_FLOAT)
                continue;
            if (s.kind == BP_AQ_UNIFORM && s.granularity != BP_GRAN_TENSOR) {
                rc = bp_fail(err, "layer '%s': %s activation grids are fitted per row as the "
                             "data comes and cannot be expressed as statistics; use "
                             "per_tensor, ptf or log2 activations, or capture rows", v->name,
                             bp_granularity_name(s.granularity));
                break;
            }
            float *g = sc + 2 * w * ng;
            int64_t c = bp_act_grid(v->X, v->n, w, &s, g, g + w);
            int dup = 0;
            for (int j = 0; j < ng && !dup; j++)
                dup = kb[2 * j] == (int)s.kind && kb[2 * j + 1] == s.bits && cnt[j] == c &&
                      memcmp(sc + 2 * w * j, g, (size_t)c * sizeof *g) == 0 &&
                      memcmp(sc + 2 * w * j + w, g + w, (size_t)c * sizeof *g) == 0;
            if (dup)
                continue;
            kb[2 * ng] = (int)s.kind, kb[2 * ng + 1] = s.bits, cnt[ng] = c;
            fprintf(fp, "%s\n    {\"kind\": \"%s\", \"bits\": %d, \"scale\": [", ng ? "," : "",
                    bp_qkind_name(s.kind), s.bits);
            for (int64_t j = 0; j < c; j++)
                fprintf(fp, "%s%.9g", j ? ", " : "", (double)g[j]);
            fputs("], \"zero\": [", fp);
            for (int64_t j = 0; j < c; j++)
                fprintf(fp, "%s%.9g", j ? ", " : "", (double)g[w + j]);
            fputs("]}", fp);
            ng++;
        }
    fputs("]}", fp);
    free(sc);
    free(cnt);
    free(kb);
    bp_loaded_layer_free(&l);
    return rc;
}

/* grids CONFIG --calibration ROWS [-o FILE] */
static int cmd_grids(cli *c)
{
    bp_config cfg;
    bp_model m;
    bp_error err;
    if (!c->arg)
        return usage_error("missing CONFIG argument");
    if (!c->calibration)
        return usage_error("grids needs --calibration FILE (calibration rows to fit on)");
    if (load_config(c, &cfg, &err) < 0)
        return die(&err);
    if (bp_model_open(&m, cfg.weights, c->calibration, cfg.include, cfg.n_include, cfg.exclude,
                      cfg.n_exclude, &err) < 0) {
        bp_config_free(&cfg);
        return die(&err);
    }
    char *buf = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&buf, &n);
    int rc = mem ? 0 : bp_fail(&err, "out of memory");
    if (rc == 0)
        fputs("{\"format\": \"bitplan-grids-v1\", \"layers\": [", mem);
    for (size_t i = 0; rc == 0 && i < m.n_layers; i++)
        rc = layer_grids(&cfg, &m, i, mem, i == 0, &err);
    if (mem) {
        fputs("\n]}\n", mem);
        fclose(mem);
    }
    if (rc == 0)
        rc = write_output(c->output, buf, n, &err);
    free(buf);
    bp_model_close(&m);
    bp_config_free(&cfg);
    return rc < 0 ? die(&err) : 0;
}

/* Ranks above 0 of mpirun: the same command line, only the measurement. */
static int worker_main(cli *c)
{
    bp_config cfg;
    bp_error err;
    int has_config = c->arg && !c->table &&
                     (!strcmp(c->command, "run") || !strcmp(c->command, "sensitivity") ||
                      !strcmp(c->command, "solve") || !strcmp(c->command, "sweep") ||
                      !strcmp(c->command, "candidates") || !strcmp(c->command, "quantize"));
    int loaded = has_config && load_config(c, &cfg, &err) == 0;
    if (!has_config)
        bp_fail(&err, "command '%s' has no sensitivity stage", c->command);
    bp_sens_worker(loaded ? &cfg : NULL, &err);
    if (loaded)
        bp_config_free(&cfg);
    bp_dist_finalize();
    return 0;
}

static int dispatch(cli *c)
{
    if (!strcmp(c->command, "grids"))
        return cmd_grids(c);
    if (!strcmp(c->command, "run"))
        return cmd_config_pipeline(c, 1);
    if (!strcmp(c->command, "sensitivity"))
        return cmd_config_pipeline(c, 0);
    if (!strcmp(c->command, "solve"))
        return c->table ? cmd_solve_table(c) : cmd_config_pipeline(c, 1);
    if (!strcmp(c->command, "inspect"))
        return cmd_inspect(c);
    if (!strcmp(c->command, "sweep"))
        return cmd_sweep(c);
    if (!strcmp(c->command, "export"))
        return cmd_export(c);
    if (!strcmp(c->command, "quantize"))
        return cmd_quantize(c);
    if (!strcmp(c->command, "candidates"))
        return cmd_candidates(c);
    char msg[256];
    snprintf(msg, sizeof msg, "unknown command '%.100s'", c->command);
    return usage_error(msg);
}

int main(int argc, char **argv)
{
    cli c;
    memset(&c, 0, sizeof c);
    if (argc < 2)
        return fputs(usage_text, stderr), 2;
    c.command = argv[1];
    if (!strcmp(c.command, "help") || !strcmp(c.command, "--help") || !strcmp(c.command, "-h"))
        return fputs(usage_text, stdout), 0;
    for (int i = 2; i < argc; i++)      /* every command answers --help */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return fputs(usage_text, stdout), 0;
    if (!strcmp(c.command, "--version") || !strcmp(c.command, "version"))
#ifdef BITPLAN_MPI
        return printf("bitplan %s (mpi)\n", BP_VERSION), 0;
#else
        return printf("bitplan %s\n", BP_VERSION), 0;
#endif
    /* Layers are measured one after another with the same large buffers: keep
     * freed memory in the heap instead of returning it to the kernel, so the
     * next layer reuses it without page faults. */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    if (bp_dist_init(&argc, &argv) < 0)
        return fputs("bitplan: error: MPI_Init failed\n", stderr), 1;
    int rc = parse_args(&c, argc - 1, argv + 1);
    if (rc) {
        bp_dist_abort(rc);
        return rc;
    }
    if (bp_dist_rank() > 0)          /* a worker: measure what rank 0 deals */
        return worker_main(&c);
    rc = dispatch(&c);
    if (bp_dist_size() > 1) {        /* failed: end every rank; done: release them */
        fflush(stdout);
        fflush(stderr);
        if (rc)
            bp_dist_abort(rc);
        for (int r = 1; r < bp_dist_size(); r++)
            bp_dist_send(r, BP_MSG_STOP, "", 0, 1);
    }
    bp_dist_finalize();
    const char *prof = getenv("BITPLAN_PROFILE");
    if (prof && *prof && strcmp(prof, "0") != 0)
        bp_profile_report(stderr);
    if (c.has_latency)
        bp_latency_free(&c.latency);
    if (c.choices) {
        free(c.fixed);
        bp_export_plan_free(&c.chosen);
    }
    return rc;
}
