/*
 * grids.c - the static activation grids of a config's activation candidates
 * fitted on calibration rows (include/bitplan.h's bp_grids), for
 * tools/capture.py --stats: JSON {"format": "bitplan-grids-v1", "layers":
 * [{"layer", "grids": [{"kind", "bits", "scale": [...], "zero": [...]}]}]},
 * floats to 9 digits (exact for float32).
 */
#include "../include/bitplan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_file.h"
#include "config.h"
#include "model.h"
#include "session.h"

/* One layer's grids as JSON: every quantizer's activation setting at every
 * width below 16 bits, fitted on the layer's rows; the same grid once. */
static int layer_grids(const bp_config *cfg, const bp_model *m, size_t i, FILE *fp, int first,
                       bp_error *err)
{
    bp_loaded_layer l;
    if (bp_model_load_layer(m, i, &l, err) < 0)
        return -1;
    const bp_layer *v = &l.view;
    int64_t w = v->in * v->groups;
    float *sc = bp_malloc((size_t)(2 * w * (int64_t)(cfg->n_abits * cfg->n_quantizers + 1)) *
                          sizeof *sc, err);
    int64_t *cnt = bp_calloc(cfg->n_abits * cfg->n_quantizers + 1, sizeof *cnt, err);
    int *kb = bp_calloc(2 * (cfg->n_abits * cfg->n_quantizers + 1), sizeof *kb, err);
    int rc = sc && cnt && kb ? 0 : -1, ng = 0;
    if (rc == 0 && !v->X)
        rc = bp_fail(err, "%s: layer '%s' has no calibration rows ('%s.input') to fit "
                     "activation grids on", m->calib.path, v->name, v->name);
    fprintf(fp, "%s\n  {\"layer\": ", first ? "" : ",");
    bp_json_string(fp, v->name);
    fputs(", \"grids\": [", fp);
    for (size_t q = 0; rc == 0 && q < cfg->n_quantizers; q++)
        for (size_t a = 0; rc == 0 && a < cfg->n_abits; a++) {
            bp_qspec s = bp_config_acts_for_quantizer(cfg, v->name, cfg->quantizers[q]);
            s.bits = cfg->abits[a];
            if (s.bits >= BP_BITS_FLOAT)
                continue;
            if (s.kind == BP_AQ_UNIFORM && s.granularity != BP_GRAN_TENSOR) {
                rc = bp_fail(err, "layer '%s': %s activation grids are fitted per row as the "
                             "data comes and cannot be expressed as statistics; use "
                             "per_tensor, ptf or log2 activations, or capture rows", v->name,
                             bp_granularity_name(s.granularity));
                break;
            }
            float *g = sc + 2 * w * ng;
            int64_t c = bp_act_grid(v->X, v->n, w, &s, g, g + w);
            int dup = 0;
            for (int j = 0; j < ng && !dup; j++)
                dup = kb[2 * j] == (int)s.kind && kb[2 * j + 1] == s.bits && cnt[j] == c &&
                      memcmp(sc + 2 * w * j, g, (size_t)c * sizeof *g) == 0 &&
                      memcmp(sc + 2 * w * j + w, g + w, (size_t)c * sizeof *g) == 0;
            if (dup)
                continue;
            kb[2 * ng] = (int)s.kind, kb[2 * ng + 1] = s.bits, cnt[ng] = c;
            fprintf(fp, "%s\n    {\"kind\": \"%s\", \"bits\": %d, \"scale\": [", ng ? "," : "",
                    bp_qkind_name(s.kind), s.bits);
            for (int64_t j = 0; j < c; j++)
                fprintf(fp, "%s%.9g", j ? ", " : "", (double)g[j]);
            fputs("], \"zero\": [", fp);
            for (int64_t j = 0; j < c; j++)
                fprintf(fp, "%s%.9g", j ? ", " : "", (double)g[w + j]);
            fputs("]}", fp);
            ng++;
        }
    fputs("]}", fp);
    free(sc);
    free(cnt);
    free(kb);
    bp_loaded_layer_free(&l);
    return rc;
}

int bp_grids(const char *config, const char *calibration, const char *out, bp_error *err)
{
    bp_config cfg;
    bp_model m;
    if (!calibration)
        return bp_fail(err, "grids needs calibration rows to fit on");
    if (bp_config_load(&cfg, config, err) < 0)
        return -1;
    if (bp_model_open(&m, cfg.weights, calibration, cfg.imatrix, cfg.include, cfg.n_include, cfg.exclude,
                      cfg.n_exclude, err) < 0) {
        bp_config_free(&cfg);
        return -1;
    }
    char *buf = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&buf, &n);
    int rc = mem ? 0 : bp_fail(err, "out of memory");
    if (rc == 0)
        fputs("{\"format\": \"bitplan-grids-v1\", \"layers\": [", mem);
    for (size_t i = 0; rc == 0 && i < m.n_layers; i++)
        rc = layer_grids(&cfg, &m, i, mem, i == 0, err);
    if (mem) {
        fputs("\n]}\n", mem);
        fclose(mem);
    }
    if (rc == 0)
        rc = bp_write_output(out, buf, n, err);
    free(buf);
    bp_model_close(&m);
    bp_config_free(&cfg);
    return rc;
}
