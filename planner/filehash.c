/*
 * filehash.c - the file-hash memo (see filehash.h).
 */
#include "filehash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/bp_file.h"
#include "sha256.h"

#define MEMO_MAX_LINES 4096

/* Append a line (taken over); full or out of memory: dropped. */
static void memo_push(bp_hash_memo *m, char *line)
{
    if (line && m->n == m->cap && m->n < MEMO_MAX_LINES) {
        size_t cap = m->cap ? 2 * m->cap : 16;
        char **l = realloc(m->lines, cap * sizeof *l);
        if (l)
            m->lines = l, m->cap = cap;
    }
    if (!line || m->n == m->cap) {
        free(line);
        return;
    }
    m->lines[m->n++] = line;
}

void bp_hash_memo_open(bp_hash_memo *m, const char *path)
{
    char *text = NULL;
    size_t n = 0;
    memset(m, 0, sizeof *m);
    if (!path || !(m->path = strdup(path)) || bp_read_file(path, &text, &n, NULL) < 0)
        return;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        memo_push(m, strdup(line));
    free(text);
}

/* The identity part of a memo line ("dev ino size mtime ctime path"). */
static int identity(const char *file, char *buf, size_t cap)
{
    struct stat sb;
    if (strchr(file, '\n') || stat(file, &sb) != 0 || !S_ISREG(sb.st_mode))
        return -1;
    int n = snprintf(buf, cap, "%llu %llu %lld %lld.%09ld %lld.%09ld %s",
                     (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino,
                     (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
                     (long)sb.st_mtim.tv_nsec, (long long)sb.st_ctim.tv_sec,
                     (long)sb.st_ctim.tv_nsec, file);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int bp_hash_memo_file(bp_hash_memo *m, const char *file, char hex[65], bp_error *err)
{
    char id[8192];
    if (!m->path || identity(file, id, sizeof id) < 0)
        return bp_sha256_file(file, hex, err);
    for (size_t i = 0; i < m->n; i++)
        if (strlen(m->lines[i]) > 65 && m->lines[i][64] == ' ' &&
            strcmp(m->lines[i] + 65, id) == 0) {
            memcpy(hex, m->lines[i], 64);
            hex[64] = '\0';
            return 0;
        }
    if (bp_sha256_file(file, hex, err) < 0)
        return -1;
    char id_after[8192];
    if (identity(file, id_after, sizeof id_after) < 0 || strcmp(id, id_after) != 0)
        return 0;                    /* changed while we read it: do not remember */
    const char *name = id;          /* the path: after five fields */
    for (int f = 0; f < 5; f++)
        name = strchr(name, ' ') + 1;
    size_t keep = 0;                 /* forget older lines for the same path */
    for (size_t i = 0; i < m->n; i++) {
        const char *p = m->lines[i];
        for (int f = 0; f < 6 && p; f++)
            p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
        if (p && strcmp(p, name) == 0)
            free(m->lines[i]);
        else
            m->lines[keep++] = m->lines[i];
    }
    m->n = keep;
    char *line = malloc(strlen(id) + 66);
    if (line)
        sprintf(line, "%s %s", hex, id);
    memo_push(m, line);
    m->dirty = 1;
    return 0;
}

void bp_hash_memo_close(bp_hash_memo *m)
{
    if (m->dirty && m->path) {
        bp_atomic a;
        if (bp_atomic_open(&a, m->path, NULL) == 0) {
            for (size_t i = 0; i < m->n; i++)
                fprintf(a.fp, "%s\n", m->lines[i]);
            bp_atomic_commit(&a, NULL);
        }
    }
    for (size_t i = 0; i < m->n; i++)
        free(m->lines[i]);
    free(m->lines);
    free(m->path);
    memset(m, 0, sizeof *m);
}
