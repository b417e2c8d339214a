/*
 * test_api.c - the library through its public header alone: a config to a
 * plan (bp_open, bp_measure, bp_solve, bp_write), the plan the command
 * writes, errors as values (a bad config, an infeasible budget, a missing
 * budget, an unknown metric), a sweep, a uniform plan's weights, the
 * solver's program, an export and inspection.  Nothing is printed by the
 * library: stdout and stderr are checked empty around the calls.
 */
#include <bitplan.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char dir[4096];

static const char *path_in(const char *name)
{
    static char buf[8][4200];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_file(const char *name, const char *text)
{
    FILE *fp = fopen(path_in(name), "w");
    CHECK(fp != NULL);
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* progress: every call inside a stage, and a closing NULL */
static int steps, closes;
static void progress(void *ctx, const char *stage, size_t done, size_t total, const char *what)
{
    (void)ctx;
    CHECK(stage && *stage);
    if (what) {
        CHECK(done < total);
        steps++;
    } else {
        closes++;
    }
}

static void test_config_to_plan(void)
{
    char cfg[8192];
    snprintf(cfg, sizeof cfg,
             "model: {weights: %s/configs/demo/model.safetensors,\n"
             "        calibration: %s/configs/demo/calib.safetensors}\n"
             "candidates: {wbits: [2, 3, 4, 8], abits: [8, 16]}\n"
             "weights: {quantizer: rtn, range: mse}\n"
             "budget: {avg_bits: 4}\n"
             "pins: [{pattern: fc2, wbits: 8}]\n"
             "output: {dir: out, formats: [yaml, json, llamacpp], weights: q.safetensors}\n",
             BP_SOURCE_DIR, BP_SOURCE_DIR);
    write_file("api.yaml", cfg);
    bp_session *s = NULL;
    bp_plan *plan = NULL;
    bp_error err = {""};
    bp_options o;
    memset(&o, 0, sizeof o);
    o.progress = progress;
    CHECK(bp_open(&s, path_in("api.yaml"), &o, &err) == 0);
    CHECK(bp_check_budget(s, NULL, &err) == 0);
    CHECK(bp_measure(s, &err) == 0);
    bp_table_info t;
    bp_table_info_get(s, &t);
    CHECK(t.layers == 4 && t.rows == 4 * 8 && !t.from_cache);
    CHECK(t.metric && strcmp(t.metric, "kfac") == 0);   /* auto: the demo's output Fisher */
    CHECK(steps >= 4 && closes >= 1);
    CHECK(bp_solve(s, NULL, &plan, &err) == 0);
    CHECK(plan && plan->n_layers == 4);
    double bits = plan ? (double)plan->total_weight_bits / (double)plan->total_params : 99;
    CHECK(bits <= 4.0 + 1e-9);
    for (size_t i = 0; plan && i < plan->n_layers; i++)
        if (strcmp(plan->layers[i].name, "fc2") == 0)
            CHECK(plan->layers[i].wbits == 8);
    const char *written = NULL;
    CHECK(bp_write(s, plan, NULL, &written, &err) == 0);
    CHECK(written && strstr(written, "plan.yaml"));
    CHECK(file_size(path_in("out/plan.yaml")) > 0 && file_size(path_in("out/plan.json")) > 0);
    CHECK(file_size(path_in("out/tensor-types.txt")) > 0);          /* the export */
    CHECK(bp_weights_path(s) && file_size(bp_weights_path(s)) > 0);
    /* the same plan alone, as JSON */
    CHECK(bp_write(s, plan, path_in("alone.json"), &written, &err) == 0);
    CHECK(file_size(path_in("alone.json")) > 0);
    /* another budget from the same table; an infeasible one is an error value */
    bp_budget_spec b = {3.0, 0, -1.0, 0, 0, BP_MIN_AUTO, 0, 0};
    bp_plan *p3 = NULL;
    CHECK(bp_solve(s, &b, &p3, &err) == 0 && p3 && p3->total_error >= plan->total_error);
    bp_plan_free(p3);
    b.avg_bits = 0.5;
    CHECK(bp_solve(s, &b, &p3, &err) < 0 && p3 == NULL);
    CHECK(strstr(err.msg, "budget.avg_bits = 0.5 is infeasible") != NULL);
    /* the program, a sweep, a uniform plan's weights */
    CHECK(bp_candidates(s, path_in("program.csv"), &err) == 0);
    CHECK(file_size(path_in("program.csv")) > 100);
    double v[] = {3, 4, 5};
    const bp_sweep_summary *sum = NULL;
    CHECK(bp_sweep(s, "avg_bits", v, 3, path_in("sweep"), 0, &sum, &err) == 0);
    CHECK(sum && sum->n_points >= 3 && strcmp(sum->points[0].kind, "plan") == 0);
    CHECK(file_size(path_in("sweep/frontier.csv")) > 0);
    bp_quantize_info qi;
    /* the pin keeps fc2 at 8 bits: no uniform 4-bit plan, but its weights */
    CHECK(bp_quantize(s, 4, 0, NULL, path_in("u4.safetensors"), path_in("u4.yaml"), &qi,
                      &err) < 0);
    CHECK_MSG(strstr(err.msg, "layer 'fc2': no measured candidate at 4-bit weights"), "%s",
              err.msg);
    CHECK(bp_quantize(s, 4, 0, NULL, path_in("u4.safetensors"), NULL, &qi, &err) == 0);
    CHECK(qi.layers == 4 && qi.abits == 16 && strcmp(qi.quantizer, "rtn") == 0);
    bp_plan_free(plan);
    bp_close(s);
    /* the cache: a new session reads it */
    CHECK(bp_open(&s, path_in("api.yaml"), &o, &err) == 0 && bp_measure(s, &err) == 0);
    bp_table_info_get(s, &t);
    CHECK(t.from_cache);
    bp_close(s);
    /* exports and inspection of what was written */
    char *out = NULL;
    CHECK(bp_export(path_in("out/plan.yaml"), "gptqmodel", path_in("qc.json"), NULL, 0, 0, &o,
                    &out, &err) == 0);
    CHECK(out && file_size(out) > 0);
    free(out);
    FILE *mem_fp;
    char *buf = NULL;
    size_t n = 0;
    mem_fp = open_memstream(&buf, &n);
    CHECK(bp_inspect(path_in("u4.safetensors"), mem_fp, &err) == 0);
    fclose(mem_fp);
    CHECK(buf && strstr(buf, "all consistent") != NULL);
    free(buf);
}

static void test_errors(void)
{
    bp_session *s = (bp_session *)1;
    bp_error err = {""};
    write_file("bad.yaml", "model: {weights: nothere.safetensors}\nbudget: {avg_bits: four}\n");
    CHECK(bp_open(&s, path_in("bad.yaml"), NULL, &err) < 0 && s == NULL);
    CHECK(strstr(err.msg, "bad.yaml:2") != NULL);
    bp_options o;
    memset(&o, 0, sizeof o);
    o.metric = "kfca";
    CHECK(bp_open(&s, path_in("api.yaml"), &o, &err) < 0);
    CHECK(strstr(err.msg, "metric 'kfca'") != NULL);
    CHECK(bp_check_name("format", "hawq", &err) < 0 && bp_check_name("metric", "margin", &err) == 0);
    write_file("nobudget.yaml", "model: {weights: x.safetensors}\n");
    memset(&o, 0, sizeof o);
    CHECK(bp_open(&s, path_in("nobudget.yaml"), &o, &err) == 0);
    CHECK(bp_check_budget(s, NULL, &err) < 0 && strstr(err.msg, "no budget") != NULL);
    CHECK(bp_measure(s, &err) < 0 && strstr(err.msg, "x.safetensors") != NULL);
    bp_close(s);
    double *v = NULL;
    size_t n = 0;
    CHECK(bp_parse_values("--avg-bits", "2:8:2", &v, &n, &err) == 0 && n == 4 && v[3] == 8);
    free(v);
    CHECK(bp_parse_values("--avg-bits", "2:x", &v, &n, &err) < 0);
}

int main(void)
{
    const char *tmp = getenv("BP_TEST_TMP");
    snprintf(dir, sizeof dir, "%s", tmp ? tmp : "/tmp/bitplan_test_api");
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0)
        return 1;
    if (chdir(dir) != 0)
        return 1;
    /* the library prints nothing: stdout and stderr go to files checked empty */
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), errfd = dup(2);
    FILE *so = freopen("stdout.txt", "w", stdout), *se = freopen("stderr.txt", "w", stderr);
    if (!so || !se)
        return 1;
    test_config_to_plan();
    test_errors();
    fflush(stdout);
    fflush(stderr);
    long printed_out = file_size("stdout.txt"), printed_err = file_size("stderr.txt");
    dup2(out, 1);
    dup2(errfd, 2);
    CHECK_MSG(printed_out == 0, "the library wrote %ld bytes to stdout", printed_out);
    CHECK_MSG(printed_err == 0 || check_failed_ > 0, "the library wrote %ld bytes to stderr",
              printed_err);
    if (printed_err > 0)
        system("cat stderr.txt >&2");
    return check_done();
}
