/*
 * bp_file.c - atomic writes (temp + fsync + rename), mkdir -p, path joins.
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include "bp_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int staging;
static int managed;                  /* bp_output_managed: outputs a run owns */

#define SETS ".bitplan-sets"

/* A link of an output set (NAME -> .bitplan-sets/current/NAME)? */
static int managed_link(const char *path)
{
    char have[512];
    ssize_t n = readlink(path, have, sizeof have - 1);
    if (n <= 0)
        return 0;
    have[n] = '\0';
    return strncmp(have, SETS "/current/", strlen(SETS "/current/")) == 0;
}

/* Open a destination that is not a file to replace: "-", a device, a FIFO
 * (1), a regular file or nothing yet (0, *target set when path is a link). */
static int special_output(bp_atomic *a, const char *path, char **target, bp_error *err)
{
    struct stat st;
    *target = NULL;
    if (strcmp(path, "-") == 0) {
        a->fp = stdout, a->direct = 1;
        return 1;
    }
    if (lstat(path, &st) != 0)
        return 0;                    /* a new file */
    if (S_ISLNK(st.st_mode) && (staging || managed) && managed_link(path))
        return 0;                    /* a new set replaces it: written beside the link */
    if ((staging || managed) && !S_ISREG(st.st_mode)) {
        /* an output a run owns is a regular file or bitplan's own link, never
         * written through anything else (somebody else's link, a FIFO) */
        char to[512] = "";
        ssize_t n = S_ISLNK(st.st_mode) ? readlink(path, to, sizeof to - 1) : -1;
        to[n > 0 ? n : 0] = '\0';
        return bp_fail(err, "%s: %s%s that bitplan did not make; it writes its outputs as "
                       "regular files there and will not write through it (remove it, or "
                       "write elsewhere with -o)", path,
                       S_ISLNK(st.st_mode) ? "a symbolic link to " : "a ",
                       S_ISLNK(st.st_mode) ? to : S_ISDIR(st.st_mode) ? "directory"
                       : S_ISFIFO(st.st_mode) ? "FIFO" : "special file");
    }
    if (S_ISLNK(st.st_mode)) {
        if (!(*target = realpath(path, NULL)))
            return bp_fail(err, "%s: a symbolic link whose target cannot be followed: %s", path,
                           strerror(errno));
        if (stat(*target, &st) != 0)
            return bp_fail(err, "%s: cannot stat the link's target: %s", path, strerror(errno));
    }
    const char *dest = *target ? *target : path;
    if (S_ISDIR(st.st_mode))
        return bp_fail(err, "%s: is a directory (expected a file name)", path);
    if (S_ISBLK(st.st_mode) || S_ISSOCK(st.st_mode))
        return bp_fail(err, "%s: is a %s; bitplan writes files, character devices, FIFOs or "
                       "'-' (stdout)", path, S_ISBLK(st.st_mode) ? "block device" : "socket");
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
        int fd = open(dest, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || !(a->fp = fdopen(fd, "wb"))) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            return bp_fail(err, "%s: cannot open for writing: %s", path, strerror(e));
        }
        a->direct = 1;
        return 1;
    }
    return 0;
}

