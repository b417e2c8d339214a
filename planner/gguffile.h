/*
 * gguffile.h - the size of the GGUF llama-quantize will write for a plan
 * over a GGUF model, before it is written: the budgets "at most this file
 * size" (budget.max_file_bytes, --max-bytes-of FILE.gguf) and "at most
 * this many bits per weight as llama.cpp reports them" (budget.bpw), and
 * the plan's predicted file size.
 *
 * llama-quantize writes the model's keys (plus general.quantization_version
 * and general.file_type, without split.*; with --imatrix, four
 * quantize.imatrix.* keys), the same tensor infos, the header padded to the
 * alignment, then every tensor's data padded to the alignment.  Planned
 * tensors take their planned type's bytes (the table's weight_bits, padded
 * to 32 bytes); every other tensor keeps its bytes.  llama.cpp's bits per
 * weight are the tensors' bytes (unpadded) over all their elements.
 */
#ifndef BP_GGUFFILE_H
#define BP_GGUFFILE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"

typedef struct bp_gguf_footprint {
    int valid;                /* the model is a GGUF */
    double meta_bytes;        /* the output's header, padded */
    double kept_bytes;        /* tensors outside the plan, each padded */
    double kept_raw;          /* the same unpadded (llama.cpp's size) */
    double all_elems;         /* elements of every tensor */
    uint32_t alignment;
} bp_gguf_footprint;

/*
 * The footprint of a plan of the layers named (GGUF names without
 * ".weight") over the GGUF at model, quantized with llama-quantize
 * --imatrix imatrix_arg (NULL: without) whose datasets' first entry is
 * dataset (NULL: none).  A model that is not a GGUF gives valid = 0.
 */
int bp_gguf_footprint_of(const char *model, const char *imatrix_arg, const char *dataset,
                         char *const *layers, size_t n_layers, bp_gguf_footprint *f,
                         bp_error *err);

/* The file's bytes and llama.cpp's bits per weight for planned bits
 * (their weight_bits, padded per tensor as the table counts them). */
double bp_gguf_file_bytes(const bp_gguf_footprint *f, double planned_bits);
double bp_gguf_bpw(const bp_gguf_footprint *f, double planned_bits);

#endif
