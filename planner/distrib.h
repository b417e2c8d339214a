/*
 * distrib.h - the processes that measure one sensitivity table together
 * (mpirun -np K bitplan ...; an MPI build, -DBITPLAN_MPI=ON).  Without MPI,
 * or under one process, there is one rank and nothing is ever sent.
 *
 * Rank 0 runs the command; the others are workers (bp_dist_worker): each
 * waits for a plan (the layers it is dealt), measures them and sends each
 * layer's table rows back, until rank 0 stops it.  Messages are small
 * (layer indices, CSV rows, one error line); the inputs are read by every
 * rank from the same paths (shared storage or copies).
 */
#ifndef BP_DISTRIB_H
#define BP_DISTRIB_H

#include <stddef.h>

#include "../common/bp_error.h"
#include "config.h"
#include "journal.h"
#include "measure.h"
#include "model.h"

enum {
    BP_MSG_PLAN = 1,          /* 0 -> worker: int64 layer indices to measure, in order */
    BP_MSG_STOP,              /* 0 -> worker: no more plans */
    BP_MSG_LAYER,             /* worker -> 0: int64 layer index, then its CSV rows */
    BP_MSG_ERROR              /* worker -> 0: the message of the worker's failure */
};

int bp_dist_init(int *argc, char ***argv);
void bp_dist_finalize(void);
int bp_dist_rank(void);
int bp_dist_size(void);
/* End every rank with exit status code (MPI_Abort); returns without MPI. */
void bp_dist_abort(int code);

/* Send n bytes to rank `to`.  async: the buffer is copied and sent in the
 * background (bp_dist_flush waits for all); sync: returns once `to` has
 * started receiving it (an error report that must arrive before an abort). */
int bp_dist_send(int to, int kind, const void *buf, size_t n, int async);
void bp_dist_flush(void);
/* Receive the next message from any rank (from 0 only: from0).  wait 0:
 * return 0 when none is pending.  1: *buf (malloc'ed, NUL-terminated) holds
 * *n bytes; -1: out of memory. */
int bp_dist_recv(int from0, int wait, int *from, int *kind, char **buf, size_t *n);

/* Rank 0 of several: deal the layers not done (runs of layers with the same
 * inputs kept together, longest first to the least loaded rank by the cost
 * model), measure its own, gather the others' as they come (each journaled
 * on arrival). */
int bp_measure_distributed(const bp_config *cfg, const bp_model *m, bp_step_fn progress,
                           void *ctx, bp_table *t, const unsigned char *done, size_t n_done,
                           bp_journal *jr, bp_error *err);

/* A worker rank: measure the layers rank 0 deals, send their rows, until it
 * stops the worker.  cfg NULL: the config did not load (cfg_err says why;
 * reported when work arrives).  Returns 0; failures go to rank 0, which
 * ends the job. */
int bp_sens_worker(const bp_config *cfg, const bp_error *cfg_err);

#endif
