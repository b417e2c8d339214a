/*
 * sweep.c - what-if sweeps (sweep.h): one plan per budget over a session's
 * table, the uniform baselines, the exact frontier, and their CSV and SVG.
 */
#include "sweep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_file.h"
#include "assemble.h"
#include "formats/plan.h"
#include "session.h"

void bp_sweep_free(bp_sweep_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->p[i].layers);
    free(s->p);
    memset(s, 0, sizeof *s);
}

static bp_sweep_point *new_point(bp_sweep_set *s, bp_error *err)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 32;
        bp_sweep_point *p = realloc(s->p, cap * sizeof *p);
        if (!p) {
            bp_fail(err, "out of memory in the sweep");
            return NULL;
        }
        s->p = p, s->cap = cap;
    }
    bp_sweep_point *p = &s->p[s->n++];
    memset(p, 0, sizeof *p);
    return p;
}

/* ---- budget lists -------------------------------------------------------- */

static int parse_one(const char *opt, const char *s, double *out, bp_error *err)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v < 0)
        return bp_fail(err, "%s: expected non-negative numbers, got '%s'", opt, s);
    *out = v;
    return end - s > 0 ? (int)(end - s) : 0;
}

int bp_sweep_parse_values(const char *opt, const char *spec, double **values, size_t *n,
                          bp_error *err)
{
    double a = 0.0, b = 0.0, step = 0.0;
    int k;
    *values = NULL;
    *n = 0;
    if (strchr(spec, ':')) {
        const char *p = spec;
        if ((k = parse_one(opt, p, &a, err)) < 0 || p[k] != ':' ||
            (p += k + 1, k = parse_one(opt, p, &b, err)) < 0 || p[k] != ':' ||
            (p += k + 1, k = parse_one(opt, p, &step, err)) < 0 || p[k] != '\0')
            return bp_fail(err, "%s: expected START:STOP:STEP or a comma list, got '%s'", opt,
                           spec);
        if (!(step > 0) || b < a)
            return bp_fail(err, "%s: '%s' needs STEP > 0 and STOP >= START", opt, spec);
        double count = floor((b - a) / step + 1e-9) + 1.0;   /* as a double: never wraps */
        if (!(count <= 10000.0))
            return bp_fail(err, "%s: '%s' asks for %.3g budgets (at most 10000)", opt, spec,
                           count);
        if (b > a && (a + step == a || b - step == b))
            return bp_fail(err, "%s: '%s': STEP %g is lost in rounding at START or STOP (the "
                           "budgets would not differ)", opt, spec, step);
        size_t m = (size_t)count;
        *values = bp_malloc(m * sizeof **values, err);
        if (!*values)
            return -1;
        for (size_t i = 0; i < m; i++)
            (*values)[i] = a + (double)i * step;
        *n = m;
        return 0;
    }
    size_t m = 1;
    for (const char *p = spec; *p; p++)
        m += *p == ',';
    *values = bp_malloc(m * sizeof **values, err);
    if (!*values)
        return -1;
    const char *p = spec;
    for (size_t i = 0; i < m; i++) {
        if ((k = parse_one(opt, p, &(*values)[i], err)) < 0 ||
            (p[k] != ',' && p[k] != '\0') || (*values)[i] <= 0) {
            free(*values);
            *values = NULL;
            return bp_fail(err, "%s: expected START:STOP:STEP or a comma list of positive "
                           "numbers, got '%s'", opt, spec);
        }
        p += k + (p[k] == ',');
    }
    *n = m;
    return 0;
}

/* ---- points -------------------------------------------------------------- */

