/*
 * problem.c - table -> integer program -> solution (problem.h).
 */
#include "problem.h"

#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_profile.h"

/* ---- table -> integer program ----------------------------------------- */

typedef struct ip_build {
    size_t n_layers;
    size_t *first;            /* n_layers + 1 */
    size_t *row;              /* candidate -> table row */
    double *error, *bits, *bops, *latency;
    unsigned char *allowed;
    int64_t *params;          /* per layer */
    const char **names;       /* per layer */
    size_t fixed;             /* layers whose candidate was given */
} ip_build;

static void ip_build_free(ip_build *b)
{
    free(b->first);
    free(b->row);
    free(b->error);
    free(b->bits);
    free(b->bops);
    free(b->latency);
    free(b->allowed);
    free(b->params);
    free(b->names);
    memset(b, 0, sizeof *b);
}

static const bp_table *sort_tab;
static int cmp_by_layer(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(sort_tab->rows[x].layer, sort_tab->rows[y].layer);
    return c ? c : (x < y ? -1 : x > y);
}

static int cmp_by_first_row(const void *a, const void *b)
{
    size_t x = **(const size_t *const *)a, y = **(const size_t *const *)b;
    return x < y ? -1 : x > y;
}

/* Candidates grouped by layer; layers in order of first appearance, the
 * candidates of a layer in table order. */
static int group_rows(const bp_table *t, ip_build *b, bp_error *err)
{
    size_t n = t->n, *idx = bp_malloc(n * sizeof *idx, err);
    size_t **starts = bp_malloc(n * sizeof *starts, err);
    int rc = -1;
    if (!idx || !starts)
        goto out;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    sort_tab = t;
    qsort(idx, n, sizeof *idx, cmp_by_layer);
    size_t ng = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(t->rows[idx[i]].layer, t->rows[idx[i - 1]].layer) != 0)
            starts[ng++] = &idx[i];
    qsort(starts, ng, sizeof *starts, cmp_by_first_row);
    b->n_layers = ng;
    b->first = bp_malloc((ng + 1) * sizeof *b->first, err);
    b->row = bp_malloc(n * sizeof *b->row, err);
    b->params = bp_malloc(ng * sizeof *b->params, err);
    b->names = bp_malloc(ng * sizeof *b->names, err);
    if (!b->first || !b->row || !b->params || !b->names)
        goto out;
    size_t c = 0;
    for (size_t g = 0; g < ng; g++) {
        const char *name = t->rows[*starts[g]].layer;
        b->first[g] = c;
        b->names[g] = name;
        b->params[g] = t->rows[*starts[g]].params;
        for (size_t *p = starts[g]; p < idx + n && strcmp(t->rows[*p].layer, name) == 0; p++)
            b->row[c++] = *p;
    }
    b->first[ng] = c;
    rc = 0;
out:
    free(idx);
    free(starts);
    return rc;
}

/* Layers whose candidate is given keep only that candidate (b->fixed counts
 * the layers so restricted). */
static int apply_fixed(const bp_table *t, const bp_solve_request *req, ip_build *b,
                       bp_error *err)
{
    if (!req->n_fixed)
        return 0;
    unsigned char *mark = bp_calloc(b->n_layers ? b->n_layers : 1, 1, err);
    if (!mark)
        return -1;
    int rc = 0;
    for (size_t f = 0; rc == 0 && f < req->n_fixed; f++) {
        const bp_choice *ch = &req->fixed[f];
        int hit = 0;
        for (size_t l = 0; l < b->n_layers; l++) {
            if (ch->layer && strcmp(ch->layer, b->names[l]) != 0)
                continue;
            int any = 0;
            hit = 1;
            for (size_t c = b->first[l]; c < b->first[l + 1]; c++) {
                const bp_table_row *r = &t->rows[b->row[c]];
                int ok = r->wbits == ch->wbits && r->abits == ch->abits &&
                         (!ch->quantizer || strcmp(r->quantizer, ch->quantizer) == 0);
                b->allowed[c] &= (unsigned char)ok;
                any |= b->allowed[c];
            }
            if (!any) {
                rc = bp_fail(err, "layer '%s': no measured candidate at %d-bit weights and "
                             "%d-bit activations%s%s (within its pins and allowed widths)",
                             b->names[l], ch->wbits, ch->abits,
                             ch->quantizer ? " with quantizer " : "",
                             ch->quantizer ? ch->quantizer : "");
                break;
            }
            b->fixed += !mark[l];
            mark[l] = 1;
        }
        if (rc == 0 && !hit)
            rc = bp_fail(err, "layer '%s' is given a candidate but is not among the planned "
                         "layers", ch->layer);
    }
    free(mark);
    return rc;
}

