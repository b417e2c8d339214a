/*
 * model.h - model and calibration inputs: tensor files (one safetensors file,
 * or a directory of NAME.npy files) and the layers found in them.
 *
 * A layer is a weight tensor NAME.weight of rank 2 (linear, out x in) or
 * rank 4 (conv, out x in/g x kh x kw) with an optional NAME.bias of shape
 * [out].  Its calibration inputs are NAME.input, n x (in * groups), in the
 * calibration file.  The conv group count g comes from the metadata key
 * NAME.groups, else from the calibration width; a mismatch is an error.
 * Layers are listed in model (file) order and selected by glob patterns.
 * The calibration file may also hold, per layer, the diagonal (NAME.grad2,
 * [out]) and the whole output Fisher (NAME.fisher, [out, out] or
 * [groups, og, og]; or its low-rank form NAME.fisher_u [k, out] /
 * [groups, k, og], NAME.fisher_s [k] / [groups, k], NAME.fisher_d [out] /
 * [groups, og], optionally NAME.fisher_n [out] / [groups, og], a unit
 * direction F annihilates) and the decision Fisher in the same forms
 * (NAME.margin, or NAME.margin_u / _s / _d / _n); shapes are checked when
 * the model is opened.
 *
 * Instead of rows, a layer may read calibration statistics (layer.h; the
 * README's "Statistics file"): metadata NAME.stats = S names the set (S =
 * NAME without it), with S.count F64 [1] (rows summed), S.xtx F64 [in, in]
 * ([groups, in, in] for grouped convs), S.xsum F64 [in] ([groups, in]),
 * S.range float [r, in * groups] (the rows activation grids are fitted on),
 * and per activation grid k: metadata S.grid<k> = "<uniform|ptf|log2> <bits>",
 * S.grid<k>.scale / .zero F32 [m] (the grid, as bp_act_grid gives it),
 * S.grid<k>.qtq and .qtx F64 shaped as xtx, S.grid<k>.qsum as xsum.
 */
#ifndef BP_MODEL_H
#define BP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"
#include "../sensitivity/layer.h"
#include "../sensitivity/quant.h"
#include "formats/gguf.h"
#include "formats/imatrix.h"
#include "formats/npy.h"
#include "formats/safetensors.h"

/* A set of named tensors: a safetensors file, a GGUF (seen through a
 * safetensors view of the same mapping) or a directory of .npy files. */
typedef struct bp_tensorset {
    char *path;
    int is_dir;
    int is_gguf;
    bp_gguf gguf;             /* is_gguf: the file; st is its view */
    bp_safetensors st;
    bp_npy *npy;              /* directory: one per tensor, sorted by name */
    char **npy_names;
    size_t n_npy;
} bp_tensorset;

typedef struct bp_tensor_ref {
    const char *name;
    bp_dtype dtype;
    int rank;
    const int64_t *shape;
} bp_tensor_ref;

int bp_tensorset_open(bp_tensorset *ts, const char *path, bp_error *err);
void bp_tensorset_close(bp_tensorset *ts);
size_t bp_tensorset_count(const bp_tensorset *ts);
bp_tensor_ref bp_tensorset_get(const bp_tensorset *ts, size_t i);
/* index of the named tensor, or -1 */
long bp_tensorset_find(const bp_tensorset *ts, const char *name);
const char *bp_tensorset_meta(const bp_tensorset *ts, const char *key);
int bp_tensorset_read_f32(const bp_tensorset *ts, size_t i, float *out, bp_error *err);
/* 1 when tensors i and j have the same dtype, shape and bytes (tied weights). */
int bp_tensorset_same_data(const bp_tensorset *ts, size_t i, size_t j);

/* One activation grid's statistics in a statistics set. */
typedef struct bp_grid_desc {
    int kind, bits;           /* bp_qkind, 2..15 */
    int64_t m;                /* scale / zero entries */
    long scale, zero, qtq, qtx, qsum;
} bp_grid_desc;

/* An output factor's tensors in the calibration file (-1 where absent):
 * NAME.<kind> dense, or NAME.<kind>_u / _s / _d and optionally _n. */
typedef struct bp_factor_desc {
    long dense, u, s, d, n;
    int64_t rank;             /* rows of _u per group (0: dense) */
} bp_factor_desc;

/* The factors a layer may carry, and the tensor names' stems. */
enum { BP_FACTOR_FISHER = 0, BP_FACTOR_MARGIN = 1, BP_FACTORS = 2 };
extern const char *const bp_factor_kind[BP_FACTORS];     /* "fisher", "margin" */

static inline int bp_factor_present(const bp_factor_desc *f)
{
    return f->dense >= 0 || f->u >= 0;
}