/* Totals and the layer list of a choice of rows (one per layer). */
static int fill_point(bp_sweep_point *pt, const bp_table *t, const size_t *rows, size_t n,
                      bp_error *err)
{
    int64_t params = 0, bits = 0;
    double bops = 0.0, e = 0.0;
    size_t len = 1;
    for (size_t l = 0; l < n; l++)
        len += strlen(t->rows[rows[l]].layer) + 16;
    pt->layers = bp_malloc(len, err);
    if (!pt->layers)
        return -1;
    pt->layers[0] = '\0';
    size_t at = 0;
    for (size_t l = 0; l < n; l++) {
        const bp_table_row *r = &t->rows[rows[l]];
        params += r->params;
        bits += r->weight_bits;
        bops += (double)r->macs * r->wbits * r->abits;
        e += r->error;
        at += (size_t)snprintf(pt->layers + at, len - at, "%s%s=%d/%d", l ? " " : "", r->layer,
                               r->wbits, r->abits);
    }
    pt->weight_bytes = (double)bits / 8.0;
    pt->avg_bits = params ? (double)bits / (double)params : 0.0;
    pt->bops = bops;
    pt->error = e;
    return 0;
}

int bp_sweep_add_plan(bp_sweep_set *s, const bp_table *t, double budget, const bp_solve_result *r,
                      bp_error *err)
{
    bp_sweep_point *pt = new_point(s, err);
    if (!pt)
        return -1;
    snprintf(pt->kind, sizeof pt->kind, "plan");
    pt->budget = budget;
    if (!r->chosen) {
        snprintf(pt->status, sizeof pt->status, "infeasible");
        pt->weight_bytes = pt->avg_bits = pt->bops = pt->error = NAN;
        return 0;
    }
    snprintf(pt->status, sizeof pt->status, "%s", bp_solve_status_name(r->sol.status));
    return fill_point(pt, t, r->chosen, r->n_layers, err);
}

/* The table's rows grouped by layer, the layers in first-appearance order:
 * layer l's rows are row[start[l] .. start[l + 1]) (ascending row index).
 * Sorting keeps this O(n log n) for 100,000-layer tables. */
typedef struct layer_rows {
    size_t *row, *start, n;
} layer_rows;

static const bp_table *sort_table;
static int by_layer_then_row(const void *x, const void *y)
{
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    int c = strcmp(sort_table->rows[a].layer, sort_table->rows[b].layer);
    return c ? c : (a > b) - (a < b);
}
static int by_first_row(const void *x, const void *y)
{
    const size_t *a = x, *b = y;     /* (first row, group start, group end) triples */
    return (a[0] > b[0]) - (a[0] < b[0]);
}

static int group_layers(const bp_table *t, layer_rows *g, bp_error *err)
{
    size_t n = t->n ? t->n : 1;
    size_t *idx = bp_malloc(n * sizeof *idx, err), *tri = bp_malloc(3 * n * sizeof *tri, err);
    g->row = bp_malloc(n * sizeof *g->row, err);
    g->start = bp_malloc((n + 1) * sizeof *g->start, err);
    g->n = 0;
    if (!idx || !tri || !g->row || !g->start) {
        free(idx), free(tri), free(g->row), free(g->start);
        return -1;
    }
    for (size_t i = 0; i < t->n; i++)
        idx[i] = i;
    sort_table = t;
    qsort(idx, t->n, sizeof *idx, by_layer_then_row);
    for (size_t i = 0; i < t->n; i++)
        if (i == 0 || strcmp(t->rows[idx[i - 1]].layer, t->rows[idx[i]].layer) != 0) {
            tri[3 * g->n] = idx[i], tri[3 * g->n + 1] = i;
            if (g->n)
                tri[3 * g->n - 1] = i;
            g->n++;
        }
    if (g->n)
        tri[3 * g->n - 1] = t->n;
    qsort(tri, g->n, 3 * sizeof *tri, by_first_row);
    size_t k = 0;
    for (size_t l = 0; l < g->n; l++) {
        g->start[l] = k;
        for (size_t i = tri[3 * l + 1]; i < tri[3 * l + 2]; i++)
            g->row[k++] = idx[i];
    }
    g->start[g->n] = k;
    free(idx), free(tri);
    return 0;
}

/* The best row of layer l at wbits w and the widest activation width
 * present; SIZE_MAX when the layer has no such row. */