static int apply_pins(const bp_table *t, const bp_solve_request *req, ip_build *b,
                      bp_error *err)
{
    for (size_t p = 0; p < req->n_pins; p++) {
        const bp_pin *pin = &req->pins[p];
        int hit = 0;
        for (size_t l = 0; l < b->n_layers; l++) {
            if (fnmatch(pin->pattern, b->names[l], 0) != 0)
                continue;
            hit = 1;
            for (size_t c = b->first[l]; c < b->first[l + 1]; c++) {
                const bp_table_row *r = &t->rows[b->row[c]];
                if ((pin->wbits && r->wbits != pin->wbits) ||
                    (pin->abits && r->abits != pin->abits))
                    b->allowed[c] = 0;
            }
        }
        if (!hit)
            return bp_fail(err, "pins[%zu]: pattern '%s' matches no layer", p, pin->pattern);
    }
    for (size_t a = 0; a < req->n_allow; a++) {
        const bp_allow *al = &req->allow[a];
        int hit = 0;
        for (size_t l = 0; l < b->n_layers; l++) {
            if (fnmatch(al->pattern, b->names[l], 0) != 0)
                continue;
            hit = 1;
            for (size_t c = b->first[l]; c < b->first[l + 1]; c++) {
                const bp_table_row *r = &t->rows[b->row[c]];
                int ok_w = !al->n_wbits, ok_a = !al->n_abits;
                for (size_t i = 0; i < al->n_wbits; i++)
                    ok_w |= r->wbits == al->wbits[i];
                for (size_t i = 0; i < al->n_abits; i++)
                    ok_a |= r->abits == al->abits[i];
                if (!ok_w || !ok_a)
                    b->allowed[c] = 0;
            }
        }
        if (!hit)
            return bp_fail(err, "allowed[%zu]: pattern '%s' matches no layer", a, al->pattern);
    }
    for (size_t l = 0; l < b->n_layers; l++) {
        int any = 0;
        for (size_t c = b->first[l]; c < b->first[l + 1]; c++)
            any |= b->allowed[c];
        if (!any)
            return bp_fail(err, "layer '%s': no candidate satisfies its pins and allowed "
                           "widths", b->names[l]);
    }
    return apply_fixed(t, req, b, err);
}

static int build_ip(const bp_table *t, const bp_solve_request *req, ip_build *b,
                    bp_error *err)
{
    memset(b, 0, sizeof *b);
    if (group_rows(t, b, err) < 0)
        return -1;
    size_t nc = b->first[b->n_layers];
    b->error = bp_malloc(nc * sizeof *b->error, err);
    b->bits = bp_malloc(nc * sizeof *b->bits, err);
    b->bops = bp_malloc(nc * sizeof *b->bops, err);
    b->allowed = bp_malloc(nc, err);
    if (!b->error || !b->bits || !b->bops || !b->allowed)
        return -1;
    for (size_t c = 0; c < nc; c++) {
        const bp_table_row *r = &t->rows[b->row[c]];
        b->error[c] = r->error;
        b->bits[c] = (double)r->weight_bits;
        b->bops[c] = (double)r->macs * r->wbits * r->abits;
        b->allowed[c] = 1;
    }
    if (req->latency) {
        if (!(b->latency = bp_malloc(nc * sizeof *b->latency, err)))
            return -1;
        for (size_t c = 0; c < nc; c++) {
            const bp_table_row *r = &t->rows[b->row[c]];
            b->latency[c] = bp_latency_get(req->latency, r->layer, r->wbits, r->abits);
            if (b->latency[c] < 0)
                return bp_fail(err, "%s: no latency for layer '%s' at %d-bit weights and "
                               "%d-bit activations", req->latency->path, r->layer, r->wbits,
                               r->abits);
        }
    }
    return apply_pins(t, req, b, err);
}

/* The program the solver sees: tied layers merged into one (identity
 * without ties).  tied->res point at the merged sums. */
