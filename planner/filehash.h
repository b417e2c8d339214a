/*
 * filehash.h - SHA-256 of input files, remembered by file identity.
 *
 * Hashing the model and calibration files on every run costs seconds on
 * large inputs; the memo (one line per file: hash, device, inode, size,
 * mtime and ctime in nanoseconds, path) lets a run reuse a file's hash while
 * none of those changed, and hash it again as soon as one does.  ctime moves
 * on every write or metadata change and cannot be set back, so a file
 * rewritten in place with its old size and mtime is still hashed again.
 */
#ifndef BP_FILEHASH_H
#define BP_FILEHASH_H

#include "../common/bp_error.h"

typedef struct bp_hash_memo {
    char *path;               /* the memo file, or NULL: never remember */
    char **lines;             /* "sha dev ino size mtime ctime path" */
    size_t n, cap;
    int dirty;
} bp_hash_memo;

/* Load the memo at path (a missing or unreadable memo is empty). */
void bp_hash_memo_open(bp_hash_memo *m, const char *path);
/* hex = SHA-256 of the file, from the memo when the file is unchanged. */
int bp_hash_memo_file(bp_hash_memo *m, const char *file, char hex[65], bp_error *err);
/* Write the memo back (atomically) if it changed, and free it.  A memo that
 * cannot be written is dropped silently: it is only a shortcut. */
void bp_hash_memo_close(bp_hash_memo *m);

#endif