static size_t best_row(const bp_table *t, const layer_rows *g, size_t l, int w)
{
    int amax = 0;
    size_t best = (size_t)-1;
    for (size_t k = g->start[l]; k < g->start[l + 1]; k++) {
        const bp_table_row *r = &t->rows[g->row[k]];
        if (r->wbits == w && r->abits > amax)
            amax = r->abits;
    }
    for (size_t k = g->start[l]; k < g->start[l + 1]; k++) {
        size_t i = g->row[k];
        const bp_table_row *r = &t->rows[i];
        if (r->wbits == w && r->abits == amax &&
            (best == (size_t)-1 || r->error < t->rows[best].error))
            best = i;
    }
    return best;
}

static int add_baseline(bp_sweep_set *s, const bp_table *t, const layer_rows *g, int w, int edge,
                        bp_error *err)
{
    size_t nl = g->n;
    size_t *rows = bp_malloc((nl ? nl : 1) * sizeof *rows, err);
    if (!rows)
        return -1;
    for (size_t l = 0; l < nl; l++) {
        int wl = edge >= 0 && (l == 0 || l + 1 == nl) ? edge : w;
        if ((rows[l] = best_row(t, g, l, wl)) == (size_t)-1) {
            free(rows);
            return 0;                /* some layer lacks this width: no baseline */
        }
    }
    bp_sweep_point *pt = new_point(s, err);
    int rc = pt ? 0 : -1;
    if (pt) {
        snprintf(pt->kind, sizeof pt->kind, "%s", edge >= 0 ? "first_last_8" : "uniform");
        snprintf(pt->status, sizeof pt->status, "baseline");
        pt->budget = w;
        rc = fill_point(pt, t, rows, nl, err);
    }
    free(rows);
    return rc;
}

size_t bp_table_layer_count(const bp_table *t)
{
    layer_rows g;
    bp_error ignored;
    if (group_layers(t, &g, &ignored) < 0)
        return t->n;
    free(g.row), free(g.start);
    return g.n;
}

int bp_sweep_add_baselines(bp_sweep_set *s, const bp_table *t, bp_error *err)
{
    layer_rows g;
    if (group_layers(t, &g, err) < 0)
        return -1;
    size_t nl = g.n;
    int widths[32], nw = 0, edge = 0;
    for (size_t i = 0; i < t->n; i++) {
        int w = t->rows[i].wbits, seen = 0;
        for (int k = 0; k < nw; k++)
            seen |= widths[k] == w;
        if (!seen && nw < 32)
            widths[nw++] = w;
        if (w <= 8 && w > edge)
            edge = w;                /* 8 bits, or the widest candidate below it */
    }
    for (int a = 1; a < nw; a++)     /* ascending */
        for (int b = a; b > 0 && widths[b - 1] > widths[b]; b--) {
            int tmp = widths[b];
            widths[b] = widths[b - 1], widths[b - 1] = tmp;
        }
    int rc = 0;
    for (int k = 0; rc == 0 && k < nw; k++)
        rc = add_baseline(s, t, &g, widths[k], -1, err);
    for (int k = 0; rc == 0 && k < nw && nl > 2; k++)
        if (widths[k] < edge)
            rc = add_baseline(s, t, &g, widths[k], edge, err);
    free(g.row), free(g.start);
    return rc;
}

/* ---- output -------------------------------------------------------------- */

int bp_sweep_write_csv(const bp_sweep_set *s, const char *path, bp_error *err)
{
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    fprintf(a.fp, "kind,budget,status,weight_bytes,avg_bits,bops,predicted_error,layers\n");
    for (size_t i = 0; i < s->n; i++) {
        const bp_sweep_point *p = &s->p[i];
        fprintf(a.fp, "%s,%.17g,%s,", p->kind, p->budget, p->status);
        if (p->layers)
            fprintf(a.fp, "%.17g,%.17g,%.17g,%.17g,\"%s\"\n", p->weight_bytes, p->avg_bits,
                    p->bops, p->error, p->layers);
        else
            fprintf(a.fp, ",,,,\n");
    }
    return bp_atomic_commit(&a, err);
}

