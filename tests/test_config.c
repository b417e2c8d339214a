/*
 * test_config.c - the YAML config: the documented example parses to the
 * documented values, defaults apply, and every kind of bad input is an
 * error naming file, line and key.
 */
#include <stdlib.h>

#include "check.h"
#include "planner/config.h"

static const char full[] =
    "model:\n"
    "  weights: model.safetensors\n"
    "  calibration: calib.safetensors\n"
    "  include: [\"*\"]\n"
    "  exclude: [\"head*\"]\n"
    "candidates:\n"
    "  wbits: [2, 3, 4, 6, 8]\n"
    "  abits: [8, 16]\n"
    "weights:\n"
    "  quantizer: rtn\n"
    "  granularity: per_group\n"
    "  group_size: 64\n"
    "  symmetric: false\n"
    "  range: mse\n"
    "activations:\n"
    "  granularity: per_token\n"
    "  symmetric: false\n"
    "  range: minmax\n"
    "metric: relative\n"
    "budget:\n"
    "  avg_bits: 4.5\n"
    "pins:\n"
    "  - {pattern: \"head\", wbits: 8, abits: 8}\n"
    "  - pattern: \"conv1\"\n"
    "    wbits: 6\n"
    "solver:\n"
    "  time_limit: 30\n"
    "output:\n"
    "  dir: results\n"
    "  plan: p.yaml\n"
    "  formats: [yaml, json]\n";

static int parse(bp_config *c, const char *text, bp_error *err)
{
    return bp_config_parse(c, text, strlen(text), "cfg.yaml", "/base", err);
}

static void test_full(void)
{
    bp_config c;
    bp_error err;
    CHECK_MSG(parse(&c, full, &err) == 0, "%s", err.msg);
    CHECK(strcmp(c.weights, "/base/model.safetensors") == 0);
    CHECK(strcmp(c.weights_as_written, "model.safetensors") == 0);
    CHECK(strcmp(c.calibration, "/base/calib.safetensors") == 0);
    CHECK(c.n_exclude == 1 && strcmp(c.exclude[0], "head*") == 0);
    CHECK(c.n_wbits == 5 && c.wbits[4] == 8 && c.n_abits == 2 && c.abits[0] == 8);
    CHECK(c.weights_q.granularity == BP_GRAN_GROUP && c.weights_q.group_size == 64);
    CHECK(c.weights_q.symmetric == 0 && c.weights_q.range == BP_RANGE_MSE);
    CHECK(c.acts_q.granularity == BP_GRAN_TOKEN);
    CHECK(c.metric == BP_METRIC_RELATIVE);
    CHECK(c.budget.avg_bits == 4.5 && c.budget.max_error < 0);
    CHECK(c.n_pins == 2 && c.pins[0].wbits == 8 && c.pins[0].abits == 8);
    CHECK(c.pins[1].wbits == 6 && c.pins[1].abits == 0);
    CHECK(c.time_limit == 30.0);
    CHECK(strcmp(c.out_dir, "/base/results") == 0 && strcmp(c.plan_name, "p.yaml") == 0);
    CHECK(c.write_yaml && c.write_json);
    bp_config_free(&c);
}

static void test_defaults(void)
{
    bp_config c;
    bp_error err;
    CHECK_MSG(parse(&c, "model: {weights: /abs/m.safetensors}\n", &err) == 0, "%s", err.msg);
    CHECK(strcmp(c.weights, "/abs/m.safetensors") == 0);
    CHECK(c.calibration == NULL);
    CHECK(c.n_include == 1 && strcmp(c.include[0], "*") == 0 && c.n_exclude == 0);
    CHECK(c.n_wbits == 5 && c.wbits[0] == 2 && c.n_abits == 1 && c.abits[0] == 16);
    CHECK(c.weights_q.granularity == BP_GRAN_CHANNEL && c.weights_q.symmetric == 1);
    CHECK(c.weights_q.group_size == 128 && c.weights_q.range == BP_RANGE_MINMAX);
    CHECK(c.acts_q.granularity == BP_GRAN_TENSOR && c.acts_q.symmetric == 0);
    CHECK(c.metric == BP_METRIC_RELATIVE && !bp_config_has_budget(&c));
    CHECK(c.time_limit == 60.0 && c.mip_gap == 0.0);
    CHECK(strcmp(c.out_dir, "/base/out") == 0 && strcmp(c.plan_name, "plan.yaml") == 0);
    CHECK(c.write_yaml && !c.write_json);
    CHECK(c.n_quantizers == 1 && c.quantizers[0] == BP_WQ_RTN && c.squant_mode == 3);
    CHECK(c.gptq.block_size == 128 && c.gptq.damp == 0.01 && c.gptq.act_order == 0);
    bp_config_free(&c);
}

