/*
 * main.c - the bitplan command: argument parsing, progress, summaries and
 * error printing.  The only file that talks to the terminal.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/bp_file.h"
#include "bp_version.h"
#include "config.h"
#include "model.h"
#include "pipeline.h"
#include "qweights.h"

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
    "  solve --table CSV (--avg-bits X | --max-bytes N | --max-error E)\n"
    "                        solve over any table with columns layer,wbits,abits,error,params\n"
    "  inspect FILE          list the tensors and the layers found in a model file\n"
    "  help                  this text\n"
    "\n"
    "options:\n"
    "  -o, --output FILE     sensitivity: table path; solve: plan path (.json -> JSON,\n"
    "                        '-' -> YAML on stdout)\n"
    "  --avg-bits X          budget: average weight bits, scales included\n"
    "  --max-bytes N         budget: total weight bytes, scales included\n"
    "  --max-error E         budget: total predicted error (then size is minimised)\n"
    "  --time-limit S        solver time limit in seconds (default 60)\n"
    "  --force               ignore the cached sensitivity table and measure again\n"
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
    double t_start, t_last;
} cli;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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
    double t = now();
    if (done == 0)
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
    fprintf(stderr, "\r\033[Ksensitivity: layer %zu/%zu %.40s  %.2f layers/s  ETA %s",
            done + 1, total, layer, rate, eta);
    fflush(stderr);
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
    enum { O_AVG = 256, O_BYTES, O_ERROR, O_TABLE, O_TIME, O_FORCE };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"quiet", no_argument, 0, 'q'},
        {"avg-bits", required_argument, 0, O_AVG}, {"max-bytes", required_argument, 0, O_BYTES},
        {"max-error", required_argument, 0, O_ERROR}, {"table", required_argument, 0, O_TABLE},
        {"time-limit", required_argument, 0, O_TIME}, {"force", no_argument, 0, O_FORCE},
        {0, 0, 0, 0}};
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
        case O_AVG: rc = parse_number("--avg-bits", optarg, 1e-9, &c->budget.avg_bits); c->budget_set = 1; break;
        case O_BYTES: rc = parse_number("--max-bytes", optarg, 1, &c->budget.max_bytes); c->budget_set = 1; break;
        case O_ERROR: rc = parse_number("--max-error", optarg, 0, &c->budget.max_error); c->budget_set = 1; break;
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
    if (strcmp(path, "-") == 0) {
        char tmp[] = "/tmp/bitplan-plan-XXXXXX";
        int fd = mkstemp(tmp);
        if (fd < 0)
            return bp_fail(err, "cannot create a temporary file");
        close(fd);
        int rc = bp_plan_write_yaml(p, tmp, err);
        char *text;
        size_t n;
        if (rc == 0 && (rc = bp_read_file(tmp, &text, &n, err)) == 0) {
            fwrite(text, 1, n, stdout);
            free(text);
        }
        remove(tmp);
        return rc;
    }
    return ends_with(path, ".json") ? bp_plan_write_json(p, path, err)
                                    : bp_plan_write_yaml(p, path, err);
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
    printf("predicted error: %.6g (%s)\n", p->total_error, p->metric ? p->metric : "table");
    printf("solver: %s %s, objective %s = %.6g, %.3f s\n", p->solver, p->status,
           p->objective_name, p->objective, p->seconds);
    if (s)
        printf("sensitivity: %s, %zu rows, %.2f s\n", s->from_cache ? "cached" : "measured",
               s->table.n, s->seconds);
    printf("plan: %s\n", written);
    printf("time: %.2f s\n", total_seconds);
}

/* ---- commands ----------------------------------------------------------- */

static void request_from(const cli *c, const bp_config *cfg, bp_solve_request *req)
{
    memset(req, 0, sizeof *req);
    req->budget = cfg ? cfg->budget : (bp_budget_spec){0, 0, -1.0};
    if (c->budget_set)
        req->budget = c->budget;
    req->pins = cfg ? cfg->pins : NULL;
    req->n_pins = cfg ? cfg->n_pins : 0;
    req->time_limit = c->time_limit > 0 ? c->time_limit : cfg ? cfg->time_limit : 60.0;
    req->mip_gap = cfg ? cfg->mip_gap : 0.0;
}

