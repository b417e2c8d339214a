/*
 * bp_llama.c - llama.cpp's tensor conventions (bp_llama.h).
 */
#include "bp_llama.h"

#include <string.h>

#include "bp_ggml.h"

static int has(const char *s, const char *part)
{
    return strstr(s, part) != NULL;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

int bp_llama_quantizable(const char *name, int n_dims)
{
    static const char *const kept[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
        "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
        "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight",
        "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight",
        "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
        "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
        ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
        ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"};
    if (n_dims < 2 || n_dims > 3 || !ends_with(name, "weight"))
        return 0;
    if (!strcmp(name, "position_embd.weight") || !strcmp(name, "token_types.weight"))
        return 0;
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
        if (has(name, kept[i]))
            return 0;
    return 1;
}

int bp_llama_fallback(int type, int64_t ncols)
{
    int64_t blck;
    size_t bytes;
    if (bp_ggml_block(type, &blck, &bytes) < 0 || blck <= 1 || ncols % blck == 0)
        return type;
    int f;
    const char *name = bp_ggml_type_name(type);
    if (name[0] == 'i' && name[1] == 'q')
        f = BP_GGML_IQ4_NL;
    else if (type == BP_GGML_Q2_K || type == BP_GGML_Q3_K || !strncmp(name, "tq", 2))
        f = BP_GGML_Q4_0;
    else if (type == BP_GGML_Q4_K)
        f = BP_GGML_Q5_0;
    else if (type == BP_GGML_Q5_K)
        f = BP_GGML_Q5_1;
    else if (type == BP_GGML_Q6_K)
        f = BP_GGML_Q8_0;
    else
        return -1;            /* llama-quantize has no fallback for it: it stops */
    bp_ggml_block(f, &blck, &bytes);
    return ncols % blck == 0 ? f : BP_GGML_F16;
}

static int named(const char *name, const char *stem)
{
    size_t n = strlen(stem);
    return !strncmp(name, stem, n) && (!name[n] || !strcmp(name + n, ".weight"));
}

int bp_llama_is_embedding(const char *name)
{
    return named(name, "token_embd") || named(name, "per_layer_token_embd");
}

int bp_llama_is_output(const char *name)
{
    return named(name, "output");
}

int bp_llama_requires_imatrix(int type, int q2_k_s)
{
    const char *n = bp_ggml_type_name(type);
    if (!n)
        return 0;
    if (type == BP_GGML_Q2_K)
        return q2_k_s;
    return !strcmp(n, "iq3_xxs") || !strcmp(n, "iq2_xxs") || !strcmp(n, "iq2_xs") ||
           !strcmp(n, "iq2_s") || !strcmp(n, "iq1_m") || !strcmp(n, "iq1_s");
}
