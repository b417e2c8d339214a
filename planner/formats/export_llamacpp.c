/*
 * export_llamacpp.c - a plan as llama-quantize's --tensor-type-file and
 * --tensor-type arguments: ggml types per tensor, patterns its parser keeps
 * intact, blocks of one type compressed into one pattern, and what
 * llama-quantize will do instead (fallbacks, imatrix, kept tensors).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../common/bp_ggml.h"
#include "../../common/bp_llama.h"
#include "exportfmt.h"

const char *bp_ggml_type(int bits)
{
    switch (bits) {
    case 2: return "q2_K";
    case 3: return "q3_K";
    case 4: return "q4_K";
    case 5: return "q5_K";
    case 6: return "q6_K";
    case 8: return "q8_0";
    case 16: return "f16";
    }
    return NULL;
}

/* ---- llama.cpp ------------------------------------------------------------ */

/* "^pattern$" for llama-quantize: regex-escaped, and every character its
 * parser would change written as \xHH (it lowercases the pattern, splits
 * the token at the first '=' and the file at whitespace); std::regex's
 * ECMAScript grammar reads \xHH. */
static void llama_pattern(const char *name, char *out, size_t cap)
{
    size_t k = 0;
    out[k++] = '^';
    for (const unsigned char *s = (const unsigned char *)name; *s && k + 6 < cap; s++) {
        if ((*s >= 'A' && *s <= 'Z') || *s == '=' || *s == ' ' || *s == '#')
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", *s);
        else if (*s >= 0x80)         /* bytes of UTF-8: hex too, lowercase-proof */
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", *s);
        else {
            if (strchr(".[]()*+?{}|^$\\", *s))
                out[k++] = '\\';
            out[k++] = (char)*s;
        }
    }
    out[k++] = '$';
    out[k] = '\0';
}

/* The GGUF tensor a layer names: a layer planned from a GGUF is named
 * without ".weight". */
static const char *tensor_of(const bp_export_layer *l, char *buf, size_t cap)
{
    if (!l->ggml)
        return l->name;
    snprintf(buf, cap, "%s.weight", l->name);
    return buf;
}

/* A layer planned in llama.cpp's types has its type; else the user's rule
 * for (bits, group), else the default type. */
const char *xp_ggml_for(const bp_export_layer *l, const bp_ggml_rule *types, size_t n)
{
    if (l->ggml)
        return bp_ggml_type_name(bp_ggml_type_parse(l->quantizer));
    for (size_t k = 0; k < n; k++)
        if (types[k].bits == l->wbits &&
            (types[k].group == -1 || (types[k].group == -2 && xp_group_of(l) < 0) ||
             types[k].group == xp_group_of(l)))
            return types[k].type;
    return bp_ggml_type(l->wbits);
}

/* llama.cpp's block size of a type (ggml.c type traits), 0 if unknown. */
static int ggml_block(const char *t)
{
    static const char *const k256[] = {"q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K",
                                       "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s",
                                       "iq3_xxs", "iq3_s", "iq4_xs", "tq1_0", "tq2_0"};
    static const char *const k32[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "iq4_nl",
                                      "mxfp4"};
    for (size_t i = 0; i < sizeof k256 / sizeof *k256; i++)
        if (!strcasecmp(t, k256[i]))
            return 256;
    for (size_t i = 0; i < sizeof k32 / sizeof *k32; i++)
        if (!strcasecmp(t, k32[i]))
            return 32;
    if (!strcasecmp(t, "f16") || !strcasecmp(t, "bf16") || !strcasecmp(t, "f32"))
        return 1;
    return 0;
}

/* What llama-quantize uses instead when a row does not fill the type's
 * block (llama-quant.cpp, tensor_type_fallback), or NULL if nothing. */
static const char *ggml_fallback(const char *t, long cols)
{
    int b = ggml_block(t);
    if (b <= 1 || cols <= 0 || cols % b == 0)
        return NULL;
    const char *f = "f16";
    if (!strncasecmp(t, "iq", 2))
        f = "iq4_nl";
    else if (!strcasecmp(t, "q2_K") || !strcasecmp(t, "q3_K") || !strncasecmp(t, "tq", 2))
        f = "q4_0";
    else if (!strcasecmp(t, "q4_K"))
        f = "q5_0";
    else if (!strcasecmp(t, "q5_K"))
        f = "q5_1";
    else if (!strcasecmp(t, "q6_K"))
        f = "q8_0";
    return cols % ggml_block(f) == 0 ? f : "f16";
}

/* Types llama-quantize refuses without --imatrix (tensor_requires_imatrix). */
static int needs_imatrix(const char *t)
{
    static const char *const iq[] = {"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs"};
    for (size_t i = 0; i < sizeof iq / sizeof *iq; i++)
        if (!strcasecmp(t, iq[i]))
            return 1;
    return 0;
}