int bp_atomic_open(bp_atomic *a, const char *path, bp_error *err)
{
    memset(a, 0, sizeof *a);
    char *target;
    int sp = special_output(a, path, &target, err);
    if (sp != 0) {
        free(target);
        if (sp < 0 || !(a->path = bp_strdup(path, err))) {
            bp_atomic_abort(a);
            return -1;
        }
        return 0;
    }
    const char *dest = target ? target : path;
    size_t n = strlen(dest);
    a->path = bp_strdup(dest, err);
    a->tmp = bp_malloc(n + 16, err);
    free(target);
    if (!a->path || !a->tmp) {
        bp_atomic_abort(a);
        return -1;
    }
    snprintf(a->tmp, n + 16, "%s.tmp.XXXXXX", a->path);
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

/* ---- staged output sets --------------------------------------------------- */

typedef struct staged {
    char *tmp, *path;                /* absolute */
} staged;
static staged *stage_list;
static size_t stage_n, stage_cap;

void bp_stage_begin(void)
{
    staging = 1;
}

/* dir of p made absolute, plus its last component. */
static char *absolute(const char *p)
{
    const char *slash = strrchr(p, '/');
    char *dir = slash ? strndup(p, (size_t)(slash - p) + (slash == p)) : strdup(".");
    char *real = dir ? realpath(dir, NULL) : NULL;
    free(dir);
    if (!real)
        return strdup(p);
    size_t n = strlen(real) + strlen(p) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", strcmp(real, "/") ? real : "", slash ? slash + 1 : p);
    free(real);
    return out;
}

static int stage_add(const char *tmp, const char *path, bp_error *err)
{
    if (stage_n == stage_cap) {
        size_t cap = stage_cap ? 2 * stage_cap : 8;
        staged *l = realloc(stage_list, cap * sizeof *l);
        if (!l)
            return bp_fail(err, "out of memory");
        stage_list = l, stage_cap = cap;
    }
    char *t = absolute(tmp), *p = absolute(path);
    if (!t || !p) {
        free(t), free(p);
        return bp_fail(err, "out of memory");
    }
    for (size_t i = 0; i < stage_n; i++)       /* written twice: the last one wins */
        if (strcmp(stage_list[i].path, p) == 0) {
            unlink(stage_list[i].tmp);
            free(stage_list[i].tmp), free(stage_list[i].path);
            stage_list[i] = stage_list[--stage_n];
            break;
        }
    stage_list[stage_n++] = (staged){t, p};
    return 0;
}

static void stage_clear(int remove_temps)
{
    for (size_t i = 0; i < stage_n; i++) {
        if (remove_temps)
            unlink(stage_list[i].tmp);
        free(stage_list[i].tmp), free(stage_list[i].path);
    }
    free(stage_list);
    stage_list = NULL, stage_n = stage_cap = 0, staging = 0;
}

void bp_stage_abort(void)
{
    stage_clear(1);
}

const char *bp_stage_lookup(const char *path)
{
    char *p = staging ? absolute(path) : NULL;
    const char *found = path;
    for (size_t i = 0; p && i < stage_n; i++)
        if (strcmp(stage_list[i].path, p) == 0)
            found = stage_list[i].tmp;
    free(p);
    return found;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ---- output sets: .bitplan-sets/<id>/ and one "current" link ------------ */

/* A name bitplan gives a set: "<seconds>.<nanoseconds>.<pid>". */
static int set_id(const char *s)
{
    int dots = 0;
    if (!*s)
        return 0;
    for (const char *c = s; *c; c++) {
        if (*c == '.')
            dots++;
        else if (*c < '0' || *c > '9')
            return 0;
    }
    return dots == 2 && s[0] != '.' && s[strlen(s) - 1] != '.' && !strstr(s, "..");
}

/* Remove set `name` of the open sets directory: a directory's regular files
 * and links (never followed) and the directory, or a stray file or link
 * itself.  Only names bitplan gives (set ids, "current.<id>") are touched. */
static void remove_set_at(int sets, const char *name)
{
    struct stat st;
    int tmp_link = !strncmp(name, "current.", 8) && set_id(name + 8);
    if ((!set_id(name) && !tmp_link) || fstatat(sets, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlinkat(sets, name, 0);     /* a link is removed, not followed */
        return;
    }
    int fd = openat(sets, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d && fd >= 0)
        close(fd);
    for (struct dirent *e; d && (e = readdir(d));) {
        struct stat es;
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            fstatat(dirfd(d), e->d_name, &es, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(es.st_mode))
            unlinkat(dirfd(d), e->d_name, 0);
    }
    if (d)
        closedir(d);
    unlinkat(sets, name, AT_REMOVEDIR);
}

/* The open sets directory of dir (-1: none), never through a link; *cur
 * receives the current set's id ("" when there is none). */
static int open_sets(const char *dir, char cur[256])
{
    char sets[4096];
    snprintf(sets, sizeof sets, "%s/" SETS, dir);
    int fd = open(sets, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    ssize_t n = fd >= 0 ? readlinkat(fd, "current", cur, 255) : -1;
    cur[n > 0 ? n : 0] = '\0';
    if (!set_id(cur))
        cur[0] = '\0';
    return fd;
}

/* Every set but the current one (a killed run's, the previous run's). */
static void prune_sets(const char *dir)
{
    char cur[256];
    int fd = open_sets(dir, cur);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d && fd >= 0)
        close(fd);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, "current") && strcmp(e->d_name, cur))
            remove_set_at(dirfd(d), e->d_name);
    if (d)
        closedir(d);
}

/* Point dir/name at .bitplan-sets/current/name (one rename), unless it does. */
static int link_top(const char *dir, const char *name, const char *id, bp_error *err)
{
    char top[4096], want[512], have[512], tmp[4096 + 160];
    snprintf(top, sizeof top, "%s/%s", dir, name);
    snprintf(want, sizeof want, SETS "/current/%s", name);
    ssize_t n = readlink(top, have, sizeof have - 1);
    if (n >= 0 && (size_t)n == strlen(want) && memcmp(have, want, (size_t)n) == 0)
        return 0;
    snprintf(tmp, sizeof tmp, "%s.link.%s", top, id);
    unlink(tmp);
    if (symlink(want, tmp) != 0 || rename(tmp, top) != 0) {
        int e = errno;
        unlink(tmp);
        return bp_fail(err, "%s: cannot link the output into place: %s", top, strerror(e));
    }
    return 0;
}

int bp_stage_commit(const char *dir, bp_error *err)
{
    staging = 0;
    if (stage_n == 0) {
        stage_clear(0);
        return 0;
    }
    char *real = realpath(dir, NULL);
    char sets[4096] = "", id[64], setdir[4096 + 64] = "", dest[8192], tmp[4096 + 80];
    int rc = real ? 0 : bp_fail(err, "%s: cannot resolve the output directory: %s", dir,
                                strerror(errno));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(id, sizeof id, "%lld.%09ld.%ld", (long long)ts.tv_sec, ts.tv_nsec, (long)getpid());
    if (rc == 0) {
        snprintf(sets, sizeof sets, "%s/" SETS, real);
        snprintf(setdir, sizeof setdir, "%s/%s", sets, id);
        struct stat st;
        if (mkdir(sets, 0755) != 0 && errno != EEXIST) {
            setdir[0] = '\0';
            rc = bp_fail(err, "%s: cannot create %s: %s", dir, SETS, strerror(errno));
        } else if (lstat(sets, &st) != 0 || !S_ISDIR(st.st_mode)) {
            setdir[0] = '\0';
            rc = bp_fail(err, "%s: not a directory bitplan made; bitplan will not write "
                         "through it (remove it)", sets);
        } else if (mkdir(setdir, 0755) != 0) {
            setdir[0] = '\0';
            rc = bp_fail(err, "%s: cannot create %s: %s", dir, SETS, strerror(errno));
        }
    }
    /* 1. the set's files into a directory no reader looks at yet */
    size_t rl = real ? strlen(real) : 0;
    for (size_t i = 0; rc == 0 && i < stage_n; i++) {
        const char *p = stage_list[i].path;
        int member = !strncmp(p, real, rl) && p[rl] == '/' && !strchr(p + rl + 1, '/');
        snprintf(dest, sizeof dest, "%s/%s", setdir, p + rl + 1);
        if (rename(stage_list[i].tmp, member ? dest : p) != 0)
            rc = bp_fail(err, "%s: cannot move output into place: %s", p, strerror(errno));
    }
    if (rc == 0)
        fsync_dir(setdir);
    /* 2. the switch: one rename makes the whole set current */
    if (rc == 0) {
        snprintf(tmp, sizeof tmp, "%s/current.%s", sets, id);
        if (symlink(id, tmp) != 0 || rename(tmp, strcat(strcpy(dest, sets), "/current")) != 0) {
            rc = bp_fail(err, "%s: cannot switch to the new outputs: %s", dir, strerror(errno));
            unlink(tmp);
        } else {
            fsync_dir(sets);
        }
    }
    /* 3. names in dir point into the current set (made once; a file of an
     * older layout is replaced); links to outputs this set lacks go */
    for (size_t i = 0; rc == 0 && i < stage_n; i++) {
        const char *p = stage_list[i].path;
        if (!strncmp(p, real, rl) && p[rl] == '/' && !strchr(p + rl + 1, '/'))
            rc = link_top(real, p + rl + 1, id, err);
    }
    DIR *d = rc == 0 ? opendir(real) : NULL;
    for (struct dirent *e; d && (e = readdir(d));) {
        char have[512], target[8192];
        snprintf(dest, sizeof dest, "%s/%s", real, e->d_name);
        ssize_t n = readlink(dest, have, sizeof have - 1);
        if (n <= 0)
            continue;
        have[n] = '\0';
        snprintf(target, sizeof target, "%s/%s", real, have);
        if (!strncmp(have, SETS "/current/", strlen(SETS "/current/")) && access(target, F_OK))
            unlink(dest);
    }
    if (d)
        closedir(d);
    if (rc == 0) {
        fsync_dir(real);
        prune_sets(real);
    } else if (real && setdir[0]) {
        char cur[256];
        int sfd = open_sets(real, cur);
        if (sfd >= 0) {
            remove_set_at(sfd, id);
            close(sfd);
        }
    }
    free(real);
    stage_clear(rc != 0);
    return rc;
}

/* Temporaries (NAME.tmp.XXXXXX, NAME.link.ID) of the named outputs in the
 * open directory fd (closed here); unlinkat never follows a link. */
static void remove_stale(int fd, const char *const *names)
{
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d && fd >= 0)
        close(fd);
    for (struct dirent *e; d && (e = readdir(d));)
        for (size_t k = 0; names && names[k]; k++) {
            size_t ln = strlen(names[k]);
            if (strncmp(e->d_name, names[k], ln) != 0)
                continue;
            const char *rest = e->d_name + ln;
            struct stat st;
            if (((!strncmp(rest, ".tmp.", 5) && strlen(rest) == 11) || !strncmp(rest, ".link.", 6)) &&
                fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
                unlinkat(dirfd(d), e->d_name, 0);
        }
    if (d)
        closedir(d);
}

/* Before a run writes into dir: the names it owns are absent, regular files
 * or bitplan's own links (NAME -> .bitplan-sets/current/NAME), and
 * .bitplan-sets, if there, is a directory whose "current" names one of its
 * sets.  Anything else somebody put there is refused, never followed. */
static int check_owned(const char *dir, int fd, const char *const *names, bp_error *err)
{
    struct stat st;
    for (size_t k = 0; names && names[k]; k++) {
        if (fstatat(fd, names[k], &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISREG(st.st_mode))
            continue;
        char path[4096 + 256], to[512] = "";
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        if (S_ISLNK(st.st_mode) && managed_link(path))
            continue;
        ssize_t n = S_ISLNK(st.st_mode) ? readlinkat(fd, names[k], to, sizeof to - 1) : -1;
        to[n > 0 ? n : 0] = '\0';
        return bp_fail(err, "%s: %s%s that bitplan did not make, where it writes its output "
                       "'%s'; it will not write through it or replace it (remove it, or use "
                       "another output.dir)", path, S_ISLNK(st.st_mode) ? "a symbolic link to "
                       : "a ", S_ISLNK(st.st_mode) ? to : S_ISDIR(st.st_mode) ? "directory"
                       : S_ISFIFO(st.st_mode) ? "FIFO" : "special file", names[k]);
    }
    char sets[4096 + 32], cur[256];
    snprintf(sets, sizeof sets, "%s/" SETS, dir);
    if (fstatat(fd, SETS, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return bp_fail(err, "%s: not a directory bitplan made (%s); bitplan keeps its output sets "
                       "there and will not follow or delete through it (remove it)", sets,
                       S_ISLNK(st.st_mode) ? "a symbolic link" : "a file");
    int sfd = open_sets(dir, cur);
    struct stat cs;
    int bad = sfd >= 0 && fstatat(sfd, "current", &cs, AT_SYMLINK_NOFOLLOW) == 0 &&
              (!S_ISLNK(cs.st_mode) || !cur[0]);
    if (sfd >= 0)
        close(sfd);
    if (bad)
        return bp_fail(err, "%s/current: not bitplan's link to one of its sets; bitplan will not "
                       "follow it (remove it)", sets);
    return 0;
}

int bp_dir_lock(const char *dir, const char *const *names, int *fd, bp_error *err)
{
    /* the directory itself is locked: no lock file to leave behind */
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return bp_fail(err, "%s: cannot open the output directory: %s", dir, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        close(*fd);
        *fd = -1;
        return bp_fail(err, "%s: another bitplan run is writing into this directory; wait "
                       "for it to finish or use another output.dir", dir);
    }
    if (check_owned(dir, *fd, names, err) < 0) {
        close(*fd);
        *fd = -1;
        return -1;
    }
    prune_sets(dir);
    char cur[256];
    int sfd = open_sets(dir, cur);
    remove_stale(openat(*fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), names);
    if (sfd >= 0 && cur[0])
        remove_stale(openat(sfd, cur, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), names);
    if (sfd >= 0)
        close(sfd);
    return 0;
}

void bp_output_managed(int on)
{
    managed = on;
}

int bp_atomic_commit(bp_atomic *a, bp_error *err)
{
    int rc = 0;
    int bad = ferror(a->fp);
    if (fflush(a->fp) != 0)
        bad = 1;
    if (!bad && !a->direct && fsync(fileno(a->fp)) != 0)
        bad = 1;
    int e = errno;
    if (a->fp != stdout && fclose(a->fp) != 0)
        bad = 1, e = e ? e : errno;
    a->fp = NULL;
    if (bad) {
        rc = bp_fail(err, "%s: write failed: %s%s", a->path, strerror(e ? e : EIO),
                     e == EFBIG ? " (the file-size limit, ulimit -f, was reached)" : "");
    } else if (a->direct) {
        /* written in place */
    } else if (staging) {
        if ((rc = stage_add(a->tmp, a->path, err)) == 0) {
            free(a->tmp);
            a->tmp = NULL;
        }
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
    if (a->fp && a->fp != stdout)
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

char *bp_path_absolute(const char *path, bp_error *err)
{
    char cwd[4096];
    if (path[0] == '/')
        return bp_strdup(path, err);
    if (!getcwd(cwd, sizeof cwd))
        return bp_fail(err, "cannot read the working directory: %s", strerror(errno)), NULL;
    const char *p = path;
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    return bp_path_join(cwd, strcmp(p, ".") ? p : "", err);
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

int bp_read_file_max(const char *path, size_t max, const char *what, char **data, size_t *size,
                     bp_error *err)
{
    *data = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);    /* a FIFO never blocks */
    if (fd < 0)
        return bp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int dir = S_ISDIR(st.st_mode);
        close(fd);
        return dir ? bp_fail(err, "%s: is a directory (expected %s)", path, what)
                   : bp_fail(err, "%s: not a regular file (a FIFO, device or socket cannot be "
                             "read as %s)", path, what);
    }
    if ((unsigned long long)st.st_size > max) {
        close(fd);
        return bp_fail(err, "%s: %lld bytes is more than %s may have (%zu)", path,
                       (long long)st.st_size, what, max);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = bp_malloc(cap, err);
    if (!buf) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return bp_fail(err, "%s: read error: %s", path, strerror(e));
        }
        n += (size_t)got;
        if (got == 0 || n == cap - 1)
            break;
    }
    close(fd);
    buf[n] = '\0';                   /* a file that grew meanwhile: its first st_size bytes */
    *data = buf;
    *size = n;
    return 0;
}

int bp_read_file(const char *path, char **data, size_t *size, bp_error *err)
{
    return bp_read_file_max(path, BP_READ_MAX, "an input file", data, size, err);
}

int bp_map_file(const char *path, size_t min_size, const char *what,
                const unsigned char **map, size_t *size, bp_error *err)
{
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);    /* a FIFO never blocks */
    if (fd < 0)
        return bp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        int dir = S_ISDIR(sb.st_mode);
        close(fd);
        if (dir)
            return bp_fail(err, "%s: is a directory (expected %s)", path, what);
        return bp_fail(err, "%s: not a regular file (a FIFO, device or socket cannot be read "
                       "as %s)", path, what);
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

void bp_map_release(const void *p, size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~((uintptr_t)page - 1);
    if (page > 0 && b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void bp_unmap_file(const unsigned char *map, size_t size)
{
    if (map)
        munmap((void *)map, size);
}

int bp_printable_utf8(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        int n = *s < 0x80 ? 1 : (*s >> 5) == 6 ? 2 : (*s >> 4) == 14 ? 3 : (*s >> 3) == 30 ? 4 : 0;
        if (n == 0 || (n == 1 && (*s < 0x20 || *s == 0x7f)))
            return 0;
        for (int k = 1; k < n; k++)
            if ((s[k] >> 6) != 2)
                return 0;
        s += n;
    }
    return 1;
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
