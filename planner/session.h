/*
 * session.h - what a library session holds (include/bitplan.h's
 * bp_session), and the pieces of session.c the other entry points share
 * (sweep.c, grids.c).  Internal.
 */
#ifndef BP_SESSION_H
#define BP_SESSION_H

#include "../include/bitplan.h"
#include "config.h"
#include "formats/export.h"
#include "formats/latency.h"
#include "measure.h"
#include "problem.h"
#include "sweep.h"

struct bp_session {
    bp_options o;             /* as given; its strings copied below */
    char *metric, *metric_scales, *errors, *choices, *latency_path, *table_path;
    int has_config;
    bp_config cfg;
    int measured;
    bp_sens_result sens;      /* its table is a bare table's too */
    const char *stage;        /* what progress is about now */
    const char *scales_used;  /* metric_scales applied (as written), or NULL */
    char predicts[16];        /* ... the objective it calibrates to */
    double exponent;          /* ... which is the errors' sum to this power */
    char noise[512];          /* what was done about a noisy Fisher, or "" */
    bp_export_plan chosen;    /* --choices */
    int has_chosen;
    bp_choice *fixed;
    size_t n_fixed;
    bp_latency latency;
    int has_latency;
    bp_gguf_footprint gguf;   /* a GGUF model's file outside the planned layers */
    int lock_fd;              /* output.dir's run lock, -1 before it is taken */
    char *set_dir;            /* bp_set_output_dir: where the output set goes, or NULL
                               * (output.dir) */
    int set_lock_fd;          /* set_dir's run lock when it is another directory */
    char *written, *weights_written;     /* the last bp_write's files */
    char cache_path[4200];
    bp_sweep_set sw;          /* the last bp_sweep */
    char *sw_csv, *sw_svg, *sw_pareto;
    char pareto_note[200];
    bp_sweep_summary summary;
};

/* Take output.dir's run lock (once per session). */
int bp_session_lock(bp_session *s, bp_error *err);
/* The solve request of the session for budget (NULL: the config's). */
void bp_session_request(const bp_session *s, const bp_budget_spec *budget,
                        bp_solve_request *req);
/* Solve a request and assemble its plan with the session's provenance. */
int bp_session_solve(bp_session *s, const bp_solve_request *req, bp_plan **plan,
                     bp_error *err);
/* n bytes to stdout (path NULL or "-") or atomically to path. */
int bp_write_output(const char *path, const char *buf, size_t n, bp_error *err);

#endif
