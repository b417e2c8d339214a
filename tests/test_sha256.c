/*
 * test_sha256.c - SHA-256 against the FIPS 180-2 example vectors, chunked
 * updates, and whole files; with the processor's SHA extensions (where it
 * has them) and without, and the two against each other on random bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "common/bp_file.h"
#include "planner/sha256.h"

static void hex_of(const void *data, size_t n, size_t chunk, char hex[65])
{
    bp_sha256 s;
    unsigned char d[32];
    const unsigned char *p = data;
    bp_sha256_init(&s);
    for (size_t i = 0; i < n; i += chunk)
        bp_sha256_update(&s, p + i, n - i < chunk ? n - i : chunk);
    bp_sha256_final(&s, d);
    bp_sha256_hex(d, hex);
}

static void vectors(void);

int main(void)
{
    int ni = bp_sha256_accelerate(1);
    printf("SHA extensions: %s\n", ni ? "used" : "not available");
    vectors();
    bp_sha256_accelerate(0);
    vectors();
    /* random bytes of every length to 600 and one large buffer, fed whole
     * and in odd pieces: the same digests both ways */
    enum { BIG = 3 << 20 };
    unsigned char *r = malloc(BIG);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < BIG; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        r[i] = (unsigned char)(x >> 24);
    }
    for (size_t i = 0; i <= 601; i++) {
        size_t n = i <= 600 ? i : BIG;
        char h0[65], h1[65], h2[65];
        bp_sha256_accelerate(0);
        hex_of(r, n, n ? n : 1, h0);
        bp_sha256_accelerate(1);
        hex_of(r, n, n ? n : 1, h1);
        hex_of(r, n, 61, h2);
        CHECK(strcmp(h0, h1) == 0 && strcmp(h1, h2) == 0);
    }
    free(r);
    return check_done();
}

static void vectors(void)
{
    static const char *const msg2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    char hex[65];
    hex_of("", 0, 1, hex);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    hex_of("abc", 3, 1, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    for (size_t chunk = 1; chunk <= 64; chunk += 7) {
        hex_of(msg2, strlen(msg2), chunk, hex);
        CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
    }
    /* one million 'a', fed in odd-sized pieces */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    hex_of(a, 1000000, 997, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    /* lengths around the padding boundary agree between chunkings */
    for (size_t n = 50; n < 140; n++) {
        char h1[65], h2[65];
        hex_of(a, n, n ? n : 1, h1);
        hex_of(a, n, 3, h2);
        CHECK(strcmp(h1, h2) == 0);
    }
    /* a file hashes like its bytes */
    const char *base = getenv("BP_TEST_TMP");
    char dir[512], path[600];
    bp_error err;
    snprintf(dir, sizeof dir, "%s", base ? base : "/tmp/bp_test_sha256");
    snprintf(path, sizeof path, "%s/million.txt", dir);
    CHECK(bp_mkdirs(dir, &err) == 0);
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fwrite(a, 1, 1000000, fp);
        fclose(fp);
    }
    char fh[65] = "";
    CHECK_MSG(bp_sha256_file(path, fh, &err) == 0, "%s", err.msg);
    CHECK(strcmp(fh, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK(bp_sha256_file(path, fh, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "missing");
    free(a);
}
