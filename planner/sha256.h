/*
 * sha256.h - SHA-256 (FIPS 180-4), used to identify model and calibration
 * files in plans and to key the sensitivity cache.
 */
#ifndef BP_SHA256_H
#define BP_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"

typedef struct bp_sha256 {
    uint32_t h[8];
    uint64_t length;          /* bytes hashed so far */
    unsigned char block[64];
    size_t fill;
} bp_sha256;

void bp_sha256_init(bp_sha256 *s);
void bp_sha256_update(bp_sha256 *s, const void *data, size_t n);
void bp_sha256_final(bp_sha256 *s, unsigned char digest[32]);
/* digest -> 64 lowercase hex characters plus NUL */
void bp_sha256_hex(const unsigned char digest[32], char hex[65]);
/* Use the processor's SHA extensions (on: where it has them; the default)
 * or the portable code (off, for tests); returns whether they are used. */
int bp_sha256_accelerate(int on);
/* Hash a whole file into hex; error names the file. */
int bp_sha256_file(const char *path, char hex[65], bp_error *err);

#endif
