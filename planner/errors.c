/*
 * errors.c - the errors the integer program minimises (errors.h).
 */
#include "errors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/scales.h"

int bp_take_errors(bp_table *t, const char *path, bp_error *err)
{
    bp_table from;
    if (bp_table_read_csv(&from, path, err) < 0)
        return -1;
    int rc = bp_table_take_errors(t, &from, path, err);
    bp_table_free(&from);
    return rc;
}

int bp_shrink_noisy(bp_table *t, const bp_sens_result *res, bp_metric metric, int *shrunk,
                    char *note, bp_error *err)
{
    *shrunk = 0;
    note[0] = '\0';
    size_t n = res->n_layers;
    if (!res->noise_rse || !n)
        return 0;
    double *y = bp_calloc(n, sizeof *y, err), *v = bp_calloc(n, sizeof *v, err);
    double *s2 = bp_malloc(n * sizeof *s2, err);
    int rc = -1;
    if (!y || !v || !s2)
        goto out;
    /* per layer: log(sum metric / sum relative) and its noise variance */
    for (size_t i = 0; i < t->n; i++) {
        const bp_table_row *r = &t->rows[i];
        size_t l = 0;
        while (l < n && strcmp(res->noise_layer[l], r->layer) != 0)
            l++;
        if (l == n || !isfinite(r->value[metric]) || !isfinite(r->value[BP_METRIC_RELATIVE]))
            goto none;
        y[l] += r->value[metric];
        v[l] += r->value[BP_METRIC_RELATIVE];
    }
    double worst = 0.0, mean_s2 = 0.0, mean = 0.0, var = 0.0;
    for (size_t l = 0; l < n; l++) {
        double rse = res->noise_rse[l];
        if (!isfinite(rse) || !(y[l] > 0) || !(v[l] > 0))
            goto none;
        y[l] = log(y[l] / v[l]);
        s2[l] = log1p(rse * rse);       /* the variance of log rho */
        worst = fmax(worst, rse);
        mean_s2 += s2[l] / (double)n;
        mean += y[l] / (double)n;
    }
    for (size_t l = 0; l < n; l++)
        var += (y[l] - mean) * (y[l] - mean) / (double)(n > 1 ? n - 1 : 1);
    double tau2 = fmax(var - mean_s2, 0.0), wsum = 0.0, mu = 0.0;
    for (size_t l = 0; l < n; l++) {                /* the precision-weighted mean */
        double w = 1.0 / (tau2 + s2[l] + 1e-300);
        mu += w * y[l];
        wsum += w;
    }
    mu /= wsum;
    double most = 0.0;
    for (size_t l = 0; l < n; l++) {
        double keep = tau2 / (tau2 + s2[l] + 1e-300), shrunk_y = mu + keep * (y[l] - mu);
        v[l] = exp(shrunk_y - y[l]);                /* the factor on the layer's errors */
        most = fmax(most, fabs(shrunk_y - y[l]));
    }
    for (size_t i = 0; i < t->n; i++) {
        size_t l = 0;
        while (strcmp(res->noise_layer[l], t->rows[i].layer) != 0)
            l++;
        t->rows[i].error *= v[l];
    }
    *shrunk = 1;
    snprintf(note, 512, "%s; relative standard error of tr F up to %.0f %%: layer scales "
             "(over the relative error) shrunk toward their mean, errors moved up to %.2fx",
             res->noise_how[0] ? res->noise_how : "Fisher", 100.0 * worst, exp(most));
none:
    rc = 0;
out:
    free(y);
    free(v);
    free(s2);
    return rc;
}

int bp_scale_errors(bp_table *t, const char *path, bp_metric metric, char *predicts,
                    double *exponent, bp_error *err)
{
    bp_scales sc;
    if (bp_scales_load(&sc, path, err) < 0)
        return -1;
    const char *m = bp_metric_name(metric);
    int rc = 0;
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        double s = bp_scales_get(&sc, t->rows[i].layer, m, t->rows[i].wbits);
        if (s < 0)
            rc = bp_fail(err, "%s: no scale for layer '%s' and metric '%s' at %d-bit weights "
                         "(calibrate with this config: tools/calibrate.py)", path,
                         t->rows[i].layer, m, t->rows[i].wbits);
        else
            t->rows[i].error *= s;
    }
    if (rc == 0) {
        snprintf(predicts, 16, "%s", sc.objective);
        *exponent = sc.exponent;
    }
    bp_scales_free(&sc);
    return rc;
}
