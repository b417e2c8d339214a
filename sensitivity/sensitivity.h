/*
 * sensitivity.h - measure one layer's error under every candidate
 * (weight bits, activation bits) and append the rows to the table.
 *
 * Every metric the layer's data allows is measured at once (the table keeps
 * them all, so changing the metric re-reads the table):
 *   mse       ||What Xbar^T - W X^T||_F^2 / n
 *   relative  the above / (||W X^T||_F^2 / n)
 *   weight    ||What - W||_F^2 / params (data-free; activation bits do not
 *             change it)
 *   hawq      2 ||X||_F^2 / (n in) * ||What - W||_F^2 (the Hessian trace per
 *             parameter times the weight error; ignores activation bits)
 *   fisher    1/2 sum_r grad2_r e_r, e_r the mse of output row r (needs grad2)
 *   kfac      1/2 tr(F E[dy dy^T]), dy = What xbar - W x, F the output Fisher
 *             (needs the layer's output factor, layer.h)
 *   margin    the same with the decision Fisher (layer.h's mfactor): the
 *             decisions a perturbation flips, to first order
 * computed from Gram matrices built once per activation width (gram.h).
 * The row's `error` is the value of spec->metric.
 */
#ifndef BP_SENSITIVITY_H
#define BP_SENSITIVITY_H

#include <stddef.h>

#include "../common/bp_error.h"
#include "layer.h"
#include "erq.h"
#include "gptq.h"
#include "quant.h"
#include "squant.h"
#include "table.h"

typedef enum bp_wquantizer {
    BP_WQ_RTN = 0,
    BP_WQ_GPTQ,
    BP_WQ_SQUANT,
    BP_WQ_ERQ,
    BP_WQ_GGML,               /* llama.cpp's types (ggml.h): wbits[b] is the nominal width
                               * of ggml_types[b] */
    BP_WQ_COUNT
} bp_wquantizer;

const char *bp_wquantizer_name(bp_wquantizer q);
/* name -> quantizer; -1 when unknown */
int bp_wquantizer_parse(const char *name);

enum { BP_PREC_DOUBLE = 0, BP_PREC_SINGLE = 1 };

typedef struct bp_sens_spec {
    const int *wbits;
    size_t n_wbits;
    const int *abits;         /* 16 = unquantized */
    size_t n_abits;
    bp_qspec weights;         /* bits is set per candidate */
    bp_qspec acts;            /* bits is set per candidate */
    bp_metric metric;         /* which value becomes the row's error */
    bp_wquantizer quantizer;  /* how weights are rounded (RTN when zeroed) */
    bp_gptq_opts gptq;        /* for BP_WQ_GPTQ */
    int squant_mode;          /* for BP_WQ_SQUANT: BP_SQ_K | BP_SQ_C bits */
    bp_erq_opts erq;          /* for BP_WQ_ERQ */
    int cross_fit;            /* GPTQ and ERQ errors out of fold: BP_XFIT_* */
    int erq_grid;             /* ERQ fits its own weight grid (asymmetric,
                               * range BP_RANGE_ERQ_W) at the spec's granularity */
    int precision;            /* output errors: BP_PREC_DOUBLE (0) or BP_PREC_SINGLE
                               * (Grams' products in float32, checked; gram.h) */
    const int *ggml_types;    /* for BP_WQ_GGML: the ggml type of each wbits[b] */
} bp_sens_spec;

/*
 * GPTQ and ERQ fit their weights to the calibration rows, so their errors
 * on those rows are optimistic (2x on a layer with 512 rows for 784
 * inputs).  Cross-fitted, the rows are split in two contiguous halves; the
 * weights are fitted on one half and their errors (every metric) measured
 * on the other, both ways, and the two averaged by rows: the error of
 * weights on rows they were not fitted on.  Auto does it for layers with
 * fewer than BP_XFIT_ROWS_PER_INPUT rows per input column.
 */
enum { BP_XFIT_OFF = 0, BP_XFIT_ON = 1, BP_XFIT_AUTO = 2 };
#define BP_XFIT_ROWS_PER_INPUT 32

