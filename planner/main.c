/*
 * main.c - the bitplan command: parses the command line, calls the library
 * (include/bitplan.h) and prints: summaries on stdout, progress on a
 * terminal's stderr, one line per error.  The only file that talks to the
 * terminal.
 */
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../include/bitplan.h"

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
    "  init SOURCE [-o CONFIG]\n"
    "                        a commented, working config for a capture directory or a\n"
    "                        model file (default bitplan.yaml; never overwrites)\n"
    "  inspect FILE          what a file bitplan reads or writes is and holds, checked\n"
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
    "  --max-file-bytes N    budget (a GGUF model): the quantized GGUF's size in bytes\n"
    "  --max-bytes-of FILE   budget (a GGUF model): at most FILE's size (e.g. a Q4_K_M GGUF)\n"
    "  --bpw X               budget (a GGUF model): bits per weight as llama.cpp reports them\n"
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
    "  --output-dir DIR      run/solve: write the output set (plan, exports, weights) into\n"
    "                        DIR instead of output.dir; the table stays cached there\n"
    "  --choices PLAN        run/solve: take these layers' candidates from PLAN (YAML or\n"
    "                        JSON, e.g. a refined plan) instead of choosing them\n"
    "  -q, --quiet           no progress and no summary (errors still go to stderr)\n"
    "  --version             print the version\n"
    "  -h, --help            this text; COMMAND --help: the command's own\n"
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
    int progress;             /* 0 quiet; 1 stderr is a terminal: one line redrawn;
                               * 2 a pipe or file: a line every PROGRESS_EVERY s */
    double t_start, t_last;
    const char *sweep_spec;   /* sweep: the budget list as given */
    const char *sweep_opt;    /* which budget flag it came with */
    int plans;                /* sweep --plans */
    const char *latency_path; /* --latency FILE */
    const char *format;       /* export --format */
    const char *output_dir;   /* run/solve --output-dir: the output set's directory */
    int llama_names;          /* export --llama-names */
    int compress;             /* export --compress-blocks */
    int q_wbits, q_abits;     /* quantize --wbits / --abits (0: not given) */
    const char *q_quantizer;  /* quantize --quantizer */
    const char *q_plan;       /* quantize --plan FILE */
    const char *choices;      /* run/solve --choices PLAN */
    const char *metric;       /* --metric NAME */
    const char *errors;       /* --errors FILE: the errors to plan with */
    const char *metric_scales; /* --metric-scales FILE */
    const char *calibration;  /* grids --calibration FILE */
    const char *config;       /* export --config FILE */
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

static int usage_error2(const char *opt, const char *msg)
{
    char buf[BP_ERROR_MAX + 64];
    snprintf(buf, sizeof buf, "%s: %s", opt, msg);
    return usage_error(buf);
}

/* No budget: the library's message, and the command line's way to give one. */
static int die_budget(bp_error *err)
{
    if (!strstr(err->msg, "no budget"))
        return fprintf(stderr, "bitplan: error: %s\n", err->msg), 1;
    fprintf(stderr, "bitplan: error: %s (or pass --avg-bits, --max-bytes, --max-error, "
            "--max-bops, --max-latency, or for a GGUF --max-file-bytes, --max-bytes-of or "
            "--bpw)\n", err->msg);
    return 1;
}

/* ---- progress (stderr) -------------------------------------------------- */

/* In a log (stderr not a terminal) a line every BITPLAN_PROGRESS_SECONDS
 * (default 15), none for shorter work. */
static double progress_every(void)
{
    static double every = -1.0;
    if (every < 0) {
        const char *e = getenv("BITPLAN_PROGRESS_SECONDS");
        char *end;
        double v = e ? strtod(e, &end) : 15.0;
        every = e && (*end || !(v >= 0) || !isfinite(v)) ? 15.0 : v;
    }
    return every;
}

