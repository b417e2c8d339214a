/*
 * init.c - a first config for a model (include/bitplan.h's bp_init): what a
 * newcomer would otherwise write by hand from the reference.
 *
 * The source is a capture directory (tools/capture.py --out DIR:
 * weights.safetensors with calib.safetensors or stats.safetensors beside
 * it) or a model file (safetensors, a .npy directory, or a GGUF; its
 * importance matrix is taken when exactly one file beside it has
 * "imatrix" in its name and ends in .gguf or .dat).  The model is opened exactly as
 * `bitplan run` opens it -- the layers found, the calibration checked
 * against them -- and the config chooses from what is there:
 *
 *   calibration rows or statistics   GPTQ (it fits the weights to them)
 *   neither                          RTN (data-free), metric weight
 *   a GGUF                           llama.cpp's types, file-size budget,
 *                                    the llamacpp export
 *   LLM-shaped layer names           the GPTQModel and llm-compressor exports
 *
 * Every choice is a commented line the user can change.  Paths are written
 * relative to the config's own directory (as the config reader resolves
 * them).  An existing file is never overwritten.
 */
#include "../include/bitplan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/bp_file.h"
#include "formats/gguf.h"
#include "model.h"

/* The path of `target` relative to directory `from` (both made absolute
 * lexically, "." and ".." resolved); malloc'ed. */
static char *relative_path(const char *from, const char *target, bp_error *err)
{
    char *a = bp_path_absolute(from, err), *b = a ? bp_path_absolute(target, err) : NULL;
    char *out = NULL;
    if (!a || !b)
        goto done;
    /* normalise both: split into components, drop "." and fold ".." */
    char *parts[2][256];
    size_t n[2] = {0, 0};
    char *s[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        char *save = NULL;
        for (char *t = strtok_r(s[k], "/", &save); t; t = strtok_r(NULL, "/", &save)) {
            if (!strcmp(t, "."))
                continue;
            if (!strcmp(t, "..")) {
                if (n[k])
                    n[k]--;
                continue;
            }
            if (n[k] == 256) {
                bp_fail(err, "%s: too deep a path", target);
                goto done;
            }
            parts[k][n[k]++] = t;
        }
    }
    size_t common = 0;
    while (common < n[0] && common < n[1] && !strcmp(parts[0][common], parts[1][common]))
        common++;
    size_t len = 1;
    for (size_t i = common; i < n[0]; i++)
        len += 3;
    for (size_t i = common; i < n[1]; i++)
        len += strlen(parts[1][i]) + 1;
    if (!(out = bp_malloc(len + 2, err)))
        goto done;
    out[0] = '\0';
    for (size_t i = common; i < n[0]; i++)
        strcat(out, "../");
    for (size_t i = common; i < n[1]; i++) {
        strcat(out, parts[1][i]);
        if (i + 1 < n[1])
            strcat(out, "/");
    }
    if (!out[0])
        strcpy(out, ".");
done:
    free(a), free(b);
    return out;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A GGUF (by its magic), not by its name. */
static int is_gguf(const char *path)
{
    unsigned char head[4];
    FILE *fp = fopen(path, "rb");
    size_t got = fp ? fread(head, 1, 4, fp) : 0;
    if (fp)
        fclose(fp);
    return got == 4 && bp_gguf_is(head, 4);
}

/* The importance matrix beside a GGUF: the one regular file in its directory
 * whose name has "imatrix" in it and ends in .gguf or .dat (llama-imatrix's
 * two formats) in *out; NULL with *many set when there are several (the
 * user chooses), NULL when there is none.  -1 on error (err set). */
static int imatrix_beside(const char *gguf, char **out, int *many, bp_error *err)
{
    char *dir = bp_path_dir(gguf, err), *found = NULL;
    int rc = 0;
    *many = 0;
    *out = NULL;
    if (!dir)
        return -1;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (!strstr(e->d_name, "imatrix") || n < 5 ||
            (strcmp(e->d_name + n - 5, ".gguf") && strcmp(e->d_name + n - 4, ".dat")))
            continue;
        char *path = bp_path_join(dir, e->d_name, err);
        if (!path) {
            rc = -1;
            break;
        }
        if (!is_file(path) || (!strcmp(e->d_name + n - 5, ".gguf") && !is_gguf(path))) {
            free(path);          /* not a file, or a .gguf that is not one */
            continue;
        }
        if (found) {
            *many = 1;
            free(path);
            free(found);
            found = NULL;
            break;
        }
        found = path;
    }
    if (d)
        closedir(d);
    free(dir);
    if (rc < 0) {
        free(found);
        found = NULL;
    }
    *out = found;
    return rc;
}