int bp_sweep_write_pareto(const bp_table *t, const bp_frontier *f, const char *path,
                          bp_error *err)
{
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    fprintf(a.fp, "weight_bytes,avg_bits,bops,predicted_error,on_hull,layers\n");
    for (size_t i = 0; i < f->n; i++) {
        bp_sweep_point pt;
        memset(&pt, 0, sizeof pt);
        if (fill_point(&pt, t, f->choice + i * f->n_layers, f->n_layers, err) < 0) {
            bp_atomic_abort(&a);
            return -1;
        }
        fprintf(a.fp, "%.17g,%.17g,%.17g,%.17g,%d,\"%s\"\n", pt.weight_bytes, pt.avg_bits,
                pt.bops, pt.error, f->p[i].on_hull, pt.layers);
        free(pt.layers);
    }
    return bp_atomic_commit(&a, err);
}

typedef struct frame {
    double x0, x1, y0, y1;    /* data ranges (y in log10) */
    double left, top, w, h;   /* plot area in pixels */
} frame;

static double px(const frame *f, double x)
{
    return f->left + (x - f->x0) / (f->x1 - f->x0) * f->w;
}

static double py(const frame *f, double e)
{
    double y = log10(e);
    return f->top + f->h - (y - f->y0) / (f->y1 - f->y0) * f->h;
}

static void svg_axes(FILE *fp, const frame *f)
{
    fprintf(fp, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' "
            "stroke='#333'/>\n", f->left, f->top, f->w, f->h);
    for (int i = 0; i <= 5; i++) {
        double x = f->x0 + (f->x1 - f->x0) * i / 5.0, X = px(f, x);
        fprintf(fp, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", X, f->top,
                X, f->top + f->h);
        fprintf(fp, "<text x='%.1f' y='%.1f' text-anchor='middle'>%.4g</text>\n", X,
                f->top + f->h + 18, x / 1024.0);
    }
    for (int d = (int)ceil(f->y0); d <= (int)floor(f->y1); d++) {
        double Y = py(f, pow(10.0, d));
        fprintf(fp, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", f->left,
                Y, f->left + f->w, Y);
        fprintf(fp, "<text x='%.1f' y='%.1f' text-anchor='end'>1e%d</text>\n", f->left - 6,
                Y + 4, d);
    }
    fprintf(fp, "<text x='%.1f' y='%.1f' text-anchor='middle'>weight size (KiB, scales "
            "included)</text>\n", f->left + f->w / 2, f->top + f->h + 40);
    fprintf(fp, "<text x='16' y='%.1f' transform='rotate(-90 16 %.1f)' "
            "text-anchor='middle'>predicted error</text>\n", f->top + f->h / 2,
            f->top + f->h / 2);
}

static int usable(const bp_sweep_point *p)
{
    return p->layers && p->error > 0 && isfinite(p->error);
}

static void svg_points(FILE *fp, const bp_sweep_set *s, const frame *f)
{
    fprintf(fp, "<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='");
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->p[i].kind, "plan") && usable(&s->p[i]))
            fprintf(fp, "%.1f,%.1f ", px(f, s->p[i].weight_bytes), py(f, s->p[i].error));
    fprintf(fp, "'/>\n");
    for (size_t i = 0; i < s->n; i++) {
        const bp_sweep_point *p = &s->p[i];
        if (!usable(p))
            continue;
        double X = px(f, p->weight_bytes), Y = py(f, p->error);
        if (!strcmp(p->kind, "plan"))
            fprintf(fp, "<circle cx='%.1f' cy='%.1f' r='3' fill='#1f77b4'><title>%s %g: "
                    "%.4g bits, error %.4g</title></circle>\n", X, Y, s->budget_name, p->budget,
                    p->avg_bits, p->error);
        else if (!strcmp(p->kind, "uniform"))
            fprintf(fp, "<rect x='%.1f' y='%.1f' width='8' height='8' fill='#d62728'/>"
                    "<text x='%.1f' y='%.1f' fill='#d62728'>w%g</text>\n", X - 4, Y - 4, X + 6,
                    Y - 6, p->budget);
        else
            fprintf(fp, "<path d='M%.1f %.1f l5 9 l-10 0 z' fill='#2ca02c'/>"
                    "<text x='%.1f' y='%.1f' fill='#2ca02c'>8|w%g|8</text>\n", X, Y - 6, X + 6,
                    Y + 12, p->budget);
    }
}