static void progress(void *ctx, const char *stage, size_t done, size_t total, const char *what)
{
    cli *c = ctx;
    if (!c->progress)
        return;
    double t = now();
    if (done == 0 || c->t_start == 0)
        c->t_start = c->t_last = t;
    if (!what) {
        if (c->progress == 1)
            fprintf(stderr, "\r\033[K");
        else if (t - c->t_start >= progress_every())
            fprintf(stderr, "%s: %zu/%zu done in %.0fs\n", stage, total, total, t - c->t_start);
        fflush(stderr);
        c->t_start = 0;
        return;
    }
    if (c->progress == 2 && t - c->t_last < progress_every())
        return;
    c->t_last = t;
    double el = t - c->t_start, rate = done && el > 0 ? (double)done / el : 0.0;
    char eta[32] = "--";
    if (rate > 0)
        snprintf(eta, sizeof eta, "%.0fs", (double)(total - done) / rate);
    const char *start = c->progress == 1 ? "\r\033[K" : "", *end = c->progress == 1 ? "" : "\n";
    if (!strcmp(stage, "sweep"))
        fprintf(stderr, "%ssweep: budget %zu/%zu  %.1f plans/s  ETA %s%s", start, done + 1, total,
                rate, eta, end);
    else
        fprintf(stderr, "%s%s: layer %zu/%zu %.40s  %.2f layers/s  ETA %s%s", start, stage,
                done + 1, total, what, rate, eta, end);
    fflush(stderr);
}

/* ---- interrupts ---------------------------------------------------------- */

static void on_signal(int sig)
{
    static volatile sig_atomic_t seen;
    if (seen)                        /* a second signal: stop right away */
        signal(sig, SIG_DFL), raise(sig);
    seen = 1;
    bp_interrupt();
}

/* SIGINT/SIGTERM finish the layer in progress during the sensitivity stage
 * (its journal then resumes the next run); elsewhere they act as usual. */
