/*
 * distrib.c - point-to-point messages between the ranks (Open MPI), or a
 * one-rank stand-in without MPI.  Only point-to-point calls are used, so a
 * rank that fails early never leaves the others in a collective.
 */
#include "distrib.h"

#include <stdlib.h>
#include <string.h>

#ifdef BITPLAN_MPI
#include <mpi.h>

static int dist_on;

typedef struct pending {
    MPI_Request req;
    void *buf;
} pending;
static pending *sends;
static size_t n_sends, cap_sends;

int bp_dist_init(int *argc, char ***argv)
{
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS)
        return -1;
    dist_on = 1;
    return 0;
}

void bp_dist_finalize(void)
{
    if (!dist_on)
        return;
    bp_dist_flush();
    MPI_Finalize();
    dist_on = 0;
}

int bp_dist_rank(void)
{
    int r = 0;
    if (dist_on)
        MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int bp_dist_size(void)
{
    int s = 1;
    if (dist_on)
        MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
}

void bp_dist_abort(int code)
{
    if (dist_on && bp_dist_size() > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
}

int bp_dist_send(int to, int kind, const void *buf, size_t n, int async)
{
    if (n > (size_t)0x7fffffff)
        return -1;
    if (!async)
        return MPI_Ssend(buf, (int)n, MPI_BYTE, to, kind, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : -1;
    if (n_sends == cap_sends) {
        size_t cap = cap_sends ? 2 * cap_sends : 16;
        pending *p = realloc(sends, cap * sizeof *p);
        if (!p)
            return -1;
        sends = p, cap_sends = cap;
    }
    void *copy = malloc(n ? n : 1);
    if (!copy)
        return -1;
    memcpy(copy, buf, n);
    pending *p = &sends[n_sends];
    if (MPI_Isend(copy, (int)n, MPI_BYTE, to, kind, MPI_COMM_WORLD, &p->req) != MPI_SUCCESS) {
        free(copy);
        return -1;
    }
    p->buf = copy;
    n_sends++;
    return 0;
}

void bp_dist_flush(void)
{
    for (size_t i = 0; i < n_sends; i++) {
        MPI_Wait(&sends[i].req, MPI_STATUS_IGNORE);
        free(sends[i].buf);
    }
    n_sends = 0;
}

int bp_dist_recv(int from0, int wait, int *from, int *kind, char **buf, size_t *n)
{
    MPI_Status st;
    int src = from0 ? 0 : MPI_ANY_SOURCE, flag = 1, count;
    if (wait)
        MPI_Probe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
    else
        MPI_Iprobe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
    if (!flag)
        return 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    char *b = malloc((size_t)count + 1);
    if (!b)
        return -1;
    MPI_Recv(b, count, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    b[count] = '\0';
    *from = st.MPI_SOURCE, *kind = st.MPI_TAG, *buf = b, *n = (size_t)count;
    return 1;
}

#else  /* one rank */

int bp_dist_init(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return 0;
}
void bp_dist_finalize(void) {}
int bp_dist_rank(void) { return 0; }
int bp_dist_size(void) { return 1; }
void bp_dist_abort(int code) { (void)code; }
int bp_dist_send(int to, int kind, const void *buf, size_t n, int async)
{
    (void)to, (void)kind, (void)buf, (void)n, (void)async;
    return -1;
}
void bp_dist_flush(void) {}
int bp_dist_recv(int from0, int wait, int *from, int *kind, char **buf, size_t *n)
{
    (void)from0, (void)wait, (void)from, (void)kind, (void)buf, (void)n;
    return 0;
}

#endif
