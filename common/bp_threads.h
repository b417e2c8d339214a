/*
 * bp_threads.h - work split over the machine's cores by bitplan's own
 * threads, with OpenBLAS held to one thread meanwhile (its workers would
 * otherwise compete for the same cores).
 */
#ifndef BP_THREADS_H
#define BP_THREADS_H

#include <stddef.h>

#define BP_THREADS_MAX 16

/* Threads to use: BITPLAN_THREADS when set, else as many as OpenBLAS has
 * (OPENBLAS_NUM_THREADS, else the cores: several MPI ranks on one machine
 * share its cores as their OpenBLAS threads do); 1..BP_THREADS_MAX. */
int bp_threads(void);

/* fn(arg + i * stride) for i in [0, n): n - 1 of them on new threads, the
 * first on this one, OpenBLAS at one thread until all are done.  Where a
 * thread cannot be started its part runs here.  n <= BP_THREADS_MAX. */
void bp_parallel(int n, void *(*fn)(void *), void *arg, size_t stride);

#endif