static int has_budget(const bp_budget_spec *b)
{
    return b->avg_bits > 0 || b->max_bytes > 0 || b->max_error >= 0;
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
    request_from(c, cfg, &req);
    if (bp_solve_table(t, &req, &r, &err) < 0)
        return die(&err);
    int rc = bp_make_plan(t, &r, cfg, sens, &req, &plan, &err);
    if (rc == 0 && c->table)
        plan.table_path = c->table;
    const char *shown = NULL;
    if (rc == 0 && c->output) {
        rc = write_plan_to(&plan, c->output, &err);
        shown = c->output;
    } else if (rc == 0) {
        if (!(yaml_path = bp_path_join(cfg->out_dir, cfg->plan_name, &err)))
            rc = -1;
        if (rc == 0 && cfg->write_json) {
            size_t n = strlen(yaml_path);
            json_path = bp_malloc(n + 6, &err);
            if (!json_path) {
                rc = -1;
            } else {
                snprintf(json_path, n + 6, "%.*s.json",
                         (int)(ends_with(yaml_path, ".yaml") ? n - 5
                               : ends_with(yaml_path, ".yml") ? n - 4 : n), yaml_path);
                rc = bp_plan_write_json(&plan, json_path, &err);
            }
        }
        if (rc == 0 && cfg->write_yaml)
            rc = bp_plan_write_yaml(&plan, yaml_path, &err);
        shown = cfg->write_yaml ? yaml_path : json_path;
    }
    char *qpath = NULL;
    if (rc == 0 && cfg && cfg->weights_out && !c->table) {
        if (bp_mkdirs(cfg->out_dir, &err) < 0 ||
            !(qpath = bp_path_join(cfg->out_dir, cfg->weights_out, &err)) ||
            bp_write_quantized(cfg, &plan, qpath, cfg->dequantized, &err) < 0)
            rc = -1;
    }
    if (rc == 0 && !c->quiet && !(c->output && strcmp(c->output, "-") == 0)) {
        print_summary(&plan, sens, shown, now() - t0);
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
    double t0 = now();
    if (!c->arg)
        return usage_error("missing CONFIG argument");
    if (bp_config_load(&cfg, c->arg, &err) < 0)
        return die(&err);
    if (solve && !c->budget_set && !bp_config_has_budget(&cfg)) {
        bp_config_free(&cfg);
        bp_fail(&err, "%s: no budget: set budget.avg_bits, budget.max_bytes or "
                "budget.max_error (or pass --avg-bits, --max-bytes or --max-error)", c->arg);
        return die(&err);
    }
    int rc = 0;
    if (bp_run_sensitivity(&cfg, c->force, progress, c, &sens, &err) < 0) {
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
                   sens.from_cache ? "cached" : "measured", sens.seconds,
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
    double t0 = now();
    if (c->arg)
        return usage_error("solve --table takes no CONFIG argument");
    if (!has_budget(&c->budget))
        return usage_error("solve --table needs --avg-bits, --max-bytes or --max-error");
    if (!c->output)
        c->output = "plan.yaml";
    if (bp_table_read_csv(&t, c->table, &err) < 0)
        return die(&err);
    int rc = solve_and_write(c, &t, NULL, NULL, t0);
    bp_table_free(&t);
    return rc;
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
    const char *fmt = bp_tensorset_meta(&ts, "format");
    int quantized = fmt && strcmp(fmt, "bitplan-quantized/1") == 0;
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

int main(int argc, char **argv)
{
    cli c;
    memset(&c, 0, sizeof c);
    if (argc < 2)
        return fputs(usage_text, stderr), 2;
    c.command = argv[1];
    if (!strcmp(c.command, "help") || !strcmp(c.command, "--help") || !strcmp(c.command, "-h"))
        return fputs(usage_text, stdout), 0;
    if (!strcmp(c.command, "--version") || !strcmp(c.command, "version"))
        return printf("bitplan %s\n", BP_VERSION), 0;
    int rc = parse_args(&c, argc - 1, argv + 1);
    if (rc)
        return rc;
    if (!strcmp(c.command, "run"))
        return cmd_config_pipeline(&c, 1);
    if (!strcmp(c.command, "sensitivity"))
        return cmd_config_pipeline(&c, 0);
    if (!strcmp(c.command, "solve"))
        return c.table ? cmd_solve_table(&c) : cmd_config_pipeline(&c, 1);
    if (!strcmp(c.command, "inspect"))
        return cmd_inspect(&c);
    char msg[256];
    snprintf(msg, sizeof msg, "unknown command '%.100s'", c.command);
    return usage_error(msg);
}
