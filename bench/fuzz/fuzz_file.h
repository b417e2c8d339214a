/* The fuzz input as a file, for readers that take a path (plans, quantized
 * weights, statistics): written to one temporary per process. */
#ifndef BP_FUZZ_FILE_H
#define BP_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *fuzz_file(const uint8_t *data, size_t size, const char *suffix)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/bitplan-fuzz-%ld%s", (long)getpid(), suffix);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        abort();
    fwrite(data, 1, size, fp);
    fclose(fp);
    return path;
}

#endif
