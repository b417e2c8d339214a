/*
 * bp_file.h - atomic output files and small file helpers.
 *
 * Every output bitplan writes goes through bp_atomic_*: data is written to a
 * temporary file in the destination directory, flushed and fsync'ed, then
 * renamed over the destination.  A failed or interrupted run never leaves a
 * half-written file, and the previous version stays intact until the rename.
 */
#ifndef BP_FILE_H
#define BP_FILE_H

#include <stdio.h>

#include "bp_error.h"

typedef struct bp_atomic {
    FILE *fp;
    char *path;       /* final destination */
    char *tmp;        /* temporary file beside it */
} bp_atomic;

/* Open a temporary file beside path for writing. */
int bp_atomic_open(bp_atomic *a, const char *path, bp_error *err);
/* Flush, fsync and rename into place; on any write error removes the
 * temporary file and reports it.  Always releases a. */
int bp_atomic_commit(bp_atomic *a, bp_error *err);
/* Remove the temporary file without touching the destination. */
void bp_atomic_abort(bp_atomic *a);

/* Create a directory and its parents (like mkdir -p). */
int bp_mkdirs(const char *path, bp_error *err);

/* Join dir and name ("dir/name"; name returned as-is when absolute or dir
 * is empty).  Returns a malloc'ed string. */
char *bp_path_join(const char *dir, const char *name, bp_error *err);
/* Directory part of a path ("." when there is none); malloc'ed. */
char *bp_path_dir(const char *path, bp_error *err);

/* Read a whole file into a NUL-terminated malloc'ed buffer. */
int bp_read_file(const char *path, char **data, size_t *size, bp_error *err);

/* Map a whole regular file read-only; files under min_size bytes are an
 * error saying "too short for <what>".  Unmap with bp_unmap_file. */
int bp_map_file(const char *path, size_t min_size, const char *what,
                const unsigned char **map, size_t *size, bp_error *err);
void bp_unmap_file(const unsigned char *map, size_t size);

/* s as a JSON string literal (quotes, backslashes and control characters
 * escaped). */
void bp_json_string(FILE *fp, const char *s);

#endif