static int build_tied(const bp_table *t, const bp_solve_request *req, const ip_build *b,
                      bp_tied *tied, bp_error *err)
{
    size_t nc = b->first[b->n_layers];
    int *wb = bp_malloc((nc ? nc : 1) * sizeof *wb, err), *ab = bp_malloc((nc ? nc : 1) * sizeof *ab, err);
    int rc = wb && ab ? 0 : -1;
    for (size_t c = 0; rc == 0 && c < nc; c++)
        wb[c] = t->rows[b->row[c]].wbits, ab[c] = t->rows[b->row[c]].abits;
    bp_tie_input in = {b->n_layers, b->first, b->names, wb, ab, b->allowed,
                       {b->error, b->bits, b->bops, b->latency}};
    if (rc == 0)
        rc = bp_ties_merge(&in, req->ties, req->n_ties, tied, err);
    free(wb);
    free(ab);
    return rc;
}

/* Table rows per input layer from a merged choice (one candidate per group). */
static void unmerge(const ip_build *b, const bp_tied *tied, const size_t *choice, size_t *rows)
{
    for (size_t g = 0; g < tied->n_groups; g++)
        for (size_t k = tied->mfirst[g]; k < tied->mfirst[g + 1]; k++) {
            size_t base = tied->pick[tied->pfirst[choice[g]] + (k - tied->mfirst[g])];
            rows[tied->members[k]] = b->row[base];
        }
}

/* ---- solving ------------------------------------------------------------ */

static int infeasible(const bp_solve_request *req, const bp_solution *sol,
                      const char *const *keys, int64_t params, bp_error *err)
{
    if (sol->binding_budget < 0)
        return bp_fail(err, "budget infeasible: each budget can be met alone, but not "
                       "all at once; relax one of them");
    const char *k = keys[sol->binding_budget];
    double m = sol->min_feasible;
    if (strcmp(k, "avg_bits") == 0)
        return bp_fail(err, "budget.avg_bits = %g is infeasible: the smallest feasible "
                       "value is %.6f bits per weight (scales and zero points included)",
                       req->budget.avg_bits, ceil(m / (double)params * 1e6) / 1e6);
    if (strcmp(k, "max_bytes") == 0)
        return bp_fail(err, "budget.max_bytes = %.0f is infeasible: the smallest feasible "
                       "value is %.0f bytes", req->budget.max_bytes, ceil(m / 8.0));
    if (strcmp(k, "max_file_bytes") == 0)
        return bp_fail(err, "budget.max_file_bytes = %.0f is infeasible: the smallest GGUF the "
                       "candidates give is %.0f bytes", req->budget.max_file_bytes,
                       ceil(bp_gguf_file_bytes(req->gguf, m)));
    if (strcmp(k, "bpw") == 0)
        return bp_fail(err, "budget.bpw = %g is infeasible: the smallest feasible value is "
                       "%.6f bits per weight (llama.cpp's count)", req->budget.bpw,
                       ceil(bp_gguf_bpw(req->gguf, m) * 1e6) / 1e6);
    if (strcmp(k, "max_latency") == 0)
        return bp_fail(err, "budget.max_latency = %.17g is infeasible: the smallest feasible "
                       "value is %.17g", req->budget.max_latency, m);
    if (strcmp(k, "max_bops") == 0)
        return bp_fail(err, "budget.max_bops = %.17g is infeasible: the smallest feasible "
                       "value is %.17g bit operations per sample", req->budget.max_bops, m);
    double ex = req->error_exponent > 0 ? req->error_exponent : 1.0;
    return bp_fail(err, "budget.max_error = %g is infeasible: the smallest feasible value "
                   "is %.17g", req->budget.max_error, ex == 1.0 ? m : pow(fmax(m, 0.0), ex));
}

static int solve_table(const bp_table *t, const bp_solve_request *req, bp_solve_result *res,
                       bp_error *err);

int bp_solve_table(const bp_table *t, const bp_solve_request *req, bp_solve_result *res,
                   bp_error *err)
{
    double t0 = bp_now();
    int rc = solve_table(t, req, res, err);
    bp_profile_add(BP_STAGE_SOLVE, bp_now() - t0);
    return rc;
}

