/*
 * bp_llama.h - llama.cpp's conventions that every stage shares (from
 * llama-quant.cpp): which tensors llama-quantize quantizes, the type it
 * falls back to when a row does not fill a type's block, which tensors are
 * embedding tables (read by row, never multiplied), and which types it
 * refuses without an importance matrix.
 */
#ifndef BP_LLAMA_H
#define BP_LLAMA_H

#include <stdint.h>

/* Would llama-quantize quantize this tensor (tensor_allows_quantization,
 * with the output tensor quantized)?  2-D and 3-D tensors whose name ends
 * in "weight", not norms, routers, positional or token-type embeddings,
 * small convolutions and the other tensors it keeps as they are. */
int bp_llama_quantizable(const char *name, int n_dims);

/* The type llama-quantize writes for a tensor of ncols-element rows asked
 * to be `type` (tensor_type_fallback): type itself when ncols fills its
 * blocks; else IQ* -> iq4_nl, q2_K/q3_K -> q4_0, q4_K -> q5_0, q5_K ->
 * q5_1, q6_K -> q8_0; f16 when even that does not fit; -1 for other types
 * (llama-quantize stops: it has no fallback for them). */
int bp_llama_fallback(int type, int64_t ncols);

/* token_embd.weight or per_layer_token_embd.weight (the name with or
 * without ".weight"): a table read by rows. */
int bp_llama_is_embedding(const char *name);
/* output.weight (with or without ".weight"). */
int bp_llama_is_output(const char *name);

/* Types llama-quantize refuses without --imatrix for tensors other than the
 * embeddings and output (q2_K only under the Q2_K_S mix, q2_k_s true). */
int bp_llama_requires_imatrix(int type, int q2_k_s);

#endif