static void test_gptq(void)
{
    bp_config c;
    bp_error err = {""};
    CHECK_MSG(parse(&c, "model: {weights: m}\nweights:\n  quantizer: gptq\n"
                        "  gptq: {block_size: 32, damp: 0.05, act_order: true}\n", &err) == 0,
              "%s", err.msg);
    CHECK(c.n_quantizers == 1 && c.quantizers[0] == BP_WQ_GPTQ);
    CHECK(c.gptq.block_size == 32 && c.gptq.damp == 0.05 && c.gptq.act_order == 1);
    CHECK(c.gptq.precision == BP_GPTQ_SINGLE);          /* the default */
    bp_config_free(&c);
    CHECK_MSG(parse(&c, "model: {weights: m}\nweights:\n  quantizer: gptq\n"
                        "  gptq: {precision: double}\n", &err) == 0, "%s", err.msg);
    CHECK(c.gptq.precision == BP_GPTQ_DOUBLE);
    bp_config_free(&c);
    CHECK_MSG(parse(&c, "model: {weights: m}\nweights:\n  quantizer: [rtn, squant, gptq]\n"
                        "  squant: {mode: ek}\n", &err) == 0, "%s", err.msg);
    CHECK(c.n_quantizers == 3 && c.quantizers[1] == BP_WQ_SQUANT && c.squant_mode == 1);
    bp_config_free(&c);
}

static void test_activations(void)
{
    bp_config c;
    bp_error err = {""};
    CHECK_MSG(parse(&c, "model: {weights: m}\nactivations:\n  quantizer: ptf\n  range: percentile\n"
                        "  per_layer:\n    - {pattern: \"*.softmax*\", quantizer: log2}\n"
                        "    - {pattern: \"head\", granularity: per_token, range: mse}\n",
                        &err) == 0, "%s", err.msg);
    CHECK(c.acts_q.kind == BP_AQ_PTF && c.acts_q.range == BP_RANGE_PERCENTILE);
    CHECK(c.n_act_rules == 2);
    bp_qspec a = bp_config_acts_for(&c, "blk.softmax_in");
    CHECK(a.kind == BP_AQ_LOG2 && a.range == BP_RANGE_PERCENTILE);
    a = bp_config_acts_for(&c, "head");
    CHECK(a.kind == BP_AQ_PTF && a.granularity == BP_GRAN_TOKEN && a.range == BP_RANGE_MSE);
    a = bp_config_acts_for(&c, "other");
    CHECK(a.kind == BP_AQ_PTF && a.granularity == BP_GRAN_TENSOR);
    bp_config_free(&c);
    /* ERQ's own grids where no range is given; "erq" names them explicitly */
    CHECK_MSG(parse(&c, "model: {weights: m}\nweights: {quantizer: [rtn, erq]}\n"
                        "activations:\n  symmetric: true\n"
                        "  per_layer:\n    - {pattern: \"head\", range: mse}\n", &err) == 0,
              "%s", err.msg);
    CHECK(!c.weights_range_set && !c.acts_range_set);
    a = bp_config_acts_for_quantizer(&c, "blk", BP_WQ_ERQ);
    CHECK(a.range == BP_RANGE_ERQ_A && !a.symmetric && a.granularity == BP_GRAN_TENSOR);
    a = bp_config_acts_for_quantizer(&c, "blk", BP_WQ_RTN);
    CHECK(a.range == BP_RANGE_MINMAX && a.symmetric);
    a = bp_config_acts_for_quantizer(&c, "head", BP_WQ_ERQ);    /* the rule's range wins */
    CHECK(a.range == BP_RANGE_MSE);
    bp_config_free(&c);
    CHECK_MSG(parse(&c, "model: {weights: m}\nweights: {quantizer: erq, range: erq}\n"
                        "activations: {range: erq}\n", &err) == 0, "%s", err.msg);
    CHECK(c.weights_range_set && c.weights_q.range == BP_RANGE_ERQ_W);
    CHECK(c.acts_range_set && c.acts_q.range == BP_RANGE_ERQ_A);
    bp_config_free(&c);
    CHECK_MSG(parse(&c, "model: {weights: m}\nweights: {quantizer: erq, range: mse}\n", &err) == 0,
              "%s", err.msg);
    CHECK(c.weights_range_set && c.weights_q.range == BP_RANGE_MSE);
    CHECK(c.weights_q.fp16_scales == 1 && c.acts_q.fp16_scales == 0);   /* the default */
    bp_config_free(&c);
    CHECK_MSG(parse(&c, "model: {weights: m}\nweights: {scales: fp32}\n", &err) == 0, "%s",
              err.msg);
    CHECK(c.weights_q.fp16_scales == 0);
    bp_config_free(&c);
}

static void expect_error(const char *text, const char *needle)
{
    bp_config c;
    bp_error err = {""};
    CHECK_MSG(parse(&c, text, &err) < 0, "accepted: %s", text);
    CHECK_STR_CONTAINS(err.msg, "cfg.yaml");
    CHECK_STR_CONTAINS(err.msg, needle);
}