int bp_sweep_write_svg(const bp_sweep_set *s, const char *path, bp_error *err)
{
    frame f = {INFINITY, -INFINITY, INFINITY, -INFINITY, 80, 40, 640, 380};
    for (size_t i = 0; i < s->n; i++)
        if (usable(&s->p[i])) {
            f.x0 = fmin(f.x0, s->p[i].weight_bytes), f.x1 = fmax(f.x1, s->p[i].weight_bytes);
            f.y0 = fmin(f.y0, log10(s->p[i].error)), f.y1 = fmax(f.y1, log10(s->p[i].error));
        }
    if (!(f.x1 >= f.x0))                 /* nothing to draw: an empty frame */
        f.x0 = 0, f.x1 = 1, f.y0 = -1, f.y1 = 0;
    double dx = f.x1 - f.x0 > 0 ? f.x1 - f.x0 : fmax(1.0, f.x0);
    f.x0 -= 0.05 * dx, f.x1 += 0.05 * dx;
    f.y0 = floor(f.y0 - 0.05), f.y1 = ceil(f.y1 + 0.05);
    if (f.y1 <= f.y0)
        f.y1 = f.y0 + 1;
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    fprintf(a.fp, "<svg xmlns='http://www.w3.org/2000/svg' width='760' height='480' "
            "font-family='sans-serif' font-size='12'>\n<rect width='100%%' height='100%%' "
            "fill='white'/>\n<text x='380' y='24' text-anchor='middle' font-size='15'>"
            "bitplan sweep over %s: predicted error against size</text>\n", s->budget_name);
    svg_axes(a.fp, &f);
    svg_points(a.fp, s, &f);
    fprintf(a.fp, "<text x='%.1f' y='62' fill='#1f77b4'>- plans</text>"
            "<text x='%.1f' y='78' fill='#d62728'>&#9632; all layers at w bits</text>"
            "<text x='%.1f' y='94' fill='#2ca02c'>&#9650; first/last at 8, rest at w</text>\n",
            f.left + f.w - 200, f.left + f.w - 200, f.left + f.w - 200);
    fprintf(a.fp, "</svg>\n");
    return bp_atomic_commit(&a, err);
}

/* ---- the sweep of a session (include/bitplan.h) ----------------------------------- */

/* pareto.csv: at most this many (point, layer) cells (about 60 MB) */
#define PARETO_CELLS 20000000u

/* One point's plan into DIR/plans/plan_NNN.yaml. */
static int sweep_plan(bp_session *s, const bp_solve_request *req, const bp_solve_result *r,
                      const char *dir, size_t i, bp_error *err)
{
    char name[64];
    snprintf(name, sizeof name, "plans/plan_%03zu.yaml", i);
    char *path = bp_path_join(dir, name, err), *pdir = path ? bp_path_dir(path, err) : NULL;
    int rc = path && pdir && bp_mkdirs(pdir, err) == 0 ? 0 : -1;
    bp_plan p;
    const bp_config *cfg = s->has_config ? &s->cfg : NULL;
    if (rc == 0 && (rc = bp_make_plan(&s->sens.table, r, cfg, cfg ? &s->sens : NULL, req, &p,
                                      err)) == 0) {
        rc = bp_plan_write_yaml(&p, path, err);
        free(p.layers);
    }
    free(path);
    free(pdir);
    return rc;
}

static int sweep_solve_all(bp_session *s, const char *budget_name, const double *v, size_t n,
                           const char *dir, int plans, bp_error *err)
{
    s->stage = "sweep";
    for (size_t i = 0; i < n; i++) {
        bp_solve_request req;
        bp_solve_result r;
        bp_budget_spec b = {0, 0, -1.0, 0, 0, BP_MIN_AUTO, 0, 0};
        if (!strcmp(budget_name, "avg_bits"))
            b.avg_bits = v[i];
        else if (!strcmp(budget_name, "max_bytes"))
            b.max_bytes = v[i];
        else if (!strcmp(budget_name, "max_bops"))
            b.max_bops = v[i];
        else if (!strcmp(budget_name, "max_latency"))
            b.max_latency = v[i];
        else
            b.max_error = v[i];
        bp_session_request(s, &b, &req);
        if (s->o.progress)
            s->o.progress(s->o.progress_ctx, s->stage, i, n, "budget");
        if (bp_solve_table(&s->sens.table, &req, &r, err) < 0 && !r.infeasible)
            return -1;
        int rc = bp_sweep_add_plan(&s->sw, &s->sens.table, v[i], &r, err);
        if (rc == 0 && plans && r.chosen)
            rc = sweep_plan(s, &req, &r, dir, i, err);
        bp_solve_result_free(&r);
        if (rc < 0)
            return -1;
    }
    if (s->o.progress)
        s->o.progress(s->o.progress_ctx, s->stage, n, n, NULL);
    return 0;
}

