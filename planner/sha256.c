/*
 * sha256.c - SHA-256 as specified in FIPS 180-4, section 6.2, with the x86
 * SHA extensions where the processor has them (the same digest, about five
 * times the speed: the sensitivity cache hashes every input file).
 */
#include "sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static uint32_t rotr(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    /* the working variables a..h live in registers (no array shifting) */
    uint32_t va = h[0], vb = h[1], vc = h[2], vd = h[3], ve = h[4], vf = h[5], vg = h[6],
             vh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t s1 = rotr(ve, 6) ^ rotr(ve, 11) ^ rotr(ve, 25);
        uint32_t ch = (ve & vf) ^ (~ve & vg);
        uint32_t t1 = vh + s1 + ch + sha256_k[t] + w[t];
        uint32_t s0 = rotr(va, 2) ^ rotr(va, 13) ^ rotr(va, 22);
        uint32_t maj = (va & vb) ^ (va & vc) ^ (vb & vc);
        vh = vg, vg = vf, vf = ve, ve = vd + t1;
        vd = vc, vc = vb, vb = va, va = t1 + s0 + maj;
    }
    h[0] += va, h[1] += vb, h[2] += vc, h[3] += vd;
    h[4] += ve, h[5] += vf, h[6] += vg, h[7] += vh;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

/* nblocks 64-byte blocks with SHA256RNDS2 (two rounds each), the message
 * schedule by SHA256MSG1/MSG2, four rounds' words per 128-bit lane group.
 * The state is kept as ABEF and CDGH, the order the instructions use. */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha256_blocks_ni(uint32_t h[8], const unsigned char *p, size_t nblocks)
{
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);  /* CDAB */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* EFGH */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);                                        /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);                                             /* CDGH */
    for (; nblocks > 0; nblocks--, p += 64) {
        __m128i abef = s0, cdgh = s1, m[4];
        for (int i = 0; i < 4; i++)
            m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), swap);
        for (int i = 0; i < 16; i++) {          /* rounds 4i .. 4i + 3 */
            __m128i w = m[i & 3];
            __m128i k = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&sha256_k[4 * i]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, k);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(k, 0x0E));
            if (i < 12) {                        /* the words of rounds 4i + 16 .. */
                __m128i w9 = _mm_alignr_epi8(m[(i + 3) & 3], m[(i + 2) & 3], 4);
                w = _mm_add_epi32(_mm_sha256msg1_epu32(w, m[(i + 1) & 3]), w9);
                m[i & 3] = _mm_sha256msg2_epu32(w, m[(i + 3) & 3]);
            }
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }
    t = _mm_shuffle_epi32(s0, 0x1B);                                               /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);                                              /* DCHG */
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, s1, 0xF0));              /* DCBA */
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, t, 8));                 /* HGFE */
}

static int ni_available(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));   /* SHA */
}
#else
static void sha256_blocks_ni(uint32_t h[8], const unsigned char *p, size_t nblocks)
{
    (void)h, (void)p, (void)nblocks;
}

static int ni_available(void)
{
    return 0;
}
#endif

static _Atomic int use_ni = -1;  /* -1: not yet asked */

int bp_sha256_accelerate(int on)
{
    use_ni = on && ni_available();
    return use_ni;
}

static void sha256_blocks(uint32_t h[8], const unsigned char *p, size_t nblocks)
{
    if (use_ni < 0)
        use_ni = ni_available();
    if (use_ni) {
        sha256_blocks_ni(h, p, nblocks);
        return;
    }
    for (; nblocks > 0; nblocks--, p += 64)
        sha256_block(h, p);
}

void bp_sha256_init(bp_sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->length = 0;
    s->fill = 0;
}

void bp_sha256_update(bp_sha256 *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->length += n;
    if (s->fill) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, take);
        s->fill += take, p += take, n -= take;
        if (s->fill < 64)
            return;
        sha256_blocks(s->h, s->block, 1);
        s->fill = 0;
    }
    sha256_blocks(s->h, p, n / 64);
    p += n / 64 * 64, n %= 64;
    memcpy(s->block, p, n);
    s->fill = n;
}

void bp_sha256_final(bp_sha256 *s, unsigned char digest[32])
{
    uint64_t bits = s->length * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    uint64_t keep = s->length;
    bp_sha256_update(s, pad, padlen + 8);
    s->length = keep;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            digest[4 * i + j] = (unsigned char)(s->h[i] >> (24 - 8 * j));
}

void bp_sha256_hex(const unsigned char digest[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = '\0';
}

int bp_sha256_file(const char *path, char hex[65], bp_error *err)
{
    enum { CHUNK = 1 << 20 };
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    unsigned char *buf = bp_malloc(CHUNK, err), digest[32];
    if (!buf) {
        fclose(fp);
        return -1;
    }
    bp_sha256 s;
    bp_sha256_init(&s);
    size_t n;
    while ((n = fread(buf, 1, CHUNK, fp)) > 0)
        bp_sha256_update(&s, buf, n);
    int bad = ferror(fp);
    int saved = errno;
    free(buf);
    fclose(fp);
    if (bad)
        return bp_fail(err, "%s: read error: %s", path, strerror(saved));
    bp_sha256_final(&s, digest);
    bp_sha256_hex(digest, hex);
    return 0;
}