static void test_errors(void)
{
    expect_error("", "empty");
    expect_error("model: {weights: m}\nactivations: {quantizer: log3}\n", "activations.quantizer");
    expect_error("model: {weights: m}\nactivations: {per_layer: [{quantizer: log2}]}\n",
                 "activations.per_layer[0]: missing key 'pattern'");
    expect_error("model: {weights: m}\nactivations: {per_layer: [{pattern: a, bits: 3}]}\n",
                 "activations.per_layer[0].bits: unknown key");
    expect_error("model: {weights: m}\nweights: {quantizer: [rtn, rtn]}\n", "listed twice");
    expect_error("model: {weights: m}\nweights: {quantizer: []}\n", "at least one");
    expect_error("model: {weights: m}\nweights: {squant: {mode: kc}}\n",
                 "weights.squant.mode");
    expect_error("model: {weights: m}\nweights: {quantizer: gptx}\n", "weights.quantizer");
    expect_error("model: {weights: m}\nweights: {scales: bf16}\n", "weights.scales");
    expect_error("model: {weights: m}\nactivations: {scales: fp16}\n", "activations.scales");
    expect_error("model: {weights: m}\nweights: {gptq: {block_size: 0}}\n",
                 "weights.gptq.block_size");
    expect_error("model: {weights: m}\nweights: {gptq: {dmap: 1}}\n",
                 "weights.gptq.dmap: unknown key");
    expect_error("model: {weights: m}\nbudgte: {avg_bits: 4}\n",
                 "cfg.yaml:2:1: budgte: unknown key");
    expect_error("model: {weights: m}\nweights:\n  granulaity: per_channel\n",
                 ":3:3: weights.granulaity: unknown key (expected one of: quantizer, granularity");
    expect_error("model: {weights: m}\nweights: {granularity: per_chanel}\n",
                 "weights.granularity: expected one of per_tensor, per_channel, per_group");
    expect_error("model: {weights: m}\ncandidates: {wbits: 4}\n",
                 "candidates.wbits: expected a list, got a scalar");
    expect_error("model: {weights: m}\ncandidates: {wbits: [2, 40]}\n",
                 "expected an integer in [2, 16], got 40");
    expect_error("model: {weights: m}\ncandidates: {wbits: [4, 4]}\n", "listed twice");
    expect_error("model: {weights: m}\ncandidates: {wbits: []}\n", "at least one");
    expect_error("model: {weights: m}\ncandidates: {abits: [eight]}\n", "expected an integer");
    expect_error("model: {weights: m}\nbudget: {avg_bits: -1}\n", "budget.avg_bits");
    expect_error("model: {weights: m}\nbudget: {avg_bits: 0}\n", "positive");
    expect_error("model: {weights: m}\nweights: {symmetric: maybe}\n", "true or false");
    expect_error("model: {weights: m}\nmodel: {weights: n}\n", ":2:1: model: duplicate key");
    expect_error("model: {weights: m, weights: n}\n", "model.weights: duplicate key");
    expect_error("model: {calibration: c}\n", "missing required key model.weights");
    expect_error("model: {weights: [a]}\n", "model.weights: expected a string, got a list");
    expect_error("model: &a {weights: m}\nother: *a\n", "aliases are not supported");
    expect_error("model: {weights: m\n", "YAML syntax error");
    expect_error("- a\n- b\n", "expected a mapping");
    expect_error("model: {weights: m}\npins: [{wbits: 8}]\n", "pins[0]: missing key 'pattern'");
    expect_error("model: {weights: m}\npins: [{pattern: x}]\n", "wbits and/or abits");
    expect_error("model: {weights: m}\npins: [{pattern: x, wbits: 5}]\n",
                 "pins[0] ('x'): wbits 5 is not among candidates.wbits");
    expect_error("model: {weights: m}\npins: [{pattern: x, bits: 5}]\n", "pins[0].bits: unknown key");
    expect_error("model: {weights: m}\noutput: {plan: a/b.yaml}\n", "without '/'");
    expect_error("model: {weights: m}\noutput: {formats: [xml]}\n", "expected one of yaml, json");
    expect_error("model: {weights: m}\nsolver: {time_limit: 0}\n", "positive");
    expect_error("model: {weights: m}\nmetric: l2\n", "metric: expected one of mse, relative, weight");
    expect_error("model: {weights: m}\nactivations: {granularity: per_group}\n",
                 "expected one of per_tensor, per_token");
    expect_error("model: {weights: m}\n---\nmodel: {weights: n}\n", "more than one YAML document");
}

int main(void)
{
    test_full();
    test_defaults();
    test_gptq();
    test_activations();
    test_errors();
    return check_done();
}