typedef struct bp_layer_desc {
    char *name;
    int64_t out, in;
    int kh, kw, groups;
    int is_conv;
    long weight, bias, input; /* tensor indices; -1 when absent */
    long grad2;               /* NAME.grad2 in the calibration file, or -1 */
    int64_t n_grad2;          /* its length */
    bp_factor_desc factor[BP_FACTORS];  /* the output Fisher (kfac), the decision
                               * Fisher (margin) */
    int64_t n;                /* calibration rows */
    char *stats;              /* the statistics set the layer reads, or NULL */
    long st_count, st_xtx, st_xsum, st_range;
    int64_t st_range_rows;
    bp_grid_desc *grids;      /* the set's activation grids */
    size_t n_grids;
    int64_t n_mat;            /* matrices stacked in the weight (a GGUF's MoE experts:
                               * [n_mat, out / n_mat, in]), 1 otherwise */
    const bp_imatrix_entry *im; /* the layer's importance-matrix entry, or NULL */
    int im_missing;           /* an importance matrix is given but has no entry for the
                               * layer (llama-imatrix leaves output.weight out unless
                               * asked): its columns weigh the square of the RMSNorm
                               * weight in front of it, or 1 */
    long im_norm;             /* that RMSNorm's weight tensor, or -1 */
    int embedding;            /* a GGUF embedding table (token_embd): read by rows */
} bp_layer_desc;

typedef struct bp_model {
    bp_tensorset weights;
    bp_tensorset calib;
    int has_calib;
    bp_imatrix im;            /* model.imatrix: llama.cpp's importance matrix */
    int has_imatrix;
    bp_layer_desc *layers;
    size_t n_layers;
} bp_model;

/*
 * Open the files (calib and imatrix may be NULL) and find the layers
 * matching include and not exclude.  In a GGUF the layers are the tensors
 * llama-quantize quantizes (common/bp_llama.h), 2-D or 3-D (MoE experts),
 * named without ".weight"; an importance matrix entry is matched to its
 * layer by the tensor's name, and its shape checked.
 */
int bp_model_open(bp_model *m, const char *weights, const char *calib, const char *imatrix,
                  char *const *include, size_t n_include,
                  char *const *exclude, size_t n_exclude, bp_error *err);
void bp_model_close(bp_model *m);

/* A layer's tensors converted to float32 (statistics to double). */
typedef struct bp_loaded_layer {
    bp_layer view;
    float *W, *bias, *X, *grad2;
    struct bp_loaded_factor {
        bp_ofactor of;        /* view.ofactor / mfactor point here when present */
        float *F, *U, *S, *D, *N;
    } factor[BP_FACTORS];
    bp_stats stats;           /* view.stats points here for a statistics layer */
    bp_diag diag;             /* view.diag points here for an importance matrix or an
                               * embedding table */
    double *dd;               /* diag.d */
    float *qw;                /* diag.qw */
    double *xtx, *xsum;
    bp_stats_grid *grid;      /* per grid of the set (loaded ones have qtq) */
    size_t grid_n;
} bp_loaded_layer;

/* Load layer i; for a statistics layer, the grids with want[k] set (want
 * may be NULL: none; view.stats->grid is then for the caller to point at
 * the loaded grids, one per activation width). */
int bp_model_load_layer(const bp_model *m, size_t i, bp_loaded_layer *out,
                        bp_error *err);
int bp_model_load_layer_grids(const bp_model *m, size_t i, const unsigned char *want,
                              bp_loaded_layer *out, bp_error *err);

/*
 * Which grid of layer i's statistics is the one acts (at `bits`, < 16)
 * fits on the set's range rows?  *k receives its index.  A per-token grid,
 * or no grid of the set equal to it, is an error naming the layer and the
 * file (the statistics were captured for other activation settings).
 */
int bp_model_match_grid(const bp_model *m, size_t i, const bp_qspec *acts, int bits,
                        size_t *k, bp_error *err);

/* Load layer i for measurements under n_specs activation settings acts[s]
 * at the widths abits[0..n_abits): for a statistics layer, each setting's
 * grids are matched (bp_model_match_grid) and loaded, and sg[s * n_abits +
 * a] points at them (view.stats->grid is sg, the first setting's; point it
 * at sg + s * n_abits for setting s).  Rows layers load as
 * bp_model_load_layer. */
int bp_model_load_layer_acts(const bp_model *m, size_t i, const bp_qspec *acts, size_t n_specs,
                             const int *abits, size_t n_abits, bp_loaded_layer *out,
                             bp_stats_grid *sg, bp_error *err);
void bp_loaded_layer_free(bp_loaded_layer *l);

#endif
