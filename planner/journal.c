/*
 * journal.c - the resume journal (journal.h).
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bp_file.h"


/* Layers already measured under this key: their rows into t, done[i] set
 * for each (in any order: a distributed run completes layers out of
 * order); returns how many.  Rows after the last marker are incomplete. */
size_t bp_journal_resume(const char *path, const char *key, const bp_model *m,
                             unsigned char *done, bp_table *t, long *keep)
{
    char *text = NULL, want[80];
    size_t n, count = 0;
    bp_error err;
    *keep = 0;
    if (bp_read_file(path, &text, &n, &err) < 0)
        return 0;
    snprintf(want, sizeof want, "key %s\n", key);
    char *csv = strncmp(text, want, strlen(want)) == 0 ? text + strlen(want) : NULL;
    char *last = NULL;
    for (char *p = csv ? strstr(csv, "\n#done ") : NULL; p; p = strstr(p + 1, "\n#done "))
        last = p;
    if (last) {
        char *eol = strchr(last + 1, '\n');
        *keep = eol ? (long)(eol + 1 - text) : (long)n;   /* the journal to append to */
        unsigned long li = strtoul(last + 7, NULL, 10);
        if (li < m->n_layers && !done[li])
            done[li] = 1, count++;
        last[1] = '\0';                 /* rows of the complete layers only */
        char *q = csv;
        for (char *r = csv; *r; r++)     /* drop the marker lines, noting their layers */
            if (r[0] == '#' && (r == csv || r[-1] == '\n')) {
                if (strncmp(r, "#done ", 6) == 0) {
                    unsigned long i = strtoul(r + 6, NULL, 10);
                    if (i < m->n_layers && !done[i])
                        done[i] = 1, count++;
                }
                while (*r && *r != '\n')
                    r++;
                if (!*r)
                    break;
            } else {
                *q++ = *r;
            }
        *q = '\0';
        if (bp_table_parse_csv(t, csv, strlen(csv), path, &err) < 0) {
            bp_table_free(t);
            bp_table_init(t);
            memset(done, 0, m->n_layers);
            count = 0;
            *keep = 0;
        }
    }
    free(text);
    return count;
}

/* Open the journal: new, or (keep > 0) truncated after the last complete
 * layer, so that rows of a layer cut short are not taken for the next. */
int bp_journal_open(bp_journal *j, const char *csv_path, const char *key, long keep,
                        bp_error *err)
{
    int resumed = keep > 0;
    size_t n = strlen(csv_path) + 9;
    j->path = bp_malloc(n, err);
    if (!j->path)
        return -1;
    snprintf(j->path, n, "%s.partial", csv_path);
    /* a link somebody planted in output.dir is never followed (nor truncated through) */
    int fd = open(j->path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (resumed ? O_APPEND
                                                                                  : O_TRUNC), 0644);
    if (fd >= 0 && resumed && ftruncate(fd, (off_t)keep) != 0) {
        int e = errno;
        close(fd);
        return bp_fail(err, "%s: cannot write: %s", j->path, strerror(e));
    }
    if (fd >= 0 && !(j->fp = fdopen(fd, resumed ? "a" : "w")))
        close(fd);
    if (!j->fp)
        return bp_fail(err, "%s: cannot write: %s", j->path, errno == ELOOP
                       ? "a symbolic link bitplan did not make (it will not write through it; "
                         "remove it)" : strerror(errno));
    if (!resumed)
        fprintf(j->fp, "key %s\n" BP_TABLE_HEADER "\n", key);
    return 0;
}

int bp_journal_layer(bp_journal *j, const bp_table *t, size_t from, size_t layer,
                         bp_error *err)
{
    bp_table_write_rows(t, from, t->n, j->fp);
    fprintf(j->fp, "#done %zu\n", layer);
    if (fflush(j->fp) != 0 || fsync(fileno(j->fp)) != 0)
        return bp_fail(err, "%s: write failed: %s%s", j->path, strerror(errno),
                       errno == EFBIG ? " (the file-size limit, ulimit -f, was reached)" : "");
    return 0;
}

void bp_journal_close(bp_journal *j, int finished)
{
    if (j->fp)
        fclose(j->fp);
    if (finished && j->path)
        remove(j->path);
    free(j->path);
    memset(j, 0, sizeof *j);
}