int bp_sweep(bp_session *s, const char *budget_name, const double *values, size_t n,
             const char *dir, int plans, const bp_sweep_summary **summary, bp_error *err)
{
    static const char *const kinds[] = {"avg_bits", "max_bytes", "max_bops", "max_latency",
                                        "max_error", NULL};
    int known = 0;
    for (int k = 0; kinds[k]; k++)
        known |= !strcmp(budget_name, kinds[k]);
    if (!known)
        return bp_fail(err, "sweep budget '%s': expected avg_bits, max_bytes, max_bops, "
                       "max_latency or max_error", budget_name);
    if (!s->measured && bp_measure(s, err) < 0)
        return -1;
    bp_sweep_free(&s->sw);
    free(s->sw_csv);
    free(s->sw_svg);
    free(s->sw_pareto);
    s->sw_csv = s->sw_svg = s->sw_pareto = NULL;
    s->sw.budget_name = budget_name;
    const bp_table *t = &s->sens.table;
    if (!dir)
        dir = s->has_config ? s->cfg.out_dir : ".";
    int rc = bp_mkdirs(dir, err);
    if (rc == 0 && s->latency_path == NULL && s->has_config && s->cfg.latency_table &&
        !s->has_latency)
        rc = bp_latency_load(&s->latency, s->cfg.latency_table, err) < 0 ? -1
             : (s->has_latency = 1, 0);
    else if (rc == 0 && s->latency_path && !s->has_latency)
        rc = bp_latency_load(&s->latency, s->latency_path, err) < 0 ? -1
             : (s->has_latency = 1, 0);
    if (rc == 0 && (!(s->sw_csv = bp_path_join(dir, "frontier.csv", err)) ||
                    !(s->sw_svg = bp_path_join(dir, "frontier.svg", err)) ||
                    !(s->sw_pareto = bp_path_join(dir, "pareto.csv", err))))
        rc = -1;
    if (rc == 0)
        rc = sweep_solve_all(s, budget_name, values, n, dir, plans, err);
    if (rc == 0)
        rc = bp_sweep_add_baselines(&s->sw, t, err);
    const char *pareto = s->sw_pareto;
    if (rc == 0) {                   /* the exact frontier, when it stays small */
        bp_solve_request req;
        bp_frontier f;
        bp_error ferr;
        bp_session_request(s, NULL, &req);
        /* points x layers bounded: memory and pareto.csv stay near 20 M cells */
        size_t nl = bp_table_layer_count(t), cap = PARETO_CELLS / (nl ? nl : 1);
        cap = cap > 200000 ? 200000 : cap < 16 ? 16 : cap;
        if (bp_table_frontier(t, &req, cap, &f, &ferr) < 0) {
            snprintf(s->pareto_note, sizeof s->pareto_note, "skipped (more than %zu points "
                     "for %zu layers; frontier.csv has the plans)", cap, nl);
            pareto = s->pareto_note;
        } else {
            rc = bp_sweep_write_pareto(t, &f, s->sw_pareto, err);
            bp_frontier_free(&f);
        }
    }
    if (rc == 0)
        rc = bp_sweep_write_csv(&s->sw, s->sw_csv, err);
    if (rc == 0)
        rc = bp_sweep_write_svg(&s->sw, s->sw_svg, err);
    s->summary = (bp_sweep_summary){s->sw.p, s->sw.n, budget_name, s->sw_csv, s->sw_svg, pareto};
    if (summary)
        *summary = rc == 0 ? &s->summary : NULL;
    return rc;
}
