/*
 * bp_threads.c - see bp_threads.h.
 */
#include "bp_threads.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

int bp_threads(void)
{
    const char *e = getenv("BITPLAN_THREADS");
    long n = e && *e ? strtol(e, NULL, 10) : openblas_get_num_threads();
    return n < 1 ? 1 : n > BP_THREADS_MAX ? BP_THREADS_MAX : (int)n;
}

void bp_parallel(int n, void *(*fn)(void *), void *arg, size_t stride)
{
    pthread_t th[BP_THREADS_MAX];
    int started[BP_THREADS_MAX] = {0};
    n = n < 1 ? 1 : n > BP_THREADS_MAX ? BP_THREADS_MAX : n;
    int blas = openblas_get_num_threads();
    if (n > 1)
        openblas_set_num_threads(1);
    for (int i = 1; i < n; i++)
        started[i] = pthread_create(&th[i], NULL, fn, (char *)arg + (size_t)i * stride) == 0;
    fn(arg);
    for (int i = 1; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            fn((char *)arg + (size_t)i * stride);
    }
    if (n > 1)
        openblas_set_num_threads(blas);
}