static int measure_interruptible(bp_session *s, bp_error *err)
{
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = bp_measure(s, err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

/* ---- argument parsing --------------------------------------------------- */
/* ---- per-command help: the command's synopsis and what it does, then the
 * lines of usage_text's options it takes ------------------------------------ */

static const struct {
    const char *name, *text, *opts, *example;
} command_help[] = {
    {"run", "usage: bitplan run CONFIG [budget flags] [--force] [--metric M] [--metric-scales FILE]\n"
            "                  [--errors FILE] [--choices PLAN] [--latency FILE] [--time-limit S]\n"
            "                  [--output-dir DIR | -o PLAN] [-q]\n\n"
            "Measure the sensitivity table (reused from output.dir while valid), solve for the\n"
            "config's budget (or the budget flags'), and write the config's outputs into\n"
            "output.dir as one set: the plan (YAML, JSON), the exports in output.formats\n"
            "and output.weights; print a summary.\n",
     "output output-dir avg-bits max-bytes max-error max-bops max-latency max-file-bytes "
     "max-bytes-of bpw latency time-limit force metric errors metric-scales choices quiet",
     "bitplan run configs/demo.yaml --avg-bits 4"},
    {"sensitivity", "usage: bitplan sensitivity CONFIG [-o FILE] [--force] [--metric M] [-q]\n\n"
                    "Measure (or reuse) the sensitivity table only; -o also writes it to FILE.\n",
     "output force metric quiet",
     "bitplan sensitivity my.yaml -o table.csv"},
    {"solve", "usage: bitplan solve CONFIG [budget flags] [--metric M] [--metric-scales FILE]\n"
              "                    [--errors FILE] [--choices PLAN] [--latency FILE] [--time-limit S]\n"
              "                    [--output-dir DIR | -o FILE] [-q]\n"
              "       bitplan solve --table CSV (--avg-bits X | --max-bytes N | --max-bops N |\n"
              "                    --max-latency T | --max-error E) [--latency FILE] [-o FILE]\n\n"
              "As run, but the budget flags replace the config's budget, and -o FILE writes the\n"
              "plan alone there (.json: JSON; '-': YAML on stdout).  With --table: solve over\n"
              "any table with columns layer,wbits,abits,error,params (plan.yaml unless -o).\n",
     "output output-dir table avg-bits max-bytes max-error max-bops max-latency max-file-bytes "
     "max-bytes-of bpw latency time-limit force metric errors metric-scales choices quiet",
     "bitplan solve --table table.csv --max-bytes 1.5e6 -o plan.yaml"},
    {"sweep", "usage: bitplan sweep CONFIG (--avg-bits S | --max-bytes S | --max-bops S |\n"
              "                    --max-latency S | --max-error S) [-o DIR] [--plans] [-q]\n"
              "       bitplan sweep --table CSV (... the same budget lists) [-o DIR] [--plans]\n\n"
              "One plan per budget of the list S (START:STOP:STEP or a comma list) over the\n"
              "cached table, with baselines and the exact frontier: frontier.csv, frontier.svg\n"
              "and pareto.csv in -o DIR (default output.dir; '.' with --table).\n",
     "output table avg-bits max-bytes max-error max-bops max-latency latency time-limit force plans "
     "metric errors metric-scales quiet",
     "bitplan sweep my.yaml --avg-bits 3:6:0.25 -o sweep/"},
    {"candidates", "usage: bitplan candidates CONFIG [-o FILE] [--metric M] [--errors FILE]\n"
                   "                         [--metric-scales FILE] [--choices PLAN]\n\n"
                   "The program the solver sees (after pins, allowed widths, --choices and ties) as\n"
                   "CSV group,choice,layer,wbits,abits,quantizer,error,weight_bits, for tools that\n"
                   "search plans themselves; to stdout unless -o.\n",
     "output metric errors metric-scales choices quiet",
     "bitplan candidates my.yaml -o program.csv"},
    {"quantize", "usage: bitplan quantize CONFIG --wbits B [--abits A] [--quantizer Q] -o FILE\n"
                 "                       [--plan PLAN] [-q]\n\n"
                 "Every layer quantized at one candidate into FILE, in output.weights' layout (a\n"
                 "uniform plan's weights, nothing measured); --plan also writes that uniform plan.\n",
     "output wbits abits quantizer plan quiet",
     "bitplan quantize my.yaml --wbits 4 -o uniform4.safetensors --plan uniform4.yaml"},
    {"export", "usage: bitplan export PLAN --format F [-o FILE] [--llama-names] [--compress-blocks]\n"
               "                     [--config CONFIG] [-q]\n\n"
               "The plan (YAML or JSON) for another quantizer: F is llamacpp, gptqmodel,\n"
               "llmcompressor or autoround.  Warnings name every layer whose setting the consumer\n"
               "cannot apply.  Without -o the file is the format's default name in the current\n"
               "directory (with --config, in its output.dir).\n",
     "output format llama-names compress-blocks config quiet",
     "bitplan export out/plan.yaml --format gptqmodel -o quantize_config.json"},
    {"grids", "usage: bitplan grids CONFIG --calibration ROWS [-o FILE]\n\n"
              "The static activation grid of every layer's activation candidates, fitted on the\n"
              "rows of ROWS as the sensitivity stage fits them, as JSON for tools/capture.py\n"
              "--stats.\n",
     "calibration output",
     "bitplan grids my.yaml --calibration calib.safetensors -o grids.json"},
    {"init", "usage: bitplan init SOURCE [-o CONFIG] [-q]\n\n"
             "A commented, working config for SOURCE: a capture directory (tools/capture.py\n"
             "--out DIR: weights.safetensors with calib.safetensors or stats.safetensors), a\n"
             "safetensors or .npy-directory model, or a GGUF.  The model is opened as run\n"
             "opens it; the quantizer, metric, budget, exports and output.weights follow\n"
             "from what is there.  CONFIG defaults to bitplan.yaml ('-': stdout); an\n"
             "existing file is never overwritten.\n",
     "output quiet",
     "bitplan init captured -o my.yaml"},
    {"inspect", "usage: bitplan inspect FILE\n\n"
                "What FILE is and holds: a model's tensors, metadata and layers (safetensors, GGUF or\n"
                "a .npy directory); a calibration or statistics file, checked; an importance matrix;\n"
                "a quantized-weights file, validated; a config (with its files), a plan, a\n"
                "sensitivity table, its key or journal, a sweep's files, scales, a latency table,\n"
                "grids or an export, each read as bitplan reads it.  Exit 1 when a check fails\n"
                "or FILE is none of these.\n",
     "",
     "bitplan inspect out/q.safetensors"},
};

/* The option lines of usage_text for the names in `opts` (space separated). */
static void print_options(FILE *fp, const char *opts)
{
    static const struct {
        const char *name, *line;
    } extra[] = {
        {"table", "  --table CSV           solve/sweep: plan over this table (columns layer,wbits,abits,\n"
                  "                        error,params) instead of a config\n"},
        {"wbits", "  --wbits B             quantize: the weight width of every layer\n"},
        {"abits", "  --abits A             quantize: the activation width (default: the widest)\n"},
        {"quantizer", "  --quantizer Q         quantize: the weight quantizer (default: the config's first)\n"},
        {"plan", "  --plan PLAN           quantize: also write that uniform plan to PLAN\n"},
        {"format", "  --format F            export: llamacpp, gptqmodel, llmcompressor or autoround\n"},
        {"llama-names", "  --llama-names         export: map PyTorch names to GGUF names\n"},
        {"compress-blocks", "  --compress-blocks     export: one llama.cpp pattern per tensor kind and type\n"},
        {"config", "  --config CONFIG       export: apply the config's export settings, write into its\n"
                   "                        output.dir\n"},
    };
    fputs("\noptions:\n", fp);
    const char *p = opts;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (!n)
            break;
        char key[40], want[48];
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        p += n;
        int done = 0;
        for (size_t k = 0; k < sizeof extra / sizeof *extra && !done; k++)
            if (!strcmp(key, extra[k].name))
                fputs(extra[k].line, fp), done = 1;
        /* the option's line among usage_text's options (its name within the first
         * columns), and the continuation lines under it */
        snprintf(want, sizeof want, "--%s", key);
        const char *line = done ? NULL : strstr(usage_text, "\noptions:\n");
        while (line && (line = strchr(line + 1, '\n'))) {
            const char *hit = strstr(line + 1, want);
            const char *end = strchr(line + 1, '\n');
            size_t wl = strlen(want);
            if (hit && end && hit < end && hit - line < 12 &&
                (hit[wl] == ' ' || hit[wl] == '\n'))
                break;
        }
        if (line) {
            const char *e = strchr(line + 1, '\n');
            fwrite(line + 1, 1, (size_t)(e - line), fp);
            while (e && !strncmp(e + 1, "                        ", 24)) {
                const char *f = strchr(e + 1, '\n');
                fwrite(e + 1, 1, (size_t)(f - e), fp);
                e = f;
            }
        }
    }
}

/* bitplan COMMAND --help (0), or -1 for a command without its own help. */
static int command_usage(const char *cmd)
{
    for (size_t i = 0; i < sizeof command_help / sizeof *command_help; i++)
        if (!strcmp(cmd, command_help[i].name)) {
            fputs(command_help[i].text, stdout);
            if (command_help[i].opts[0])
                print_options(stdout, command_help[i].opts);
            printf("\nexample:\n  %s\n", command_help[i].example);
            return 0;
        }
    return -1;
}

/* Does the command take option `name` (its help lists it; --quiet is taken
 * by every command)?  An unknown command takes anything: it is reported as
 * unknown, not its options. */
static int command_takes(const char *cmd, const char *name)
{
    if (!strcmp(name, "quiet"))
        return 1;
    for (size_t i = 0; i < sizeof command_help / sizeof *command_help; i++)
        if (!strcmp(cmd, command_help[i].name)) {
            size_t n = strlen(name);
            for (const char *p = command_help[i].opts; (p = strstr(p, name)); p += n)
                if ((p == command_help[i].opts || p[-1] == ' ') && (p[n] == ' ' || !p[n]))
                    return 1;
            return 0;
        }
    return 1;
}

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
           O_CALIB, O_CONFIG, O_COMPRESS, O_SCALES, O_FILEB, O_BPW, O_BYTES_OF, O_OUTDIR };
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
        {"max-file-bytes", required_argument, 0, O_FILEB}, {"bpw", required_argument, 0, O_BPW},
        {"max-bytes-of", required_argument, 0, O_BYTES_OF},
        {"output-dir", required_argument, 0, O_OUTDIR},
        {0, 0, 0, 0}};
    int sweep = c->command && strcmp(c->command, "sweep") == 0;
    int ch;
    bp_error err;
    c->budget.max_error = -1.0;
    c->time_limit = -1.0;
    optind = 1;
    int li;
    while ((li = -1, ch = getopt_long(argc, argv, "o:q", opts, &li)) != -1) {
        int rc = 0;
        const char *given = li >= 0 ? opts[li].name : ch == 'o' ? "output" : ch == 'q' ? "quiet"
                                                                          : NULL;
        if (given && !command_takes(c->command, given)) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s does not take --%s (see 'bitplan %s --help')",
                     c->command, given, c->command);
            return usage_error(msg);
        }
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
        case O_OUTDIR: c->output_dir = optarg; break;
        case O_COMPRESS: c->compress = 1; break;
        case O_SCALES: c->metric_scales = optarg; break;
        case O_METRIC:
            if (bp_check_name("metric", optarg, &err) < 0)
                return usage_error2("--metric", err.msg);
            c->metric = optarg;
            break;
        case O_QW:
        case O_QA: {
            double v;
            if ((rc = parse_number(ch == O_QW ? "--wbits" : "--abits", optarg, 2, &v)) != 0)
                return rc;
            if (v != floor(v) || v > 16)
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
        case O_FILEB:
            rc = parse_number("--max-file-bytes", optarg, 1, &c->budget.max_file_bytes);
            c->budget_set = 1;
            break;
        case O_BPW:
            rc = parse_number("--bpw", optarg, 1e-9, &c->budget.bpw);
            c->budget_set = 1;
            break;
        case O_BYTES_OF: {
            struct stat sb;
            if (stat(optarg, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0)
                return usage_error2("--max-bytes-of", "expected an existing, non-empty file "
                                    "(its size becomes the file-size budget)");
            c->budget.max_file_bytes = (double)sb.st_size;
            c->budget_set = 1;
            break;
        }
        default: return 2;
        }
        if (rc)
            return rc;
    }
    if (optind < argc)
        c->arg = argv[optind++];
    if (optind < argc)
        return usage_error("too many arguments");
    if (c->output_dir && c->output)
        return usage_error("give one of --output-dir (the output set there) and -o (the plan "
                           "alone)");
    c->progress = c->quiet ? 0 : isatty(STDERR_FILENO) ? 1 : 2;
    return 0;
}