static int solve_table(const bp_table *t, const bp_solve_request *req, bp_solve_result *res,
                       bp_error *err)
{
    ip_build b;
    bp_budget budgets[7];
    const char *keys[7];
    size_t nb = 0;
    memset(res, 0, sizeof *res);
    /* every plan's total error must be a finite double (a sum beyond the largest
     * double would reach the plan as null); the sum of all rows bounds them */
    double all = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < t->n; i++) {
        all += fabs(t->rows[i].error);
        if (fabs(t->rows[i].error) > fabs(t->rows[worst].error))
            worst = i;
    }
    if (!isfinite(all))
        return bp_fail(err, "the errors sum beyond the largest double (layer '%s' has %g); "
                       "rescale them (plans depend only on their ratios)", t->rows[worst].layer,
                       t->rows[worst].error);
    if (build_ip(t, req, &b, err) < 0) {
        ip_build_free(&b);
        return -1;
    }
    for (size_t l = 0; l < b.n_layers; l++)
        res->total_params += b.params[l];
    /* weight bits are integers, so size limits are floored */
    if (req->budget.avg_bits > 0) {
        keys[nb] = "avg_bits";
        budgets[nb++] = (bp_budget){BP_RES_BITS,
                                    floor(req->budget.avg_bits * (double)res->total_params + 1e-6)};
    }
    if (req->budget.max_bytes > 0) {
        keys[nb] = "max_bytes";
        budgets[nb++] = (bp_budget){BP_RES_BITS, floor(8.0 * req->budget.max_bytes)};
    }
    /* a GGUF's file: what the plan's layers may take is what the rest leaves */
    if ((req->budget.max_file_bytes > 0 || req->budget.bpw > 0) &&
        (!req->gguf || !req->gguf->valid)) {
        ip_build_free(&b);
        return bp_fail(err, "budget.%s is a GGUF file's budget, but the model is not a GGUF "
                       "(use avg_bits or max_bytes)",
                       req->budget.max_file_bytes > 0 ? "max_file_bytes" : "bpw");
    }
    if (req->budget.max_file_bytes > 0) {
        keys[nb] = "max_file_bytes";
        double left = req->budget.max_file_bytes - req->gguf->meta_bytes - req->gguf->kept_bytes;
        budgets[nb++] = (bp_budget){BP_RES_BITS, floor(8.0 * fmax(left, 0.0))};
    }
    if (req->budget.bpw > 0) {
        keys[nb] = "bpw";
        double left = req->budget.bpw * req->gguf->all_elems - 8.0 * req->gguf->kept_raw;
        budgets[nb++] = (bp_budget){BP_RES_BITS, floor(fmax(left, 0.0) + 1e-6)};
    }
    if (req->budget.max_bops > 0) {
        keys[nb] = "max_bops";
        budgets[nb++] = (bp_budget){BP_RES_BOPS, req->budget.max_bops};
    }
    int wants_latency = req->budget.max_latency > 0 || req->budget.minimize == BP_MIN_LATENCY;
    if (wants_latency && !req->latency) {
        ip_build_free(&b);
        return bp_fail(err, "a latency budget or objective needs a latency table "
                       "(budget.latency_table, or --latency FILE)");
    }
    if (req->budget.max_latency > 0) {
        keys[nb] = "max_latency";
        budgets[nb++] = (bp_budget){BP_RES_LATENCY, req->budget.max_latency};
    }
    if (req->budget.max_error >= 0) {       /* in the objective's units: to additive ones */
        double ex = req->error_exponent > 0 ? req->error_exponent : 1.0;
        keys[nb] = "max_error";
        budgets[nb++] = (bp_budget){BP_RES_ERROR, ex == 1.0 ? req->budget.max_error
                                                            : pow(req->budget.max_error, 1.0 / ex)};
    }
    bp_tied tied;
    if (build_tied(t, req, &b, &tied, err) < 0) {
        ip_build_free(&b);
        return -1;
    }
    bp_problem p = {tied.n_groups, tied.first,
                    {tied.res[0], tied.res[1], tied.res[2], tied.res[3]}, tied.allowed};
    bp_solve_opts o;
    bp_solve_opts_init(&o);
    int only_error = req->budget.max_error >= 0 && nb == 1;
    switch (req->budget.minimize) {
    case BP_MIN_SIZE: o.objective = BP_RES_BITS; break;
    case BP_MIN_BOPS: o.objective = BP_RES_BOPS; break;
    case BP_MIN_LATENCY: o.objective = BP_RES_LATENCY; break;
    case BP_MIN_ERROR: o.objective = BP_RES_ERROR; break;
    default: o.objective = only_error ? BP_RES_BITS : BP_RES_ERROR; break;
    }
    o.budgets = budgets;
    o.n_budgets = nb;
    o.time_limit = req->time_limit;
    o.mip_gap = req->mip_gap;
    res->objective_name = o.objective == BP_RES_ERROR  ? "min_error"
                          : o.objective == BP_RES_BITS ? "min_size"
                          : o.objective == BP_RES_BOPS ? "min_bops"
                                                       : "min_latency";
    int rc = bp_solve_ip(&p, &o, &res->sol, err);
    if (rc == 0 && res->sol.status == BP_SOLVE_INFEASIBLE)
        rc = infeasible(req, &res->sol, keys, res->total_params, err);
    else if (rc == 0 && res->sol.status == BP_SOLVE_TIME_LIMIT)
        rc = bp_fail(err, "the solver hit its time limit (%g s) before finding any plan; "
                     "raise solver.time_limit", req->time_limit);
    else if (rc == 0 && res->sol.status == BP_SOLVE_ERROR)
        rc = bp_fail(err, "the solver failed");
    if (rc == 0) {
        res->n_layers = b.n_layers;
        res->all_fixed = b.fixed >= b.n_layers;
        res->chosen = bp_malloc(b.n_layers * sizeof *res->chosen, err);
        if (!res->chosen)
            rc = -1;
        if (rc == 0)
            unmerge(&b, &tied, res->sol.choice, res->chosen);
        for (size_t l = 0; rc == 0 && l < b.n_layers; l++) {
            const bp_table_row *r = &t->rows[res->chosen[l]];
            res->total_weight_bits += r->weight_bits;
            res->total_error += r->error;
            res->total_bops += (double)r->macs * r->wbits * r->abits;
            if (req->latency)
                res->total_latency += bp_latency_get(req->latency, r->layer, r->wbits, r->abits);
        }
    }
    ip_build_free(&b);
    bp_tied_free(&tied);
    if (rc < 0) {
        int infeasible = res->sol.status == BP_SOLVE_INFEASIBLE;
        bp_solve_result_free(res);
        res->infeasible = infeasible;
    }
    return rc;
}

