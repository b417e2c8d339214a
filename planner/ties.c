/*
 * ties.c - merge tied layers into single solver layers (see ties.h).
 */
#include "ties.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>

#define TIE_MAX_COMBOS 200000

void bp_tied_free(bp_tied *t)
{
    free(t->first);
    free(t->mfirst);
    free(t->members);
    free(t->pick);
    free(t->pfirst);
    for (int r = 0; r < BP_RES_COUNT; r++)
        free(t->res[r]);
    free(t->allowed);
    memset(t, 0, sizeof *t);
}

/* A growable array of size_t. */
typedef struct zvec {
    size_t *v;
    size_t n, cap;
} zvec;

static int zpush(zvec *z, size_t x)
{
    if (z->n == z->cap) {
        size_t cap = z->cap ? 2 * z->cap : 64;
        size_t *v = realloc(z->v, cap * sizeof *v);
        if (!v)
            return -1;
        z->v = v, z->cap = cap;
    }
    z->v[z->n++] = x;
    return 0;
}

/* A tie group under construction: which tie, which capture text. */
typedef struct tgroup {
    size_t tie;
    char *key;
    size_t first_layer;
} tgroup;

/* gid[l] = group of layer l, or -1; groups in *g (n_g). */
static int assign_groups(const bp_tie_input *in, const bp_tie *ties, size_t n_ties, long *gid,
                         tgroup **g, size_t *n_g, bp_error *err)
{
    for (size_t l = 0; l < in->n_layers; l++)
        gid[l] = -1;
    *g = NULL;
    *n_g = 0;
    for (size_t i = 0; i < n_ties; i++) {
        regex_t re;
        int hit = 0;
        if (regcomp(&re, ties[i].regex, REG_EXTENDED) != 0)
            return bp_fail(err, "ties[%zu]: '%s' is not a valid extended regular expression",
                           i, ties[i].regex);
        for (size_t l = 0; l < in->n_layers; l++) {
            regmatch_t m[2];
            if (regexec(&re, in->names[l], 2, m, 0) != 0)
                continue;
            hit = 1;
            if (gid[l] >= 0) {
                regfree(&re);
                return bp_fail(err, "ties[%zu]: layer '%s' is already tied by ties[%zu]", i,
                               in->names[l], (*g)[gid[l]].tie);
            }
            size_t klen = m[1].rm_so >= 0 ? (size_t)(m[1].rm_eo - m[1].rm_so) : 0;
            const char *ks = m[1].rm_so >= 0 ? in->names[l] + m[1].rm_so : "";
            size_t k = 0;
            while (k < *n_g && !((*g)[k].tie == i && strlen((*g)[k].key) == klen &&
                                 strncmp((*g)[k].key, ks, klen) == 0))
                k++;
            if (k == *n_g) {
                tgroup *ng = realloc(*g, (*n_g + 1) * sizeof *ng);
                char *key = malloc(klen + 1);
                if (!ng || !key) {
                    free(key);
                    if (ng)
                        *g = ng;
                    regfree(&re);
                    return bp_fail(err, "out of memory grouping ties");
                }
                memcpy(key, ks, klen);
                key[klen] = '\0';
                *g = ng;
                (*g)[(*n_g)++] = (tgroup){i, key, l};
            }
            gid[l] = (long)k;
        }
        regfree(&re);
        if (!hit)
            return bp_fail(err, "ties[%zu]: '%s' matches no layer", i, ties[i].regex);
    }
    return 0;
}

typedef struct merge_ctx {
    const bp_tie_input *in;
    const bp_tie *tie;
    const size_t *mem;        /* members of the group */
    size_t n_mem;
    size_t *cur;              /* current pick per member */
    zvec *pick;
    size_t combos;
    bp_tied *out;
    size_t cap;
} merge_ctx;

static int emit(merge_ctx *m, bp_error *err)
{
    bp_tied *o = m->out;
    size_t c = o->first[o->n_groups + 1];        /* running candidate count */
    if (c == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 256;
        for (int r = 0; r < BP_RES_COUNT; r++) {
            if (!m->in->res[r])
                continue;
            double *v = realloc(o->res[r], cap * sizeof *v);
            if (!v)
                return bp_fail(err, "out of memory merging ties");
            o->res[r] = v;
        }
        unsigned char *a = realloc(o->allowed, cap);
        size_t *pf = realloc(o->pfirst, (cap + 1) * sizeof *pf);
        if (a)
            o->allowed = a;
        if (pf)
            o->pfirst = pf;
        if (!a || !pf)
            return bp_fail(err, "out of memory merging ties");
        m->cap = cap;
    }
    o->pfirst[c] = m->pick->n;
    for (int r = 0; r < BP_RES_COUNT; r++)
        if (o->res[r])
            o->res[r][c] = 0.0;
    int ok = 1;
    for (size_t k = 0; k < m->n_mem; k++) {
        size_t ic = m->cur[k];
        for (int r = 0; r < BP_RES_COUNT; r++)
            if (o->res[r])
                o->res[r][c] += m->in->res[r][ic];
        ok &= !m->in->allowed || m->in->allowed[ic];
        if (zpush(m->pick, ic) < 0)
            return bp_fail(err, "out of memory merging ties");
    }
    o->allowed[c] = (unsigned char)ok;
    o->first[o->n_groups + 1] = c + 1;
    return 0;
}