/* ---- sessions -------------------------------------------------------------- */

static bp_options options_of(cli *c)
{
    bp_options o;
    memset(&o, 0, sizeof o);
    o.metric = c->metric, o.metric_scales = c->metric_scales, o.errors = c->errors;
    o.choices = c->choices, o.latency = c->latency_path, o.force = c->force;
    o.time_limit = c->time_limit, o.messages = stderr, o.messages_notes = !c->quiet;
    o.progress = progress, o.progress_ctx = c;
    return o;
}

static int open_config(cli *c, bp_session **s, bp_error *err)
{
    bp_options o = options_of(c);
    if (!c->arg) {
        usage_error("missing CONFIG argument");
        return 2;
    }
    if (bp_open(s, c->arg, &o, err) < 0)
        return die(err);
    if (c->output_dir && bp_set_output_dir(*s, c->output_dir, err) < 0)
        return bp_close(*s), *s = NULL, die(err);
    return 0;
}

static void print_summary(const bp_plan *p, const bp_table_info *t, const char *written,
                          const char *weights, double total_seconds)
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
    if (t)
        printf("sensitivity: %s, %zu rows, %.2f s\n",
               t->from_cache ? "cached" : t->resumed_layers ? "resumed" : "measured", t->rows,
               t->seconds);
    printf("plan: %s\n", written);
    if (weights)
        printf("quantized weights: %s\n", weights);
    printf("time: %.2f s\n", total_seconds);
}