/* The grid a quantizer really uses (SQuant: asymmetric min-max per
 * channel, whatever spec->weights says), for bit counts and plans. */
bp_qspec bp_sens_weight_grid(const bp_sens_spec *spec, bp_wquantizer q);

/* Does this spec need calibration inputs? */
int bp_sens_needs_data(const bp_sens_spec *spec);

/* Does the layer have what spec (its metric and quantizer) needs?  An error
 * names the missing tensor.  bp_sensitivity_layer checks it first. */
int bp_sens_check_layer(const bp_layer *l, const bp_sens_spec *spec, bp_error *err);

/* Append n_wbits * n_abits rows for layer l (wbits-major, in list order),
 * each with every metric the layer's data allows. */
int bp_sensitivity_layer(const bp_layer *l, const bp_sens_spec *spec,
                         bp_table *table, bp_error *err);

/*
 * What measurements of the same calibration inputs can share: each
 * activation width's Grams (per conv group) and GPTQ factors.  The same
 * layer under several quantizers, and layers that read the same tensor
 * (q/k/v, gate/up), then form them once.  The caller says when the inputs
 * change (bp_sens_cache_reset); zero-initialise, free with
 * bp_sens_cache_free.  Cross-fitted measurements and ERQ's augmented inputs
 * do not use it.  Memory: in^2 doubles per activation width and group, and
 * a GPTQ factor (in^2 floats or doubles) per activation width and group;
 * where layer totals are measured (sensitivity.c), the quantizers of one
 * layer also share W^T W (in^2 doubles per group), a copy of W to recognise
 * it, and W H^T per activation width (out x in doubles).
 */
typedef struct bp_sens_cache {
    struct bp_sens_entry *e;
    size_t n, cap;
    struct bp_sx_share *share;   /* the current weights' layer totals (sensitivity.c) */
    size_t hits;              /* Grams and factors reused, for tests and profiles */
    size_t totals_hits;       /* W^T W and W H^T reused by another quantizer */
} bp_sens_cache;

void bp_sens_cache_reset(bp_sens_cache *c);
void bp_sens_cache_free(bp_sens_cache *c);

/* bp_sensitivity_layer with a cache of the layer's inputs (c may be NULL). */
int bp_sensitivity_layer_cached(const bp_layer *l, const bp_sens_spec *spec, bp_table *table,
                                bp_sens_cache *c, bp_error *err);

/*
 * Quantize one candidate again for export: What (out x in) on the grid
 * What[r, j] = scale[r, g(j)] * (code - zero[r, g(j)]) with integer codes
 * in [0, 2^b - 1] (scale and zero: out x G each, G = bp_grid_groups: one
 * value per row and scale group; a per-tensor grid repeats its one value in
 * every row), and bhat (out, when the layer has a bias) the bias to use
 * with it (ERQ changes it; others copy it).  The inputs GPTQ and ERQ see
 * are quantized at abits with spec->acts.  g_idx (groups x in, may be
 * NULL) receives each column's scale group g(j) per conv group: column /
 * group_size, except for GPTQ with act-order, whose groups follow its
 * column order.
 */
int bp_quantize_candidate(const bp_layer *l, const bp_sens_spec *spec, int wbits, int abits,
                          float *What, float *bhat, float *scale, float *zero, int32_t *g_idx,
                          bp_error *err);

/* Scale groups per row of a layer of in inputs (per conv group) under the
 * weight grid q: ceil(in / group_size) per group, else 1. */
int64_t bp_grid_groups(const bp_qspec *q, int64_t in);

/* A per-element grid (es, ez: out x in) as one value per row and scale
 * group (scale, zero: out x G, G = bp_grid_groups; column j in group
 * j / group_size); an element that differs from its group's value is an
 * error (the quantizer broke its granularity). */
int bp_grid_compact(const float *es, const float *ez, int64_t out, int64_t in,
                    const bp_qspec *q, float *scale, float *zero, const char *name,
                    bp_error *err);

/* Quantize-dequantize the layer's weights at spec->weights with `bits`
 * (out is out x in floats). */
int bp_quantize_weights(const bp_layer *l, const bp_qspec *wspec, int bits,
                        float *out, bp_error *err);

#endif