/* Depth-first over members; member k > 0 must agree on the tied widths. */
static int combos(merge_ctx *m, size_t k, bp_error *err)
{
    if (k == m->n_mem) {
        if (++m->combos > TIE_MAX_COMBOS)
            return bp_fail(err, "a tie over '%s' has more than %d agreeing combinations; tie "
                           "fewer layers or measure fewer candidates", m->in->names[m->mem[0]],
                           TIE_MAX_COMBOS);
        return emit(m, err);
    }
    const bp_tie_input *in = m->in;
    size_t l = m->mem[k];
    for (size_t c = in->first[l]; c < in->first[l + 1]; c++) {
        if (in->allowed && !in->allowed[c])
            continue;
        if (k > 0 && ((m->tie->wbits && in->wbits[c] != in->wbits[m->cur[0]]) ||
                      (m->tie->abits && in->abits[c] != in->abits[m->cur[0]])))
            continue;
        m->cur[k] = c;
        if (combos(m, k + 1, err) < 0)
            return -1;
    }
    return 0;
}

static int merge_group(merge_ctx *m, bp_error *err)
{
    bp_tied *o = m->out;
    size_t before = o->first[o->n_groups + 1];
    m->combos = 0;
    if (combos(m, 0, err) < 0)
        return -1;
    if (o->first[o->n_groups + 1] == before)
        return bp_fail(err, "the tie over %s%s%s has no combination of allowed candidates "
                       "with equal %s", m->in->names[m->mem[0]], m->n_mem > 1 ? " and " : "",
                       m->n_mem > 1 ? m->in->names[m->mem[1]] : "",
                       m->tie->wbits && m->tie->abits ? "weight and activation bits"
                       : m->tie->wbits ? "weight bits" : "activation bits");
    return 0;
}

int bp_ties_merge(const bp_tie_input *in, const bp_tie *ties, size_t n_ties, bp_tied *out,
                  bp_error *err)
{
    static const bp_tie solo = {NULL, 0, 0};
    size_t L = in->n_layers;
    long *gid = bp_malloc((L ? L : 1) * sizeof *gid, err);
    size_t *mem = bp_malloc((L ? L : 1) * sizeof *mem, err);
    size_t *cur = bp_malloc((L ? L : 1) * sizeof *cur, err);
    tgroup *g = NULL;
    size_t n_g = 0;
    zvec pick = {0}, members = {0};
    memset(out, 0, sizeof *out);
    out->first = bp_calloc(L + 2, sizeof *out->first, err);
    out->mfirst = bp_calloc(L + 2, sizeof *out->mfirst, err);
    int rc = gid && mem && cur && out->first && out->mfirst ? 0 : -1;
    if (rc == 0)
        rc = assign_groups(in, ties, n_ties, gid, &g, &n_g, err);
    merge_ctx m = {in, NULL, mem, 0, cur, &pick, 0, out, 0};
    for (size_t l = 0; rc == 0 && l < L; l++) {
        if (gid[l] >= 0 && g[gid[l]].first_layer != l)
            continue;                           /* merged into an earlier group */
        m.n_mem = 0;
        for (size_t k = l; k < L; k++)
            if (k == l || (gid[l] >= 0 && gid[k] == gid[l]))
                mem[m.n_mem++] = k;
        m.tie = gid[l] >= 0 ? &ties[g[gid[l]].tie] : &solo;
        out->mfirst[out->n_groups] = members.n;
        for (size_t k = 0; k < m.n_mem && rc == 0; k++)
            rc = zpush(&members, mem[k]) < 0 ? bp_fail(err, "out of memory merging ties") : 0;
        out->first[out->n_groups + 1] = out->first[out->n_groups];
        if (rc == 0)
            rc = merge_group(&m, err);
        out->n_groups++;
    }
    if (rc == 0) {
        out->mfirst[out->n_groups] = members.n;
        out->members = members.v, members.v = NULL;
        out->pick = pick.v, pick.v = NULL;
        if (out->pfirst)
            out->pfirst[out->first[out->n_groups]] = pick.n;
    }
    for (size_t i = 0; i < n_g; i++)
        free(g[i].key);
    free(g);
    free(gid);
    free(mem);
    free(cur);
    free(members.v);
    free(pick.v);
    if (rc < 0)
        bp_tied_free(out);
    return rc;
}