/* A YAML double-quoted scalar. */
static void yq(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', fp);
        fputc(*s, fp);
    }
    fputc('"', fp);
}

/* Layer names as Hugging Face decoder models spell them. */
static int llm_shaped(const bp_model *m)
{
    size_t hits = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const char *n = m->layers[i].name;
        hits += strstr(n, "layers.") && (strstr(n, "proj") || strstr(n, "attn") ||
                                          strstr(n, "mlp"));
    }
    return m->n_layers && hits * 2 >= m->n_layers;
}

/* What the calibration file holds: 0 none, else a bitmask. */
enum { CAL_ROWS = 1, CAL_STATS = 2, CAL_FISHER = 4, CAL_MARGIN = 8 };

static int calibration_kind(const char *path, bp_error *err)
{
    bp_tensorset ts;
    if (bp_tensorset_open(&ts, path, err) < 0)
        return -1;
    int kind = 0;
    const char *fmt = bp_tensorset_meta(&ts, "format");
    if (fmt && !strcmp(fmt, "bitplan-stats"))
        kind |= CAL_STATS;
    for (size_t i = 0; i < bp_tensorset_count(&ts); i++) {
        const char *d = strrchr(bp_tensorset_get(&ts, i).name, '.');
        if (!d)
            continue;
        kind |= !strcmp(d, ".input") ? CAL_ROWS : 0;
        kind |= !strcmp(d, ".fisher") || !strcmp(d, ".fisher_u") ? CAL_FISHER : 0;
        kind |= !strcmp(d, ".margin") || !strcmp(d, ".margin_u") ? CAL_MARGIN : 0;
    }
    bp_tensorset_close(&ts);
    return kind;
}

