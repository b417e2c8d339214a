/*
 * bp_error.h - the error record every bitplan library function fills.
 *
 * Library code never prints and never exits: a function that can fail returns
 * a negative status and writes one human sentence into a bp_error (naming the
 * file, key or tensor and what was expected).  Only planner/main.c prints it.
 */
#ifndef BP_ERROR_H
#define BP_ERROR_H

#include <stddef.h>

#include "../include/bitplan.h"   /* the record: bp_error, BP_ERROR_MAX */

/* Format a message into err (when err is not NULL) and return -1. */
int bp_fail(bp_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefix the existing message: "<prefix>: <old message>". Returns -1. */
int bp_fail_prefix(bp_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Allocation helpers that report failures through err (NULL on failure). */
void *bp_malloc(size_t n, bp_error *err);
void *bp_calloc(size_t count, size_t size, bp_error *err);
char *bp_strdup(const char *s, bp_error *err);

/* Overflow-checked size arithmetic: returns 0 on success, -1 on overflow. */
int bp_mul_size(size_t a, size_t b, size_t *out);

#endif