/* Solve the session's table, write the plan (and, without -o, the config's
 * other outputs), print the summary. */
static int solve_and_write(cli *c, bp_session *s, int config, double t0)
{
    bp_plan *plan = NULL;
    bp_error err;
    const char *written = NULL;
    if (bp_solve(s, c->budget_set ? &c->budget : NULL, &plan, &err) < 0 ||
        bp_write(s, plan, c->output, &written, &err) < 0) {
        bp_plan_free(plan);
        return die(&err);
    }
    if (!c->quiet && !(c->output && strcmp(c->output, "-") == 0)) {
        bp_table_info t;
        bp_table_info_get(s, &t);
        print_summary(plan, config ? &t : NULL, written, bp_weights_path(s), now() - t0);
    }
    bp_plan_free(plan);
    return 0;
}

static int cmd_config_pipeline(cli *c, int solve)
{
    bp_session *s = NULL;
    bp_error err;
    double t0 = now();
    int rc = open_config(c, &s, &err);
    if (rc)
        return rc;
    if (solve && bp_check_budget(s, c->budget_set ? &c->budget : NULL, &err) < 0) {
        rc = die_budget(&err);
    } else if (measure_interruptible(s, &err) < 0) {
        rc = die(&err);
    } else if (solve) {
        rc = solve_and_write(c, s, 1, t0);
    } else {
        bp_table_info t;
        bp_table_info_get(s, &t);
        if (c->output && bp_save_table(s, c->output, &err) < 0)
            rc = die(&err);
        else if (!c->quiet)
            printf("sensitivity: %zu layers x %zu candidates, %s in %.2f s -> %s\n", t.layers,
                   t.layers ? t.rows / t.layers : 0,
                   t.from_cache ? "cached" : t.resumed_layers ? "resumed" : "measured",
                   t.seconds, c->output ? c->output : t.cache_path);
    }
    bp_close(s);
    return rc;
}