static void write_config(FILE *fp, const char *src, const char *self, const char *weights,
                         const char *calib, int cal, int gguf, const char *imatrix, int many,
                         const bp_model *m, int llm, size_t uncovered)
{
    int64_t params = 0;
    for (size_t i = 0; i < m->n_layers; i++)
        params += m->layers[i].out * m->layers[i].in;
    fprintf(fp, "# bitplan config for %s, written by `bitplan init`.\n", src);
    fprintf(fp, "# %zu layers, %" PRId64 " weights in them (`bitplan inspect` lists them).\n",
            m->n_layers, params);
    fprintf(fp, "# Run it:   bitplan run %s   (the plan, its exports and weights in output.dir)\n",
            self);
    fprintf(fp, "# Compare:  bitplan sweep %s %s\n", self,
            gguf ? "--avg-bits 3:6.5:0.25" : "--avg-bits 2.5:8:0.5");
    fprintf(fp, "# Every key is in the README's config reference.\n\n");

    fprintf(fp, "model:\n  weights: ");
    yq(fp, weights);
    fputc('\n', fp);
    if (calib) {
        fprintf(fp, "  calibration: ");
        yq(fp, calib);
        fprintf(fp, "%s\n", cal & CAL_STATS ? "   # statistics (capture.py --stats)"
                                            : "   # the inputs each layer saw (capture.py)");
    } else if (gguf && imatrix) {
        fprintf(fp, "  imatrix: ");
        yq(fp, imatrix);
        fprintf(fp, "   # llama-imatrix's output, found beside the model: weighs each column "
                    "as llama.cpp's quantizers do\n");
    } else if (gguf) {
        fprintf(fp, "  # imatrix: imatrix.gguf     # llama-imatrix's output: weighs each column "
                    "as llama.cpp's quantizers do%s\n",
                many ? " (several files beside the model could be it: name one)" : "");
    } else if (uncovered) {
        fprintf(fp, "  # calibration: left out: it has no inputs for %zu of the %zu layers "
                    "(capture them all to plan with data)\n", uncovered, m->n_layers);
    } else {
        fprintf(fp, "  # calibration: calib.safetensors   # capture.py's output: enables GPTQ "
                    "and the loss-aware metrics\n");
    }
    fprintf(fp, "  include: [\"*\"]\n  exclude: []\n\n");

    if (gguf) {
        fprintf(fp, "candidates:\n"
                    "  # llama.cpp's own types, measured in ggml's own bytes\n"
                    "  types: [q2_K, q3_K, q4_K, q5_K, q6_K, q8_0]\n\n");
        fprintf(fp, "metric: auto\n\n");
        fprintf(fp, "budget:\n"
                    "  bpw: 4.9                 # bits per weight as llama.cpp counts them "
                    "(Q4_K_M is about 4.9);\n"
                    "                           # or run with --max-bytes-of model-Q4_K_M.gguf\n\n");
        fprintf(fp, "output:\n  dir: out\n  formats: [yaml, json, llamacpp]   # llamacpp: "
                    "tensor-types.txt and the llama-quantize command\n");
        return;
    }
    int data = cal & (CAL_ROWS | CAL_STATS);
    fprintf(fp, "candidates:\n"
                "  wbits: [2, 3, 4, 6, 8]     # weight widths each layer may get\n"
                "  abits: [16]                # 16: activations stay float; add 8 to plan "
                "activation widths too\n\n");
    fprintf(fp, "weights:\n");
    if (data)
        fprintf(fp, "  quantizer: gptq           # fits each layer's weights to its inputs; "
                    "rtn (round to nearest) is faster\n");
    else
        fprintf(fp, "  quantizer: rtn            # no calibration data: data-free (squant: "
                    "data-free flipping)\n");
    fprintf(fp, "  granularity: %s\n", llm ? "per_group" : "per_channel");
    if (llm)
        fprintf(fp, "  group_size: 128\n");
    fprintf(fp, "  symmetric: true\n\n");
    fprintf(fp, "metric: auto                 # %s\n\n",
            cal & CAL_MARGIN   ? "the decision Fisher (margin): what can flip a decision"
            : cal & CAL_FISHER ? "the output Fisher (kfac): KL to the float model"
            : data             ? "the layer's output error (relative)"
                               : "weight error (data-free)");
    fprintf(fp, "budget:\n"
                "  avg_bits: 4.0              # average weight bits, scales included; or "
                "max_bytes, max_error\n\n");
    fprintf(fp, "# pins:                      # keep a layer at a width, e.g. the classifier\n"
                "#   - {pattern: \"%s\", wbits: 8}\n\n",
            m->n_layers ? m->layers[m->n_layers - 1].name : "head");
    fprintf(fp, "output:\n  dir: out\n");
    fprintf(fp, "  formats: [yaml, json%s]\n",
            llm ? ", gptqmodel, llmcompressor" : "");
    fprintf(fp, "  weights: q.safetensors     # the quantized weights: "
                "tools/evaluate_plan.py, bitplan_torch.apply\n");
}