/* A GGUF tensor name ("blk.3.attn_q.weight", "output.weight", ...)? */
static int gguf_name(const char *n)
{
    size_t len = strlen(n);
    if (len < 8 || strcmp(n + len - 7, ".weight") != 0)
        return 0;
    for (const char *s = n; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_'))
            return 0;
    return !strstr(n, "model.") && !strstr(n, "_proj.") && !strstr(n, "layers.");
}

/* Tensors llama-quantize never quantizes (tensor_allows_quantization). */
static int llama_keeps(const char *n)
{
    return strstr(n, "_norm.weight") || strstr(n, "ffn_gate_inp") || strstr(n, "norm.weight");
}

void xp_llamacpp_warnings(const bp_export_plan *p, const char **type, const bp_export_opts *o,
                           unsigned char *flag)
{
    const char *F = "llamacpp";
    char msg[400];
    XP_WARN_IF(o, F, p, flag, !L->ggml && !gguf_name(L->name),
               "not a GGUF tensor name: llama-quantize matches its patterns against GGUF names "
               "(blk.N.attn_q.weight, ...) and will apply nothing; use --llama-names "
               "(export.llama_names) or export.rename");
    XP_WARN_IF(o, F, p, flag, !L->ggml && gguf_name(L->name) && llama_keeps(L->name),
               "llama-quantize never quantizes norms and MoE routers; these stay in the source "
               "type");
    xp_warn_tied(o, F, p, flag,
                 "the weights are the embedding's (tied embeddings): a GGUF of this model has no "
                 "separate output.weight, so this override applies to nothing; the embedding's "
                 "type is what the head gets");
    XP_WARN_IF(o, F, p, flag, L->abits < 16,
               "llama.cpp quantizes weights only; the planned activation widths are not applied");
    XP_WARN_IF(o, F, p, flag, needs_imatrix(type[i_]),
               "this type needs an importance matrix: run llama-quantize with --imatrix FILE");
    XP_WARN_IF(o, F, p, flag,
               !L->ggml && L->wbits < 16 &&
                   (xp_per_tensor(L) || !L->symmetric || xp_group_of(L) > 0),
               "llama.cpp's types fix their own blocks and zero points (q4_K: 32-wide blocks "
               "with minimums in 256-wide super-blocks); the plan's bit width is applied, its "
               "granularity, group size and symmetry are not");
    /* rows that do not fill the type's block, one warning per (type, fallback) */
    unsigned char *told = calloc(p->n + 1, 1);
    for (size_t i = 0; told && i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        const char *fb = l->merged || told[i] ? NULL : ggml_fallback(type[i], l->in_features);
        if (!fb)
            continue;
        for (size_t j = 0; j < p->n; j++) {
            const bp_export_layer *m = &p->layers[j];
            const char *fb2 = m->merged ? NULL : ggml_fallback(type[j], m->in_features);
            flag[j] = j >= i && fb2 && !strcmp(fb2, fb) && !strcmp(type[j], type[i]);
            told[j] |= flag[j];
        }
        snprintf(msg, sizeof msg, "rows (%ld inputs in the first) are not a multiple of %s's "
                 "block of %d: llama-quantize falls back to %s for these", l->in_features,
                 type[i], ggml_block(type[i]), fb);
        xp_warn_layers(o, F, p, flag, msg);
    }
    free(told);
    XP_WARN_IF(o, F, p, flag, !L->ggml && !strcasecmp(type[i_], "q2_K"),
               "q2_K needs an importance matrix under base type Q2_K_S (tensor_requires_imatrix); "
               "use another base type or --imatrix FILE");
    int planned = 0;
    for (size_t i = 0; i < p->n; i++)
        planned |= p->layers[i].ggml;
    if (!planned)
        xp_note(o, F, "llama-quantize applies these types only under a quantized base type, "
                "e.g. llama-quantize --tensor-type-file tensor-types.txt model-f32.gguf out.gguf "
                "Q8_0 (with F16, BF16 or F32 as the type it ignores them; "
                "--token-embedding-type and --output-tensor-type override them)");
}

/* llama-quantize's name of a mix (QUANT_OPTIONS) whose main type is t: the
 * base type of the command (every planned tensor has its own type). */
static const char *base_ftype(const char *t)
{
    static const char *const map[][2] = {
        {"q2_K", "Q2_K"}, {"q3_K", "Q3_K_M"}, {"q4_K", "Q4_K_M"}, {"q5_K", "Q5_K_M"},
        {"q6_K", "Q6_K"}, {"q8_0", "Q8_0"}, {"q4_0", "Q4_0"}, {"q4_1", "Q4_1"},
        {"q5_0", "Q5_0"}, {"q5_1", "Q5_1"}, {"iq4_nl", "IQ4_NL"}, {"iq4_xs", "IQ4_XS"}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcasecmp(t, map[i][0]))
            return map[i][1];
    return "Q8_0";
}

/* A word for sh: as is when it is safe, else single-quoted. */
static void sh_word(FILE *fp, const char *s)
{
    int safe = *s != '\0';
    for (const char *c = s; *c && safe; c++)
        safe = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
               strchr("._-/+=:,@%", *c);
    if (safe) {
        fputs(s, fp);
        return;
    }
    fputc('\'', fp);
    for (const char *c = s; *c; c++)
        if (*c == '\'')
            fputs("'\\''", fp);
        else
            fputc(*c, fp);
    fputc('\'', fp);
}

void xp_write_llamacpp_command(FILE *fp, const bp_export_plan *p, const char **type,
                               const char *type_file, const char *model, const char *imatrix)
{
    /* the base type: the most common planned quantized type */
    size_t best = 0, count = 0;
    const char *base = "q8_0", *embd = NULL, *out = NULL;
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        if (l->merged)
            continue;
        if (bp_llama_is_embedding(l->name) && strcmp(l->name, "per_layer_token_embd") != 0)
            embd = type[i];
        if (bp_llama_is_output(l->name))
            out = type[i];
        count = 0;
        for (size_t j = 0; j < p->n; j++)
            count += !p->layers[j].merged && !strcasecmp(type[j], type[i]);
        if (count > best && bp_ggml_is_quantized(bp_ggml_type_parse(type[i])))
            best = count, base = type[i];
    }
    if (!model)
        model = p->model ? p->model : "model-f16.gguf";
    if (!imatrix)
        imatrix = p->imatrix;
    const char *dot = strrchr(model, '.');
    int stem = dot && !strcasecmp(dot, ".gguf") ? (int)(dot - model) : (int)strlen(model);
    char target[4200];
    snprintf(target, sizeof target, "%.*s-bitplan.gguf", stem, model);
    fputs("llama-quantize", fp);
    if (imatrix) {
        fputs(" --imatrix ", fp);
        sh_word(fp, imatrix);
    }
    fputs(" --tensor-type-file ", fp);
    sh_word(fp, type_file);
    if (embd)
        fprintf(fp, " --token-embedding-type %s", embd);
    if (out)
        fprintf(fp, " --output-tensor-type %s", out);
    fputc(' ', fp);
    sh_word(fp, model);
    fputc(' ', fp);
    sh_word(fp, target);
    fprintf(fp, " %s\n", base_ftype(base));
}

