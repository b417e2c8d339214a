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
 * direction F annihilates); shapes are checked when the model is opened.
 */
#ifndef BP_MODEL_H
#define BP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"
#include "../sensitivity/layer.h"
#include "formats/npy.h"
#include "formats/safetensors.h"

/* A set of named tensors: a safetensors file or a directory of .npy files. */
typedef struct bp_tensorset {
    char *path;
    int is_dir;
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

typedef struct bp_layer_desc {
    char *name;
    int64_t out, in;
    int kh, kw, groups;
    int is_conv;
    long weight, bias, input; /* tensor indices; -1 when absent */
    long grad2;               /* NAME.grad2 in the calibration file, or -1 */
    int64_t n_grad2;          /* its length */
    long fisher;              /* NAME.fisher (dense output Fisher), or -1 */
    long fisher_u, fisher_s, fisher_d;  /* its low-rank form, or -1 */
    long fisher_n;            /* the low-rank form's null direction, or -1 */
    int64_t fisher_rank;      /* rows of fisher_u per group (0: dense) */
    int64_t n;                /* calibration rows */
} bp_layer_desc;

typedef struct bp_model {
    bp_tensorset weights;
    bp_tensorset calib;
    int has_calib;
    bp_layer_desc *layers;
    size_t n_layers;
} bp_model;

/* Open both files and find the layers matching include and not exclude. */
int bp_model_open(bp_model *m, const char *weights, const char *calib,
                  char *const *include, size_t n_include,
                  char *const *exclude, size_t n_exclude, bp_error *err);
void bp_model_close(bp_model *m);

/* A layer's tensors converted to float32. */
typedef struct bp_loaded_layer {
    bp_layer view;
    float *W, *bias, *X, *grad2;
    bp_ofactor ofactor;       /* view.ofactor points here when present */
    float *F, *U, *S, *D, *N;
} bp_loaded_layer;

int bp_model_load_layer(const bp_model *m, size_t i, bp_loaded_layer *out,
                        bp_error *err);
void bp_loaded_layer_free(bp_loaded_layer *l);

#endif