int bp_table_frontier(const bp_table *t, const bp_solve_request *req, size_t max_points,
                      bp_frontier *f, bp_error *err)
{
    ip_build b;
    memset(f, 0, sizeof *f);
    bp_tied tied;
    memset(&tied, 0, sizeof tied);
    int rc = build_ip(t, req, &b, err);
    if (rc == 0)
        rc = build_tied(t, req, &b, &tied, err);
    if (rc == 0) {
        bp_problem p = {tied.n_groups, tied.first, {tied.res[0], tied.res[1]}, tied.allowed};
        rc = bp_pareto_frontier(&p, BP_RES_BITS, max_points, f, err);
    }
    size_t *rows = rc == 0 ? bp_malloc((f->n ? f->n : 1) * (b.n_layers ? b.n_layers : 1) *
                                       sizeof *rows, err) : NULL;
    if (rc == 0 && !rows)
        rc = -1;
    for (size_t i = 0; rc == 0 && i < f->n; i++)   /* merged candidates -> table rows */
        unmerge(&b, &tied, f->choice + i * tied.n_groups, rows + i * b.n_layers);
    if (rc == 0) {
        free(f->choice);
        f->choice = rows;
        f->n_layers = b.n_layers;
    } else {
        free(rows);
        bp_frontier_free(f);
    }
    ip_build_free(&b);
    bp_tied_free(&tied);
    return rc;
}

int bp_write_program(const bp_table *t, const bp_solve_request *req, FILE *fp, bp_error *err)
{
    ip_build b;
    bp_tied tied;
    memset(&tied, 0, sizeof tied);
    int rc = build_ip(t, req, &b, err);
    if (rc == 0)
        rc = build_tied(t, req, &b, &tied, err);
    if (rc == 0)
        fputs("group,choice,layer,wbits,abits,quantizer,error,weight_bits\n", fp);
    for (size_t g = 0; rc == 0 && g < tied.n_groups; g++)
        for (size_t c = tied.first[g], k = 0; c < tied.first[g + 1]; c++) {
            if (!tied.allowed[c])
                continue;
            for (size_t m = tied.mfirst[g]; m < tied.mfirst[g + 1]; m++) {
                size_t in = tied.pick[tied.pfirst[c] + (m - tied.mfirst[g])];
                const bp_table_row *r = &t->rows[b.row[in]];
                fprintf(fp, "%zu,%zu,", g, k);
                bp_csv_field(fp, r->layer);
                fprintf(fp, ",%d,%d,%s,%.17g,%lld\n", r->wbits, r->abits, r->quantizer,
                        r->error, (long long)r->weight_bits);
            }
            k++;
        }
    ip_build_free(&b);
    bp_tied_free(&tied);
    return rc;
}

void bp_solve_result_free(bp_solve_result *res)
{
    free(res->chosen);
    bp_solution_free(&res->sol);
    memset(res, 0, sizeof *res);
}