/* "blk.N.rest": N's digits and the rest, or 0. */
static int block_name(const char *name, const char **num, size_t *len, const char **rest)
{
    if (strncmp(name, "blk.", 4) != 0)
        return 0;
    const char *d = name + 4, *e = d;
    while (*e >= '0' && *e <= '9')
        e++;
    if (e == d || *e != '.')
        return 0;
    *num = d, *len = (size_t)(e - d), *rest = e + 1;
    return 1;
}

/* One token: "pattern=type" or "--tensor-type pattern=type". */
static void llama_token(FILE *fp, int args, int *first, const char *pat, const char *type)
{
    fprintf(fp, args ? "%s--tensor-type %s=%s" : "%s%s=%s", *first ? "" : (args ? " " : "\n"),
            pat, type);
    *first = 0;
}

/* Can layer j join layer i's compressed token (same rest of name, same type)? */
static int joins(const bp_export_plan *p, const char **type, const unsigned char *used, size_t i,
                 size_t j)
{
    const char *num, *rest, *num2, *rest2;
    size_t len, len2;
    char a[1100], b[1100];
    return !used[j] && !p->layers[j].merged && strcmp(type[j], type[i]) == 0 &&
           block_name(tensor_of(&p->layers[i], a, sizeof a), &num, &len, &rest) &&
           block_name(tensor_of(&p->layers[j], b, sizeof b), &num2, &len2, &rest2) &&
           strcmp(rest, rest2) == 0;
}

int xp_write_llamacpp(FILE *fp, const bp_export_plan *p, int args, const char **type,
                          int compress)
{
    char pat[2200], tn[1100];
    unsigned char *used = calloc(p->n + 1, 1);
    if (!used)
        return -1;
    int first = 1;
    for (size_t i = 0; i < p->n; i++) {
        const char *num = NULL, *rest = NULL;
        size_t len = 0, members = 0;
        if (used[i] || p->layers[i].merged)
            continue;
        for (size_t j = i + 1; compress && j < p->n; j++)
            members += joins(p, type, used, i, j);
        const char *name = tensor_of(&p->layers[i], tn, sizeof tn);
        if (!members) {
            llama_pattern(name, pat, sizeof pat);
            llama_token(fp, args, &first, pat, type[i]);
            continue;
        }
        char *buf = NULL;
        size_t n = 0;
        FILE *mem = open_memstream(&buf, &n);
        if (!mem) {
            free(used);
            return -1;
        }
        block_name(name, &num, &len, &rest);
        fprintf(mem, "^blk\\.(%.*s", (int)len, num);
        for (size_t j = i + 1; j < p->n; j++)
            if (joins(p, type, used, i, j)) {
                const char *num2 = NULL, *rest2 = NULL;
                size_t len2 = 0;
                char tj[1100];
                block_name(tensor_of(&p->layers[j], tj, sizeof tj), &num2, &len2, &rest2);
                fprintf(mem, "|%.*s", (int)len2, num2);
                used[j] = 1;
            }
        llama_pattern(rest, pat, sizeof pat);          /* "^rest$" */
        fprintf(mem, ")\\.%s", pat + 1);
        fclose(mem);
        llama_token(fp, args, &first, buf, type[i]);
        free(buf);
    }
    fputc('\n', fp);
    free(used);
    return 0;
}
