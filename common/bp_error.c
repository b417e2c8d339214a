/*
 * bp_error.c - error messages and checked allocation shared by all modules.
 */
#define _DEFAULT_SOURCE              /* madvise, MADV_HUGEPAGE */
#include "bp_error.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

int bp_fail(bp_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int bp_fail_prefix(bp_error *err, const char *fmt, ...)
{
    if (err) {
        char prefix[BP_ERROR_MAX];
        char old[BP_ERROR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        size_t n = strlen(prefix);
        if (n > sizeof err->msg - 3)
            n = sizeof err->msg - 3;
        memcpy(err->msg, prefix, n);
        memcpy(err->msg + n, ": ", 2);
        size_t room = sizeof err->msg - n - 3, m = strnlen(old, room);
        memcpy(err->msg + n + 2, old, m);
        err->msg[n + 2 + m] = '\0';
    }
    return -1;
}

/*
 * Buffers of 2 MiB and more (the d x d matrices, the weights' copies and
 * grids) start on a 2 MiB boundary and ask for transparent huge pages
 * where the kernel gives them on request (Linux's "madvise" mode): a
 * 2 MiB page faults in once where 512 small ones fault one by one, and
 * the products miss the TLB less.  Page faults are dear where the machine
 * is virtual: `bitplan quantize` of one 3072 x 768 GPTQ layer took 16,000
 * faults and 0.27 s, now 5,000 and 0.17 s; a 768/3072 block's RTN
 * sensitivity 7.0 s, now 6.1 s (8,192 tokens).  Freed with free().  The
 * library sets glibc's mmap threshold to 2 MiB on its first allocation
 * (docs/library.md).
 */
enum { HUGE_FROM = 2 << 20, HUGE_PAGE = 2 << 20 };

/* Huge pages over the whole ones of [p, p + n). */
static void advise_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)4095;
    if (e > a)
        madvise((void *)a, e - a, MADV_HUGEPAGE);   /* advice: failure changes nothing */
#else
    (void)p, (void)n;
#endif
}

/* n bytes, from HUGE_FROM on their own mapping (glibc's mmap threshold
 * fixed there, once: by default it rises to 32 MiB as blocks are freed, and
 * 2 MiB-aligned blocks then carve gaps into the heap that glibc keeps: a
 * 7B-shaped block's peak went from 14.7 to 22.9 GB), aligned to a huge page
 * and advised onto huge pages. */
static pthread_once_t policy_once = PTHREAD_ONCE_INIT;

static void mmap_policy(void)
{
    mallopt(M_MMAP_THRESHOLD, HUGE_FROM);
}

static void *alloc(size_t n)
{
    pthread_once(&policy_once, mmap_policy);
    void *p = NULL;
    if (n < HUGE_FROM)
        return malloc(n ? n : 1);
    if (posix_memalign(&p, HUGE_PAGE, n) != 0)
        return NULL;
    advise_huge(p, n);
    return p;
}

void *bp_malloc(size_t n, bp_error *err)
{
    void *p = alloc(n);
    if (!p)
        bp_fail(err, "out of memory allocating %zu bytes", n);
    return p;
}

void *bp_calloc(size_t count, size_t size, bp_error *err)
{
    pthread_once(&policy_once, mmap_policy);
    size_t total;
    if (bp_mul_size(count, size, &total) < 0) {
        bp_fail(err, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    /* calloc's own zero pages (a matrix of which only a triangle is written
     * never touches the rest); huge pages over its whole aligned ones */
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p && total >= HUGE_FROM)
        advise_huge(p, total);
    if (!p)
        bp_fail(err, "out of memory allocating %zu bytes", total);
    return p;
}

char *bp_strdup(const char *s, bp_error *err)
{
    size_t n = strlen(s) + 1;
    char *p = bp_malloc(n, err);
    if (p)
        memcpy(p, s, n);
    return p;
}

int bp_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}