static int has_budget(const bp_budget_spec *b)
{
    return b->avg_bits > 0 || b->max_bytes > 0 || b->max_error >= 0 || b->max_bops > 0 ||
           b->max_latency > 0 || b->max_file_bytes > 0 || b->bpw > 0;
}

static int cmd_solve_table(cli *c)
{
    bp_session *s;
    bp_error err;
    double t0 = now();
    if (c->arg)
        return usage_error("solve --table takes no CONFIG argument");
    if (!has_budget(&c->budget))
        return usage_error("solve --table needs --avg-bits, --max-bytes, --max-bops, "
                           "--max-latency or --max-error");
    if (!c->output)
        c->output = "plan.yaml";
    bp_options o = options_of(c);
    if (bp_open_table(&s, c->table, &o, &err) < 0)
        return die(&err);
    int rc = solve_and_write(c, s, 0, t0);
    bp_close(s);
    return rc;
}

/* ---- sweep --------------------------------------------------------------- */

static int cmd_sweep(cli *c)
{
    bp_session *s = NULL;
    bp_error err;
    double *v = NULL, t0 = now();
    size_t n = 0;
    if (!c->sweep_spec)
        return usage_error("sweep needs --avg-bits, --max-bytes or --max-error with a list "
                           "or a range START:STOP:STEP");
    if ((c->table != NULL) == (c->arg != NULL))
        return usage_error("sweep takes a CONFIG or --table CSV");
    if (bp_parse_values(c->sweep_opt, c->sweep_spec, &v, &n, &err) < 0)
        return usage_error(err.msg);
    bp_options o = options_of(c);
    const char *name = !strcmp(c->sweep_opt, "--avg-bits")      ? "avg_bits"
                       : !strcmp(c->sweep_opt, "--max-bytes")   ? "max_bytes"
                       : !strcmp(c->sweep_opt, "--max-bops")    ? "max_bops"
                       : !strcmp(c->sweep_opt, "--max-latency") ? "max_latency"
                                                                : "max_error";
    const bp_sweep_summary *sum = NULL;
    int rc = (c->table ? bp_open_table(&s, c->table, &o, &err) : bp_open(&s, c->arg, &o, &err)) < 0 ||
                     measure_interruptible(s, &err) < 0 ||
                     bp_sweep(s, name, v, n, c->output, c->plans, &sum, &err) < 0
                 ? die(&err) : 0;
    if (rc == 0 && !c->quiet) {
        printf("%-13s %12s %11s %10s %14s %14s\n", "kind", sum->budget_name, "status",
               "avg bits", "bytes", "error");
        for (size_t i = 0; i < sum->n_points; i++) {
            const bp_sweep_point *p = &sum->points[i];
            printf("%-13s %12g %11s %10.4f %14.0f %14.6g\n", p->kind, p->budget, p->status,
                   p->avg_bits, p->weight_bytes, p->error);
        }
        printf("frontier: %s\nplot: %s\ntime: %.2f s\n", sum->csv, sum->svg, now() - t0);
        printf("exact frontier: %s\n", sum->pareto);
    }
    free(v);
    bp_close(s);
    return rc;
}

