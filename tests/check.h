/*
 * check.h - the tiny assertion harness every C unit test uses.
 *
 * CHECK* record a failure (with file and line) and keep going, so one run
 * shows every broken property; check_done() prints "N passed, N failed" and
 * returns the exit status for main.
 */
#ifndef BP_CHECK_H
#define BP_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_passed_, check_failed_;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            check_passed_++;                                                 \
        } else {                                                             \
            check_failed_++;                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

#define CHECK_MSG(cond, ...)                                                 \
    do {                                                                     \
        if (cond) {                                                          \
            check_passed_++;                                                 \
        } else {                                                             \
            check_failed_++;                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

/* |a - b| <= tol * max(1, |a|, |b|) */
#define CHECK_NEAR(a, b, tol)                                                \
    do {                                                                     \
        double ca_ = (double)(a), cb_ = (double)(b);                         \
        double sc_ = fmax(1.0, fmax(fabs(ca_), fabs(cb_)));                  \
        CHECK_MSG(fabs(ca_ - cb_) <= (tol) * sc_, "%.17g vs %.17g", ca_, cb_); \
    } while (0)

/* relative closeness: |a - b| <= tol * max(|a|, |b|) */
#define CHECK_REL(a, b, tol)                                                 \
    do {                                                                     \
        double ca_ = (double)(a), cb_ = (double)(b);                         \
        CHECK_MSG(fabs(ca_ - cb_) <= (tol) * fmax(fabs(ca_), fabs(cb_)),     \
                  "%.17g vs %.17g", ca_, cb_);                               \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                      \
    CHECK_MSG(strstr((hay), (needle)) != NULL, "\"%s\" lacks \"%s\"", (hay), \
              (needle))

static inline int check_done(void)
{
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    return check_failed_ ? 1 : 0;
}

/* Deterministic xorshift64* generator for test data. */
typedef struct { unsigned long long s; } check_rng;
static inline unsigned long long check_next(check_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}
/* uniform in [0, 1) */
static inline double check_uniform(check_rng *r)
{
    return (double)(check_next(r) >> 11) * (1.0 / 9007199254740992.0);
}
/* standard normal (Box-Muller) */
static inline double check_normal(check_rng *r)
{
    double u = check_uniform(r), v = check_uniform(r);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

#endif
