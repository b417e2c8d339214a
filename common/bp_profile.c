/*
 * bp_profile.c - per-stage seconds and flop counts (single-threaded callers:
 * layers are measured one at a time; BLAS threads are inside the calls).
 */
#include "bp_profile.h"

#include <time.h>

static double seconds_[BP_STAGE_COUNT], flops_[BP_STAGE_COUNT];

static const char *const names[BP_STAGE_COUNT] = {
    "load", "activations", "weights", "errors", "solve", "write",
};

double bp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void bp_profile_add(bp_stage s, double seconds)
{
    seconds_[s] += seconds;
}

void bp_profile_flops(bp_stage s, double flops)
{
    flops_[s] += flops;
}

static size_t reused_;

void bp_profile_reused(size_t n)
{
    reused_ += n;
}

void bp_profile_report(FILE *f)
{
    double total = 0.0;
    for (int s = 0; s < BP_STAGE_COUNT; s++)
        total += seconds_[s];
    if (total <= 0.0)
        return;
    fprintf(f, "profile: %-22s %9s %6s %9s %8s\n", "stage", "seconds", "share", "GFLOP",
            "GFLOP/s");
    for (int s = 0; s < BP_STAGE_COUNT; s++) {
        if (seconds_[s] <= 0.0 && flops_[s] <= 0.0)
            continue;
        fprintf(f, "profile: %-22s %9.4f %5.1f%% %9.2f %8.2f\n", names[s], seconds_[s],
                100.0 * seconds_[s] / total, flops_[s] * 1e-9,
                seconds_[s] > 0.0 ? flops_[s] * 1e-9 / seconds_[s] : 0.0);
    }
    fprintf(f, "profile: %-22s %9.4f\n", "total", total);
    if (reused_)
        fprintf(f, "profile: shared inputs: %zu Grams and GPTQ factors reused\n", reused_);
}