/* ---- the other commands ---------------------------------------------------- */

static int cmd_inspect(cli *c)
{
    bp_error err;
    if (!c->arg)
        return usage_error("missing FILE argument");
    return bp_inspect(c->arg, stdout, &err) < 0 ? die(&err) : 0;
}

static int cmd_init(cli *c)
{
    bp_error err;
    if (!c->arg)
        return usage_error("missing SOURCE argument (a capture directory or a model file)");
    const char *out = c->output ? c->output : "bitplan.yaml";
    if (bp_init(c->arg, out, &err) < 0)
        return die(&err);
    if (!c->quiet && strcmp(out, "-"))
        fprintf(stderr, "wrote %s: check its choices, then: bitplan run %s\n", out, out);
    return 0;
}

static int cmd_export(cli *c)
{
    bp_error err;
    char *written = NULL;
    if (!c->arg)
        return usage_error("export needs a PLAN file (plan.yaml or plan.json)");
    if (!c->format)
        return usage_error("export needs --format llamacpp|gptqmodel|llmcompressor|autoround");
    if (bp_check_name("format", c->format, &err) < 0)
        return usage_error2("--format", err.msg);
    bp_options o = options_of(c);
    if (bp_export(c->arg, c->format, c->output, c->config, c->llama_names, c->compress, &o,
                  &written, &err) < 0)
        return die(&err);
    if (!c->quiet && strcmp(written, "-") != 0)
        printf("%s: %s\n", c->format, written);
    free(written);
    return 0;
}

static int cmd_candidates(cli *c)
{
    bp_session *s = NULL;
    bp_error err;
    int rc = open_config(c, &s, &err);
    if (rc)
        return rc;
    rc = measure_interruptible(s, &err) < 0 || bp_candidates(s, c->output, &err) < 0
             ? die(&err) : 0;
    bp_close(s);
    return rc;
}

