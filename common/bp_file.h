/*
 * bp_file.h - atomic output files and small file helpers.
 *
 * Every output bitplan writes goes through bp_atomic_*: data is written to a
 * temporary file in the destination directory, flushed and fsync'ed, then
 * renamed over the destination.  A failed or interrupted run never leaves a
 * half-written file, and the previous version stays intact until the rename.
 * Destinations that are not files are written straight through: "-" is
 * stdout, character devices and FIFOs are opened and written (never
 * replaced); a symbolic link is followed (its target is replaced, the link
 * stays); a directory or block device is an error.
 *
 * A set of outputs (a plan, its JSON, exports, quantized weights) lands
 * together: between bp_stage_begin and bp_stage_commit, commits only flush
 * their temporaries; bp_stage_commit moves the set's files (those directly in
 * DIR) into DIR/.bitplan-sets/<id>/, makes it current with one rename of the
 * link DIR/.bitplan-sets/current, and points DIR/NAME at
 * .bitplan-sets/current/NAME.  A kill at any point leaves one set current.
 */
#ifndef BP_FILE_H
#define BP_FILE_H

#include <stdio.h>

#include "bp_error.h"

typedef struct bp_atomic {
    FILE *fp;
    char *path;       /* final destination (a symlink's target) */
    char *tmp;        /* temporary file beside it; NULL when written straight */
    int direct;       /* 1: stdout, a device or a FIFO, written in place */
} bp_atomic;

/* Open a temporary file beside path for writing. */
int bp_atomic_open(bp_atomic *a, const char *path, bp_error *err);
/* Flush, fsync and rename into place; on any write error removes the
 * temporary file and reports it.  Always releases a. */
int bp_atomic_commit(bp_atomic *a, bp_error *err);
/* Remove the temporary file without touching the destination. */
void bp_atomic_abort(bp_atomic *a);

/* Defer the renames of every bp_atomic_commit until bp_stage_commit. */
void bp_stage_begin(void);
/* Make the staged files dir's current set (files outside dir are renamed
 * into place as they are); ends staging. */
int bp_stage_commit(const char *dir, bp_error *err);
/* Remove every staged temporary; ends staging. */
void bp_stage_abort(void);
/* The temporary holding path's staged contents, or path itself. */
const char *bp_stage_lookup(const char *path);

/* Take the run lock of an output directory (flock on the directory, released
 * when the process ends, however it ends); a second holder fails with a
 * message naming the directory.  Then remove the sets killed runs left (all
 * but the current one) and temporaries of the outputs named in `names`
 * (NULL-terminated file names inside dir). */
int bp_dir_lock(const char *dir, const char *const *names, int *fd, bp_error *err);

/* Create a directory and its parents (like mkdir -p). */
int bp_mkdirs(const char *path, bp_error *err);

/* Join dir and name ("dir/name"; name returned as-is when absolute or dir
 * is empty).  Returns a malloc'ed string. */
char *bp_path_join(const char *dir, const char *name, bp_error *err);
/* Directory part of a path ("." when there is none); malloc'ed. */
char *bp_path_dir(const char *path, bp_error *err);
/* path made absolute against the working directory (no link resolved, the
 * file need not exist); malloc'ed. */
char *bp_path_absolute(const char *path, bp_error *err);

/* Read a whole regular file (at most BP_READ_MAX bytes) into a NUL-terminated
 * malloc'ed buffer.  Directories, FIFOs, devices and larger files are errors
 * naming the file (never a blocking or unbounded read). */
#define BP_READ_MAX ((size_t)1 << 31)
int bp_read_file(const char *path, char **data, size_t *size, bp_error *err);
/* The same with a limit and what the file is, for the message. */
int bp_read_file_max(const char *path, size_t max, const char *what, char **data, size_t *size,
                     bp_error *err);

/* Map a whole regular file read-only; files under min_size bytes are an
 * error saying "too short for <what>".  Unmap with bp_unmap_file. */
int bp_map_file(const char *path, size_t min_size, const char *what,
                const unsigned char **map, size_t *size, bp_error *err);
void bp_unmap_file(const unsigned char *map, size_t size);
/* The pages wholly inside [p, p + n) of a read-only file mapping let go of
 * (read again from the page cache when touched): a model read tensor by
 * tensor keeps one tensor resident, not the file. */
void bp_map_release(const void *p, size_t n);
/* While on, bp_atomic_open writes the outputs a run owns (in output.dir: the
 * table and its key, the journal, the hash memo, sweep outputs): an existing
 * name must be a regular file or bitplan's own link; a link somebody else
 * planted, a FIFO or a directory there is an error, never followed. */
void bp_output_managed(int on);

/* 1 when s is valid UTF-8 without control characters (names other tools
 * match, print and store). */
int bp_printable_utf8(const char *s);

/* s as a JSON string literal (quotes, backslashes and control characters
 * escaped). */
void bp_json_string(FILE *fp, const char *s);

#endif
