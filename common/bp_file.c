/*
 * bp_file.c - atomic writes (temp + fsync + rename), mkdir -p, path joins.
 */
#define _POSIX_C_SOURCE 200809L
#include "bp_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int bp_atomic_open(bp_atomic *a, const char *path, bp_error *err)
{
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    a->path = bp_strdup(path, err);
    a->tmp = bp_malloc(n + 16, err);
    if (!a->path || !a->tmp) {
        bp_atomic_abort(a);
        return -1;
    }
    snprintf(a->tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        int e = errno;
        free(a->tmp);
        a->tmp = NULL;
        bp_atomic_abort(a);
        return bp_fail(err, "%s: cannot create output file: %s", path, strerror(e));
    }
    fchmod(fd, 0644);
    a->fp = fdopen(fd, "wb");
    if (!a->fp) {
        int e = errno;
        close(fd);
        bp_atomic_abort(a);
        return bp_fail(err, "%s: cannot open output file: %s", path, strerror(e));
    }
    return 0;
}

int bp_atomic_commit(bp_atomic *a, bp_error *err)
{
    int rc = 0;
    int bad = ferror(a->fp);
    if (fflush(a->fp) != 0)
        bad = 1;
    if (!bad && fsync(fileno(a->fp)) != 0)
        bad = 1;
    int e = errno;
    if (fclose(a->fp) != 0)
        bad = 1;
    a->fp = NULL;
    if (bad) {
        rc = bp_fail(err, "%s: write failed: %s", a->path, strerror(e ? e : EIO));
    } else if (rename(a->tmp, a->path) != 0) {
        rc = bp_fail(err, "%s: cannot move output into place: %s", a->path,
                     strerror(errno));
    } else {
        free(a->tmp);
        a->tmp = NULL;
    }
    bp_atomic_abort(a);
    return rc;
}

void bp_atomic_abort(bp_atomic *a)
{
    if (a->fp)
        fclose(a->fp);
    if (a->tmp)
        unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    memset(a, 0, sizeof *a);
}

int bp_mkdirs(const char *path, bp_error *err)
{
    char *p = bp_strdup(path, err);
    if (!p)
        return -1;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                free(p);
                return bp_fail(err, "%s: cannot create directory: %s", path, strerror(e));
            }
            *s = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    int ok = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    free(p);
    if (!ok)
        return bp_fail(err, "%s: not a directory", path);
    return 0;
}

char *bp_path_join(const char *dir, const char *name, bp_error *err)
{
    if (name[0] == '/' || !dir || !dir[0] || strcmp(dir, ".") == 0)
        return bp_strdup(name, err);
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = bp_malloc(n, err);
    if (p)
        snprintf(p, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return p;
}

char *bp_path_dir(const char *path, bp_error *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return bp_strdup(".", err);
    if (slash == path)
        return bp_strdup("/", err);
    size_t n = (size_t)(slash - path);
    char *p = bp_malloc(n + 1, err);
    if (p) {
        memcpy(p, path, n);
        p[n] = '\0';
    }
    return p;
}

int bp_read_file(const char *path, char **data, size_t *size, bp_error *err)
{
    *data = NULL;
    *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = bp_malloc(cap, err);
    if (!buf) {
        fclose(fp);
        return -1;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(fp);
                return bp_fail(err, "%s: out of memory reading file", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return bp_fail(err, "%s: read error", path);
    }
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return 0;
}

int bp_map_file(const char *path, size_t min_size, const char *what,
                const unsigned char **map, size_t *size, bp_error *err)
{
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return bp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return bp_fail(err, "%s: not a regular file", path);
    }
    if ((size_t)sb.st_size < min_size || sb.st_size == 0) {
        close(fd);
        return bp_fail(err, "%s: %lld bytes is too short for %s", path,
                       (long long)sb.st_size, what);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return bp_fail(err, "%s: cannot map: %s", path, strerror(e));
    *map = m;
    *size = (size_t)sb.st_size;
    return 0;
}

void bp_unmap_file(const unsigned char *map, size_t size)
{
    if (map)
        munmap((void *)map, size);
}

void bp_json_string(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(fp, "\\%c", c);
        else if (c < 0x20)
            fprintf(fp, "\\u%04x", c);
        else
            fputc(c, fp);
    }
    fputc('"', fp);
}