/* quantize CONFIG --wbits B [--abits A] [--quantizer Q] -o FILE [--plan PLAN] */
static int cmd_quantize(cli *c)
{
    bp_session *s = NULL;
    bp_error err;
    bp_quantize_info info;
    double t0 = now();
    if (!c->arg)
        return usage_error("missing CONFIG argument");
    if (!c->q_wbits)
        return usage_error("quantize needs --wbits B (2..16)");
    if (!c->output || !strcmp(c->output, "-"))
        return usage_error("quantize needs -o FILE for the quantized weights");
    if (c->q_quantizer && bp_check_name("quantizer", c->q_quantizer, &err) < 0)
        return usage_error2("--quantizer", err.msg);
    int rc = open_config(c, &s, &err);
    if (rc)
        return rc;
    if ((c->q_plan && measure_interruptible(s, &err) < 0) ||
        bp_quantize(s, c->q_wbits, c->q_abits, c->q_quantizer, c->output, c->q_plan, &info,
                    &err) < 0)
        rc = die(&err);
    else if (!c->quiet)
        printf("quantized %zu layers at %d-bit weights, %d-bit activations (%s) -> %s%s%s in "
               "%.2f s\n", info.layers, c->q_wbits, info.abits, info.quantizer, c->output,
               c->q_plan ? ", plan " : "", c->q_plan ? c->q_plan : "", now() - t0);
    bp_close(s);
    return rc;
}

/* grids CONFIG --calibration ROWS [-o FILE] */
static int cmd_grids(cli *c)
{
    bp_error err;
    if (!c->arg)
        return usage_error("missing CONFIG argument");
    if (!c->calibration)
        return usage_error("grids needs --calibration FILE (calibration rows to fit on)");
    return bp_grids(c->arg, c->calibration, c->output, &err) < 0 ? die(&err) : 0;
}

/* Ranks above 0 of mpirun: the same command line, only the measurement. */
static int worker_main(cli *c)
{
    int has_config = c->arg && !c->table &&
                     (!strcmp(c->command, "run") || !strcmp(c->command, "sensitivity") ||
                      !strcmp(c->command, "solve") || !strcmp(c->command, "sweep") ||
                      !strcmp(c->command, "candidates") || !strcmp(c->command, "quantize"));
    bp_options o = options_of(c);
    o.progress = NULL;
    bp_mpi_worker(has_config ? c->arg : NULL, &o);
    bp_mpi_end(0);
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
    if (!strcmp(c->command, "init"))
        return cmd_init(c);
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
    /* past the file-size limit (ulimit -f) a write fails with EFBIG and is
     * reported like a full disk, instead of SIGXFSZ killing the run */
    signal(SIGXFSZ, SIG_IGN);
    cli c;
    memset(&c, 0, sizeof c);
    if (argc < 2)
        return fputs(usage_text, stderr), 2;
    c.command = argv[1];
    if (!strcmp(c.command, "help") || !strcmp(c.command, "--help") || !strcmp(c.command, "-h")) {
        if (argc > 2 && command_usage(argv[2]) != 0) {   /* bitplan help COMMAND */
            fprintf(stderr, "bitplan: unknown command '%s'\nRun 'bitplan help' for usage.\n", argv[2]);
            return 2;
        }
        return argc > 2 ? 0 : (fputs(usage_text, stdout), 0);
    }
    if (!strcmp(c.command, "--version") || !strcmp(c.command, "version"))
#ifdef BITPLAN_MPI
        return printf("bitplan %s (mpi)\n", bp_version()), 0;
#else
        return printf("bitplan %s\n", bp_version()), 0;
#endif
    for (int i = 2; i < argc; i++)      /* every command answers --help: its own */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (command_usage(c.command) == 0)
                return 0;
            fprintf(stderr, "bitplan: unknown command '%s'\nRun 'bitplan help' for usage.\n", c.command);
            return 2;
        }
    /* Layers are measured one after another with the same large buffers: keep
     * freed memory in the heap instead of returning it to the kernel, so the
     * next layer reuses it without page faults. */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    if (bp_mpi_init(&argc, &argv) < 0)
        return fputs("bitplan: error: MPI_Init failed\n", stderr), 1;
    int rc = parse_args(&c, argc - 1, argv + 1);
    if (rc) {
        bp_mpi_end(rc);
        return rc;
    }
    if (bp_mpi_rank() > 0)          /* a worker: measure what rank 0 deals */
        return worker_main(&c);
    rc = dispatch(&c);
    bp_mpi_end(rc);
    const char *prof = getenv("BITPLAN_PROFILE");
    if (prof && *prof && strcmp(prof, "0") != 0)
        bp_profile_print(stderr);
    return rc;
}
