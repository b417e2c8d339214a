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
 * Large buffers (the d x d matrices, the weights' copies) on transparent
 * huge pages where the kernel offers them on request (Linux's "madvise"
 * mode): a 2 MiB page faults in once where 512 small ones fault one by
 * one, and the matrix products miss the TLB less; a 7B-shaped layer's
 * measurement otherwise takes millions of page faults.  Only from 64 MiB:
 * smaller buffers are made and freed per candidate, where a huge page's
 * fault (zeroing 2 MiB, compacting memory for it) does not pay.  Freed
 * with free().
 */
enum { HUGE_FROM = 64 << 20 };

/* Ask for huge pages over the whole pages of [p, p + n) (glibc serves
 * blocks this large from their own mappings). */
static void *advise_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    if (p && n >= HUGE_FROM) {
        uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, e = ((uintptr_t)p + n) & ~(uintptr_t)4095;
        if (e > a)
            madvise((void *)a, e - a, MADV_HUGEPAGE);   /* advice: failure changes nothing */
    }
#endif
    return p;
}

void *bp_malloc(size_t n, bp_error *err)
{
    void *p = advise_huge(malloc(n ? n : 1), n);
    if (!p)
        bp_fail(err, "out of memory allocating %zu bytes", n);
    return p;
}

void *bp_calloc(size_t count, size_t size, bp_error *err)
{
    size_t total;
    if (bp_mul_size(count, size, &total) < 0) {
        bp_fail(err, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    void *p = advise_huge(calloc(count ? count : 1, size ? size : 1), total);
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