int bp_init(const char *src, const char *out, bp_error *err)
{
    char *weights = NULL, *calib = NULL, *odir = NULL, *rw = NULL, *rc_ = NULL;
    char *imatrix = NULL, *ri = NULL;
    bp_model m;
    int have_model = 0, rc = -1, gguf = 0, cal = 0, many = 0;
    size_t uncovered = 0;    /* layers the calibration file has no inputs for */
    memset(&m, 0, sizeof m);
    struct stat ost;
    if (out && strcmp(out, "-") && lstat(out, &ost) == 0) {    /* a link too, even dangling */
        bp_fail(err, "%s exists: bitplan init does not overwrite a file; remove it or name "
                "another with -o", out);
        goto done;
    }
    if (is_dir(src) && !is_file(src)) {
        char *w = bp_path_join(src, "weights.safetensors", err);
        if (!w)
            goto done;
        if (is_file(w)) {                 /* a capture directory */
            weights = w;
            const char *names[] = {"stats.safetensors", "calib.safetensors"};
            for (int i = 0; i < 2 && !calib; i++) {
                char *c = bp_path_join(src, names[i], err);
                if (c && is_file(c))
                    calib = c;
                else
                    free(c);
            }
        } else {
            free(w);
            weights = bp_strdup(src, err);   /* a .npy directory */
        }
    } else if (is_file(src)) {
        weights = bp_strdup(src, err);
        gguf = is_gguf(src);
        if (gguf && imatrix_beside(src, &imatrix, &many, err) < 0)
            goto done;
    } else {
        bp_fail(err, "%s: no such file or directory (expected a capture directory, a "
                "safetensors or GGUF model)", src);
        goto done;
    }
    if (!weights)
        goto done;
    if (calib && (cal = calibration_kind(calib, err)) < 0)
        goto done;
    char *all[] = {"*"};
    if (bp_model_open(&m, weights, calib, imatrix, all, 1, NULL, 0, err) < 0) {
        if (imatrix) {
            char why[sizeof err->msg];
            memcpy(why, err->msg, sizeof why);
            bp_fail(err, "%s (an imatrix found beside the model: move it away, or write the "
                    "config by hand)", why);
        }
        goto done;
    }
    have_model = 1;
    size_t covered = 0;
    for (size_t i = 0; i < m.n_layers; i++)
        covered += m.layers[i].input >= 0 || m.layers[i].stats;
    if (calib && covered < m.n_layers) {      /* partial calibration: plan data-free */
        uncovered = m.n_layers - covered;
        bp_model_close(&m);
        have_model = 0;
        free(calib);
        calib = NULL;
        cal = 0;
        if (bp_model_open(&m, weights, NULL, NULL, all, 1, NULL, 0, err) < 0)
            goto done;
        have_model = 1;
    }
    if (!m.n_layers) {
        bp_fail(err, "%s: no layers to plan (no 2-D or 4-D weight tensors named NAME.weight)",
                weights);
        goto done;
    }
    const char *where = out && strcmp(out, "-") ? out : "./x";
    if (!(odir = bp_path_dir(where, err)) || !(rw = relative_path(odir, weights, err)) ||
        (calib && !(rc_ = relative_path(odir, calib, err))) ||
        (imatrix && !(ri = relative_path(odir, imatrix, err))))
        goto done;
    char *text = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&text, &n);
    if (!mem) {
        bp_fail(err, "out of memory");
        goto done;
    }
    write_config(mem, src, out && strcmp(out, "-") ? out : "CONFIG", rw, rc_, cal, gguf, ri,
                 many, &m, llm_shaped(&m), uncovered);
    fclose(mem);
    if (!out || !strcmp(out, "-")) {
        rc = fwrite(text, 1, n, stdout) == n ? 0 : bp_fail(err, "cannot write to stdout");
    } else {
        /* created exclusively: a file appearing meanwhile is not replaced */
        int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
        if (fd < 0) {
            bp_fail(err, "%s: cannot create: %s", out, strerror(errno));
        } else {
            ssize_t w = write(fd, text, n);
            int e = errno;
            if (close(fd) != 0 || w != (ssize_t)n) {
                unlink(out);
                bp_fail(err, "%s: cannot write: %s", out, strerror(w < 0 ? e : ENOSPC));
            } else {
                rc = 0;
            }
        }
    }
    free(text);
done:
    if (have_model)
        bp_model_close(&m);
    free(weights), free(calib), free(odir), free(rw), free(rc_), free(imatrix), free(ri);
    return rc;
}
