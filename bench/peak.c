/*
 * peak.c - this machine's BLAS reference: GFLOP/s of dgemm and sgemm at
 * 1024^3 (best of 5), with the threads OpenBLAS is given
 * (OPENBLAS_NUM_THREADS).  bench/perf/run.sh compares every stage with it.
 *
 *   build/bench_peak [N]        prints "dgemm GFLOPS" and "sgemm GFLOPS" lines
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/bp_profile.h"

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1024;
    if (n < 64 || n > 8192)
        return fprintf(stderr, "bench_peak: N must be in 64..8192\n"), 2;
    size_t nn = (size_t)n * (size_t)n;
    double *a = malloc(3 * nn * sizeof *a);
    float *s = malloc(3 * nn * sizeof *s);
    if (!a || !s)
        return fprintf(stderr, "bench_peak: out of memory\n"), 1;
    for (size_t i = 0; i < 3 * nn; i++)
        a[i] = (double)((i * 2654435761u) % 1000) / 1000.0 - 0.5, s[i] = (float)a[i];
    double flops = 2.0 * (double)n * n * n, best_d = 1e30, best_s = 1e30;
    for (int rep = 0; rep < 6; rep++) {      /* the first of each warms up */
        double t = bp_now();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, a + nn, n,
                    0.0, a + 2 * nn, n);
        t = bp_now() - t;
        if (rep && t < best_d)
            best_d = t;
        t = bp_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, s, n, s + nn, n,
                    0.0f, s + 2 * nn, n);
        t = bp_now() - t;
        if (rep && t < best_s)
            best_s = t;
    }
    printf("dgemm %.2f\nsgemm %.2f\n", flops / best_d * 1e-9, flops / best_s * 1e-9);
    free(a);
    free(s);
    return 0;
}
