/*
 * ggml.c - llama.cpp's weight types: reference quantizers and dequantizers
 * (ggml.h).  Each follows ggml's published algorithm operation by
 * operation in float, so that the bytes are the bytes llama-quantize
 * writes (bench/llamacpp/quants.sh checks them against ggml's own
 * functions).  Blocks are written byte by byte in ggml's layout (fp16
 * little-endian), never through structs.
 */
#include "ggml.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define QK 32                     /* QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 = QK4_NL */
#define QK_K 256
#define GROUP_MAX_EPS 1e-15f

static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

static inline void put_f16(uint8_t *p, float f)
{
    uint16_t h = bp_f32_to_f16(f);
    p[0] = (uint8_t)(h & 255);
    p[1] = (uint8_t)(h >> 8);
}

static inline float get_f16(const uint8_t *p)
{
    return bp_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* The float put_f16 stores, read back. */
static inline float as_f16(float f)
{
    return bp_f16_to_f32(bp_f32_to_f16(f));
}

/* Round to nearest, ties to even, for |f| <= 2^22 - 1: adding 1.5 * 2^23
 * leaves the integer in the mantissa's low bits. */
static inline int nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* The index of the value of the sorted table val[0..n) nearest to x (ties
 * to the upper one unless strictly nearer below). */
static int best_index_int8(int n, const int8_t *val, float x)
{
    if (x <= val[0])
        return 0;
    if (x >= val[n - 1])
        return n - 1;
    int ml = 0, mu = n - 1;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (x < val[mav])
            mu = mav;
        else
            ml = mav;
    }
    return x - val[mu - 1] < val[mu] - x ? mu - 1 : mu;
}

/* ---- scale searches (ggml-quants.c's helpers) ------------------------------ */

/* The weight of element i in make_qx_quants: qw, else by rmse_type
 * (1: x^2, 2: 1, 3: |x|, other: sqrt|x|). */
static inline float qx_weight(const float *qw, int rmse_type, const float *x, int i)
{
    return qw ? qw[i] : rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ?
           fabsf(x[i]) : sqrtf(fabsf(x[i]));
}

/* The element of largest magnitude (the first of ties), *amax its magnitude. */
static float signed_absmax(const float *x, int n, float *amax)
{
    float max = 0, a = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > a) {
            a = ax;
            max = x[i];
        }
    }
    *amax = a;
    return max;
}

/*
 * Symmetric codes l in [-nmax, nmax) for x = scale * l: start from
 * iscale = -nmax / max (max the element of largest magnitude); with
 * rmse_type != 0 the scale is the weighted least-squares fit
 * sum w x l / sum w l^2, and 18 more iscales -(nmax + 0.1 is) / max
 * (is = -9..9) are tried, keeping the one with the largest
 * (sum w x l)^2 / sum w l^2, i.e. the lowest weighted error.  L receives
 * l + nmax.
 */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type,
                            const float *qw)
{
    float amax, max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
        }
        return 1 / iscale;
    }
    int return_early = 0;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = 1;
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = qx_weight(qw, rmse_type, x, i);
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    if (return_early)
        return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            float w = qx_weight(qw, rmse_type, x, i);
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/*
 * q3_K's values: codes l in [-nmax, nmax) from iscale = -nmax / max, then
 * (do_rmse) up to 5 passes of coordinate descent on the x^2-weighted fit:
 * element i moves to nearest(x_i * sum' w l^2 / sum' w x l) (the sums
 * without i) when that raises (sum w x l)^2 / sum w l^2.
 */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L, int do_rmse)
{
    float amax, max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    if (do_rmse) {
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            L[i] = (int8_t)l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        for (int itry = 0; itry < 5; ++itry) {
            int n_changed = 0;
            for (int i = 0; i < n; ++i) {
                float w = x[i] * x[i];
                float slx = sumlx - w * x[i] * (float)L[i];
                if (slx > 0) {
                    float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                    int new_l = nearest_int(x[i] * sl2 / slx);
                    new_l = imax(-nmax, imin(nmax - 1, new_l));
                    if (new_l != L[i]) {
                        slx += w * x[i] * (float)new_l;
                        sl2 += w * (float)new_l * (float)new_l;
                        if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                            L[i] = (int8_t)new_l;
                            sumlx = slx;
                            suml2 = sl2;
                            ++n_changed;
                        }
                    }
                }
            }
            if (!n_changed)
                break;
        }
        for (int i = 0; i < n; ++i)
            L[i] = (int8_t)(L[i] + nmax);
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
    }
    return 1 / iscale;
}

/*
 * Asymmetric codes l in [0, nmax] for x = scale * l + min (min <= 0): start
 * from min-max, then try iscale = (rmin + rdelta is + nmax) / (max - min)
 * for is = 0..nstep, each followed by the weighted least-squares (scale,
 * min) for its codes (min clamped to 0, refitting the scale), keeping the
 * lowest weighted error (|diff| with use_mad, else diff^2).  weights NULL
 * (make_qkx3 only) means x^2.  Returns the scale; *the_min = -min.
 * make_qkx2 and make_qkx3 differ only there and in how a flat block is
 * caught (max == min, max <= min).
 */
static float make_qkx_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                             float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                             int use_mad, int v3)
{
    float min = x[0], max = x[0];
    float sum_w = weights ? weights[0] : x[0] * x[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights ? weights[i] : x[i] * x[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (v3 ? max <= min : max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        float w = weights ? weights[i] : x[i] * x[i];
        best_error += w * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights ? weights[i] : x[i] * x[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                float w = weights ? weights[i] : x[i] * x[i];
                cur_error += w * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/*
 * Non-negative codes l in [0, nmax] for the scales of a super-block
 * (x >= 0): the best of 9 iscales (0.1 is + nmax) / max by the qw-weighted
 * error, then up to 5 passes of coordinate descent on the least-squares fit.
 */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *qw)
{
    float max = 0;
    for (int i = 0; i < n; ++i)
        max = max > x[i] ? max : x[i];
    if (max < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; ++i)
        L[i] = (uint8_t)nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * (float)L[i];
        float w = qw[i];
        best_mse += w * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0)
            continue;
        float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = imin(nmax, nearest_int(iscale_is * x[i]));
            float diff = x[i] - scale_is * (float)l;
            float w = qw[i];
            mse += w * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = imin(nmax, nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        float w = qw[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = qw[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = imin(nmax, nearest_int(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}


/* ---- make_qkx_quants over 8 blocks at once ------------------------------------------
 *
 * make_qkx_quants is a chain of dependent float sums, 37 scale trials each a
 * pass over the block, and a trial taken moves the min the later trials
 * code against: it cannot be reordered.  Blocks are independent, though:
 * here eight blocks run the very same operations side by side, one per
 * vector lane (GCC's generic vectors: two SSE2 halves, or one AVX2 vector
 * where the CPU has it), every branch a per-lane select.  Each lane computes
 * the scalar function's floats exactly (the same IEEE operations in the
 * same order, no contraction), so the bytes are the reference's
 * (tests/test_ggml.c checks both against llama.cpp's digests and each other).
 */

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* m ? a : b per lane; nearest_int per lane; an int vector clamped to [0, hi]
 * (macros: a function returning a vector would change the ABI per target) */
#define VSEL(m, a, b) ((v8f)((((v8i)(a)) & (m)) | (((v8i)(b)) & ~(m))))
#define VNEAREST(f) ((((v8i)((f) + 12582912.f)) & 0x007fffff) - 0x00400000)
#define VCLAMP(l, hi)                                                                     \
    do {                                                                                  \
        (l) = (l) & ~((l) < 0);                                                           \
        v8i over_ = (l) > (hi);                                                           \
        (l) = ((l) & ~over_) | (((v8i){0} + (hi)) & over_);                               \
    } while (0)

__attribute__((target_clones("avx2", "default")))
static void make_qkx_lanes(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                           float *scale_out, float *min_out, float rmin, float rdelta, int nstep,
                           int use_mad, int v3)
{
    v8f X[32] = {{0}}, W[32] = {{0}};
    v8i Lv[32], La[32];
    for (int i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) {
            X[i][b] = x[b * n + i];
            W[i][b] = weights ? weights[b * n + i] : x[b * n + i] * x[b * n + i];
        }
    v8f min = X[0], max = X[0], sum_w = W[0], sum_x = sum_w * X[0];
    for (int i = 1; i < n; ++i) {
        min = VSEL(X[i] < min, X[i], min);
        max = VSEL(X[i] > max, X[i], max);
        sum_w += W[i];
        sum_x += W[i] * X[i];
    }
    v8f zero = {0};
    min = VSEL(min > 0, zero, min);
    v8i flat = v3 ? (max <= min) : (max == min);
    v8f iscale = (float)nmax / (max - min);
    v8f scale = 1 / iscale, best_error = zero;
    for (int i = 0; i < n; ++i) {
        Lv[i] = VNEAREST(iscale * (X[i] - min));
        VCLAMP(Lv[i], nmax);
        v8f diff = scale * __builtin_convertvector(Lv[i], v8f) + min - X[i];
        diff = use_mad ? (v8f)((v8i)diff & 0x7fffffff) : diff * diff;
        best_error += W[i] * diff;
    }
    for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        v8f sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < n; ++i) {
            La[i] = VNEAREST(iscale * (X[i] - min));
            VCLAMP(La[i], nmax);
            v8f l = __builtin_convertvector(La[i], v8f);
            sum_l += W[i] * l;
            sum_l2 += W[i] * l * l;
            sum_xl += W[i] * l * X[i];
        }
        v8f D = sum_w * sum_l2 - sum_l * sum_l;
        v8f this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        v8f this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        v8i clip = this_min > 0;
        this_min = VSEL(clip, zero, this_min);
        this_scale = VSEL(clip, sum_xl / sum_l2, this_scale);
        v8f cur = zero;
        for (int i = 0; i < n; ++i) {
            v8f diff = this_scale * __builtin_convertvector(La[i], v8f) + this_min - X[i];
            diff = use_mad ? (v8f)((v8i)diff & 0x7fffffff) : diff * diff;
            cur += W[i] * diff;
        }
        v8i take = (D > 0) & (cur < best_error);
        for (int i = 0; i < n; ++i)
            Lv[i] = (La[i] & take) | (Lv[i] & ~take);
        best_error = VSEL(take, cur, best_error);
        scale = VSEL(take, this_scale, scale);
        min = VSEL(take, this_min, min);
    }
    for (int b = 0; b < 8; b++) {
        for (int i = 0; i < n; i++)
            L[b * n + i] = flat[b] ? 0 : (uint8_t)Lv[i][b];
        scale_out[b] = flat[b] ? 0.f : scale[b];
        min_out[b] = -min[b];
    }
}

/* make_qkx_quants for `count` consecutive blocks of n (x, weights, L laid
 * out block after block), eight at a time (a last partial group padded with
 * copies of its first block, whose results are dropped). */
static void make_qkx_blocks(int count, int n, int nmax, const float *x, const float *weights,
                            uint8_t *L, float *scales, float *mins, float rmin, float rdelta,
                            int nstep, int use_mad, int v3)
{
    for (int b0 = 0; b0 < count; b0 += 8) {
        int k = count - b0 < 8 ? count - b0 : 8;
        if (k == 8) {
            make_qkx_lanes(n, nmax, x + b0 * n, weights ? weights + b0 * n : NULL, L + b0 * n,
                           scales + b0, mins + b0, rmin, rdelta, nstep, use_mad, v3);
            continue;
        }
        float xb[8 * 32], wb[8 * 32], sc[8], mn[8];
        uint8_t lb[8 * 32];
        for (int b = 0; b < 8; b++) {
            int from = b < k ? b0 + b : b0;
            memcpy(xb + b * n, x + from * n, (size_t)n * sizeof *xb);
            if (weights)
                memcpy(wb + b * n, weights + from * n, (size_t)n * sizeof *wb);
        }
        make_qkx_lanes(n, nmax, xb, weights ? wb : NULL, lb, sc, mn, rmin, rdelta, nstep, use_mad,
                       v3);
        memcpy(L + b0 * n, lb, (size_t)(k * n));
        memcpy(scales + b0, sc, (size_t)k * sizeof *sc);
        memcpy(mins + b0, mn, (size_t)k * sizeof *mn);
    }
}

/* ---- blocks of 32 ------------------------------------------------------------ */

/* The element of largest magnitude (the first such), and that magnitude. */
static float signed_max(const float *x, int n, float *amax_out)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        const float v = x[j];
        if (amax < fabsf(v)) {
            amax = fabsf(v);
            max = v;
        }
    }
    *amax_out = amax;
    return max;
}

static void min_max(const float *x, int n, float *min, float *max)
{
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < *min)
            *min = x[j];
        if (x[j] > *max)
            *max = x[j];
    }
}

/* sigma^2 of a row: sum x^2 / n (the impl quantizers' per-row scale). */
static float row_sigma2(const float *x, int64_t n)
{
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; ++j)
        sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

/* weight_j = qw_j sqrt(sigma2 + x_j^2) */
static void importance(const float *qw, const float *x, int n, float sigma2, float *w)
{
    for (int j = 0; j < n; ++j)
        w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* q4_0 / q5_0 without weights: d = max / -(2^(b-1)), codes x/d + 2^(b-1)
 * truncated after adding a half.  L receives the codes. */
static float q_0_ref(const float *x, int bits, uint8_t *L)
{
    float amax, max = signed_max(x, QK, &amax);
    const float d = max / (float)-(1 << (bits - 1));
    const float id = d ? 1.0f / d : 0.0f;
    const float off = (float)(1 << (bits - 1)) + 0.5f;
    const int top = (1 << bits) - 1;
    for (int j = 0; j < QK; j++)
        L[j] = (uint8_t)imin(top, (int8_t)(x[j] * id + off));
    return d;
}

/* q4_1 / q5_1 without weights: min-max, codes (x - min)/d rounded half up
 * (q4_1 clamps at 15; q5_1 cannot exceed 31). */
static float q_1_ref(const float *x, int bits, uint8_t *L, float *m)
{
    float min, max;
    min_max(x, QK, &min, &max);
    const float d = (max - min) / (float)((1 << bits) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) {
        const float v = (x[j] - min) * id;
        L[j] = bits == 4 ? (uint8_t)imin(15, (int8_t)(v + 0.5f)) : (uint8_t)(v + 0.5f);
    }
    *m = min;
    return d;
}

/* Pack 32 codes as nibbles (element j low, j + 16 high) and, for 5 bits,
 * the fifth bits in qh (bit j for element j). */
static void pack_32(const uint8_t *L, int bits, uint8_t *qs, uint8_t *qh)
{
    uint32_t h = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = (uint8_t)((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
        h |= (uint32_t)((L[j] & 0x10u) >> 4) << j;
        h |= (uint32_t)((L[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    if (bits == 5)
        for (int k = 0; k < 4; k++)
            qh[k] = (uint8_t)(h >> 8 * k);
}

/* q4_0, q5_0 (symmetric, scale only) and q4_1, q5_1 (scale and min). */
static void quantize_q_01(const float *x, int64_t n, const float *qw, uint8_t *y, int bits,
                          int with_min)
{
    const float sigma2 = qw ? row_sigma2(x, n) : 0;
    const size_t bytes = (size_t)(with_min ? 4 : 2) + (bits == 5 ? 4 : 0) + 16;
    for (int64_t ib = 0; ib < n / QK; ++ib, y += bytes) {
        const float *xb = x + QK * ib;
        uint8_t L[QK], Laux[QK];
        float d, m = 0;
        if (!qw) {
            d = with_min ? q_1_ref(xb, bits, L, &m) : q_0_ref(xb, bits, L);
        } else {
            float w[QK];
            importance(qw + QK * ib, xb, QK, sigma2, w);
            if (with_min) {
                float min;
                d = make_qkx_quants(QK, (1 << bits) - 1, xb, w, L, &min, Laux, -0.9f, 0.05f, 36,
                                    0, 1);
                m = -min;
            } else {
                d = make_qx_quants(QK, 1 << (bits - 1), xb, (int8_t *)L, 1, w);
            }
        }
        put_f16(y, d);
        if (with_min)
            put_f16(y + 2, m);
        uint8_t *qh = y + (with_min ? 4 : 2);
        pack_32(L, bits, qh + (bits == 5 ? 4 : 0), qh);
    }
}

static void quantize_q8_0(const float *x, int64_t n, uint8_t *y)
{
    for (int64_t ib = 0; ib < n / QK; ++ib, y += 34) {
        const float *xb = x + QK * ib;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = amax > fabsf(xb[j]) ? amax : fabsf(xb[j]);
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        put_f16(y, d);
        for (int j = 0; j < QK; ++j)
            y[2 + j] = (uint8_t)(int8_t)roundf(xb[j] * id);
    }
}

/* ---- the non-linear grid: iq4_nl (one scale per 32), iq4_xs (6-bit scales
 * per 32 under an fp16 scale per 256) ---------------------------------------- */

/* Block ib's scale: start from -max / values[0] (the largest element on the
 * grid's end), codes by the nearest grid value, the least-squares scale,
 * then 2 ntry + 1 more starts (itry + values[0]) / max. */
static float iq4_block_scale(const float *xb, const float *w, uint8_t *Lb, int ntry)
{
    const int8_t *values = iq4nl_values;
    float amax, max = signed_absmax(xb, QK, &amax);
    if (amax < GROUP_MAX_EPS)
        return 0;
    float d = ntry > 0 ? -max / values[0] : max / values[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < QK; ++j) {
        int l = best_index_int8(16, values, id * xb[j]);
        Lb[j] = (uint8_t)l;
        float q = values[l];
        sumqx += w[j] * q * xb[j];
        sumq2 += w[j] * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; ++itry) {
        id = (float)(itry + values[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < QK; ++j) {
            float q = values[best_index_int8(16, values, id * xb[j])];
            sumqx += w[j] * q * xb[j];
            sumq2 += w[j] * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* One super-block of sbs elements (32: iq4_nl, 256: iq4_xs) into dh (fp16),
 * q4 (sbs / 2 bytes) and, for iq4_xs, scales_h (2 bytes) and scales_l. */
static void iq4_super(const float *x, int sbs, const float *qw, uint8_t *dh, uint8_t *sh,
                      uint8_t *sl, uint8_t *q4)
{
    const int8_t *values = iq4nl_values;
    const int ntry = 7, nb = sbs / QK;
    float scales[QK_K / QK], w[QK];
    uint8_t L[QK_K];
    float sigma2 = 0;
    for (int j = 0; j < sbs; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / (float)sbs;
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < nb; ++ib) {
        const float *xb = x + ib * QK;
        if (qw)
            importance(qw + ib * QK, xb, QK, sigma2, w);
        else
            for (int j = 0; j < QK; ++j)
                w[j] = xb[j] * xb[j];
        scales[ib] = iq4_block_scale(xb, w, L + ib * QK, ntry);
        float abs_d = fabsf(scales[ib]);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = scales[ib];
        }
    }
    if (nb > 1) {
        uint16_t scales_h = 0;
        memset(sl, 0, (size_t)nb / 2);
        float d = -max_scale / 32;
        put_f16(dh, d);
        float id = d ? 1 / d : 0.f;
        for (int ib = 0; ib < nb; ++ib) {
            int l = imax(-32, imin(31, nearest_int(id * scales[ib])));
            float dl = d * (float)l;
            float idl = dl ? 1 / dl : 0.f;
            for (int j = 0; j < QK; ++j)
                L[ib * QK + j] = (uint8_t)best_index_int8(16, values, idl * x[ib * QK + j]);
            l += 32;
            uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
            sl[ib / 2] = (uint8_t)(ib % 2 == 0 ? l_l : sl[ib / 2] | l_l << 4);
            scales_h = (uint16_t)(scales_h | l_h << 2 * (ib % 8));
        }
        sh[0] = (uint8_t)(scales_h & 255);
        sh[1] = (uint8_t)(scales_h >> 8);
    } else {
        put_f16(dh, scales[0]);
        float id = scales[0] ? 1 / scales[0] : 0;
        for (int j = 0; j < sbs; ++j)
            L[j] = (uint8_t)best_index_int8(16, values, id * x[j]);
    }
    for (int i = 0; i < sbs / QK; ++i)
        for (int j = 0; j < 16; ++j)
            q4[16 * i + j] = (uint8_t)(L[QK * i + j] | L[QK * i + 16 + j] << 4);
}

static void quantize_iq4(const float *x, int64_t n, const float *qw, uint8_t *y, int xs)
{
    const int sbs = xs ? QK_K : QK;
    const size_t bytes = xs ? 136 : 18;
    for (int64_t ib = 0; ib < n / sbs; ++ib, y += bytes)
        iq4_super(x + sbs * ib, sbs, qw ? qw + sbs * ib : NULL, y, y + 2, y + 4,
                  y + (xs ? 8 : 2));
}

/* ---- k-quants: super-blocks of 256 ------------------------------------------ */

/* Pack 256 2-bit codes: byte j/4 + l of each 128 holds elements l, l + 32,
 * l + 64, l + 96. */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* q2_K: 16 blocks of 16, codes 0..3 with a 4-bit scale and min each. */
static void quantize_q2_K(const float *x, int64_t n, const float *qw, uint8_t *y)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, y += 84) {
        uint8_t L[QK_K], *scl = y, *qs = y + 16;
        float mins[16], scales[16];
        float dm, mm;
        if (!qw) {
            float max_scale = 0, max_min = 0, wa[QK_K];
            for (int l = 0; l < QK_K; ++l)
                wa[l] = fabsf(x[l]);
            make_qkx_blocks(16, 16, 3, x, wa, L, scales, mins, -0.5f, 0.1f, 15, 1, 0);
            for (int j = 0; j < 16; ++j) {
                if (scales[j] > max_scale)
                    max_scale = scales[j];
                if (mins[j] > max_min)
                    max_min = mins[j];
            }
            const float q4scale = 15.f;
            if (max_scale > 0) {
                float iscale = q4scale / max_scale;
                for (int j = 0; j < 16; ++j)
                    scl[j] = (uint8_t)nearest_int(iscale * scales[j]);
                put_f16(y + 80, max_scale / q4scale);
            } else {
                memset(scl, 0, 16);
                put_f16(y + 80, 0.f);
            }
            if (max_min > 0) {
                float iscale = q4scale / max_min;
                for (int j = 0; j < 16; ++j)
                    scl[j] = (uint8_t)(scl[j] | nearest_int(iscale * mins[j]) << 4);
                put_f16(y + 82, max_min / q4scale);
            } else {
                put_f16(y + 82, 0.f);
            }
        } else {
            float sw[16] = {0};
            uint8_t Ls[16], Lm[16];
            float sumx2 = 0;
            for (int j = 0; j < QK_K; ++j)
                sumx2 += x[j] * x[j];
            float sigma2 = sumx2 / QK_K;
            float wa[QK_K];
            for (int j = 0; j < 16; ++j) {
                importance(qw + QK_K * i + 16 * j, x + 16 * j, 16, sigma2, wa + 16 * j);
                for (int l = 0; l < 16; ++l)
                    sw[j] += wa[16 * j + l];
            }
            make_qkx_blocks(16, 16, 3, x, wa, L, scales, mins, -0.9f, 0.05f, 36, 0, 1);
            put_f16(y + 80, make_qp_quants(16, 15, scales, Ls, sw));
            put_f16(y + 82, make_qp_quants(16, 15, mins, Lm, sw));
            for (int j = 0; j < 16; ++j)
                scl[j] = (uint8_t)(Ls[j] | Lm[j] << 4);
        }
        dm = get_f16(y + 80);
        mm = get_f16(y + 82);
        for (int j = 0; j < 16; ++j) {
            const float d = dm * (float)(scl[j] & 0xF);
            if (!d)
                continue;
            const float m = mm * (float)(scl[j] >> 4);
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = (uint8_t)imax(0, imin(3, nearest_int((x[16 * j + ii] + m) / d)));
        }
        pack_2bit(L, qs);
    }
}

/* q3_K's 16 signed 6-bit scales (stored + 32): low nibbles in bytes 0..7,
 * the high two bits in bytes 8..11. */
static void q3_pack_scale(uint8_t *s, int j, int l)
{
    if (j < 8)
        s[j] = (uint8_t)(l & 0xF);
    else
        s[j - 8] = (uint8_t)(s[j - 8] | (l & 0xF) << 4);
    l >>= 4;
    s[j % 4 + 8] = (uint8_t)(s[j % 4 + 8] | l << (2 * (j / 4)));
}

static int q3_scale(const uint8_t *s, int j)
{
    int8_t sc = (int8_t)(j < 8 ? s[j] & 0xF : s[j - 8] >> 4);
    return (int8_t)((sc | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
}

/* q3_K: 16 blocks of 16, codes -4..3 with a signed 6-bit scale each. */
static void quantize_q3_K(const float *x, int64_t n, const float *qw, uint8_t *y)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, y += 110) {
        int8_t L[QK_K];
        float scales[16];
        uint8_t *hmask = y, *qs = y + 32, *s = y + 96;
        memset(s, 0, 12);
        if (!qw) {
            float max_scale = 0, amax = 0;
            for (int j = 0; j < 16; ++j) {
                scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j, 1);
                float scale = fabsf(scales[j]);
                if (scale > amax) {
                    amax = scale;
                    max_scale = scales[j];
                }
            }
            if (max_scale) {
                float iscale = -32.f / max_scale;
                for (int j = 0; j < 16; ++j) {
                    int8_t l = (int8_t)nearest_int(iscale * scales[j]);
                    q3_pack_scale(s, j, imax(-32, imin(31, l)) + 32);
                }
                put_f16(y + 108, 1 / iscale);
            } else {
                put_f16(y + 108, 0.f);
            }
        } else {
            float w[16], sw[16];
            int8_t Ls[16];
            float sumx2 = 0;
            for (int j = 0; j < QK_K; ++j)
                sumx2 += x[j] * x[j];
            float sigma2 = 2 * sumx2 / QK_K;
            for (int j = 0; j < 16; ++j) {
                importance(qw + QK_K * i + 16 * j, x + 16 * j, 16, sigma2, w);
                float sumw = 0;
                for (int l = 0; l < 16; ++l)
                    sumw += w[l];
                sw[j] = sumw;
                scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, w);
            }
            float d_block = make_qx_quants(16, 32, scales, Ls, 1, sw);
            for (int j = 0; j < 16; ++j)
                q3_pack_scale(s, j, Ls[j]);
            put_f16(y + 108, d_block);
        }
        const float dall = get_f16(y + 108);
        for (int j = 0; j < 16; ++j) {
            float d = dall * (float)q3_scale(s, j);
            if (!d)
                continue;
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = (int8_t)(imax(-4, imin(3, nearest_int(x[16 * j + ii] / d))) + 4);
        }
        memset(hmask, 0, 32);
        int m = 0;
        uint8_t hm = 1;
        for (int j = 0; j < QK_K; ++j) {
            if (L[j] > 3) {
                hmask[m] |= hm;
                L[j] = (int8_t)(L[j] - 4);
            }
            if (++m == QK_K / 8) {
                m = 0;
                hm = (uint8_t)(hm << 1);
            }
        }
        pack_2bit((const uint8_t *)L, qs);
    }
}

/* q4_K / q5_K's 8 scales and 8 mins, 6 bits each, in 12 bytes. */
static void k4_pack_scales(uint8_t *s, const uint8_t *ls, const uint8_t *lm)
{
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] = (uint8_t)(s[j - 4] | ((ls[j] >> 4) << 6));
            s[j] = (uint8_t)(s[j] | ((lm[j] >> 4) << 6));
        }
    }
}

static void k4_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* q4_K (bits 4) and q5_K (bits 5): 8 blocks of 32, codes 0..2^b - 1 with a
 * 6-bit scale and min each under fp16 d and dmin.  L receives the codes. */
static void quantize_k45_block(const float *x, const float *qw, int bits, uint8_t *y, uint8_t *L)
{
    const int nmax = (1 << bits) - 1;
    uint8_t ls[8], lm[8], *s = y + 4;
    float mins[8], scales[8];
    memset(s, 0, 12);
    if (!qw) {
        float max_scale = 0, max_min = 0, wa[QK_K];
        for (int j = 0; j < 8; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l)
                sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; ++l)
                wa[32 * j + l] = av_x + fabsf(x[32 * j + l]);
        }
        make_qkx_blocks(8, 32, nmax, x, wa, L, scales, mins, bits == 4 ? -1.f : -0.5f, 0.1f,
                        bits == 4 ? 20 : 15, 0, 0);
        for (int j = 0; j < 8; ++j) {
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < 8; ++j) {
            ls[j] = (uint8_t)imin(63, (uint8_t)nearest_int(inv_scale * scales[j]));
            lm[j] = (uint8_t)imin(63, (uint8_t)nearest_int(inv_min * mins[j]));
        }
        k4_pack_scales(s, ls, lm);
        put_f16(y, max_scale / 63.f);
        put_f16(y + 2, max_min / 63.f);
    } else {
        float sw[8];
        float sum_x2 = 0;
        for (int l = 0; l < QK_K; ++l)
            sum_x2 += x[l] * x[l];
        float sigma2 = 2 * sum_x2 / QK_K;
        float wa[QK_K];
        for (int j = 0; j < 8; ++j) {
            importance(qw + 32 * j, x + 32 * j, 32, sigma2, wa + 32 * j);
            float sumw = 0;
            for (int l = 0; l < 32; ++l)
                sumw += wa[32 * j + l];
            sw[j] = sumw;
        }
        make_qkx_blocks(8, 32, nmax, x, wa, L, scales, mins, -0.9f, 0.05f, 36, 0, 1);
        float d_block = make_qp_quants(8, 63, scales, ls, sw);
        float m_block = make_qp_quants(8, 63, mins, lm, sw);
        for (int j = 0; j < 8; ++j) {
            ls[j] = (uint8_t)imin(63, ls[j]);
            lm[j] = (uint8_t)imin(63, lm[j]);
        }
        k4_pack_scales(s, ls, lm);
        put_f16(y, d_block);
        put_f16(y + 2, m_block);
    }
    const float dd = get_f16(y), dmin = get_f16(y + 2);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        k4_scale_min(j, s, &sc, &m);
        const float d = dd * (float)sc;
        if (!d)
            continue;
        const float dm = dmin * (float)m;
        for (int ii = 0; ii < 32; ++ii)
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + ii] + dm) / d)));
    }
}

static void quantize_q4_K(const float *x, int64_t n, const float *qw, uint8_t *y)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, y += 144) {
        uint8_t L[QK_K], *q = y + 16;
        quantize_k45_block(x, qw ? qw + QK_K * i : NULL, 4, y, L);
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; ++l)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void quantize_q5_K(const float *x, int64_t n, const float *qw, uint8_t *y)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, y += 176) {
        uint8_t L[QK_K], *qh = y + 16, *ql = y + 48;
        quantize_k45_block(x, qw ? qw + QK_K * i : NULL, 5, y, L);
        memset(qh, 0, 32);
        uint8_t m1 = 1, m2 = 2;
        for (int k = 0; k < QK_K; k += 64, ql += 32) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[k + j], l2 = L[k + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

/* q6_K: 16 blocks of 16, codes -32..31 with a signed 8-bit scale each. */
static void quantize_q6_K(const float *x, int64_t n, const float *qw, uint8_t *y)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, y += 210) {
        int8_t L[QK_K];
        float scales[16];
        uint8_t *ql = y, *qh = y + 128;
        int8_t sc[16];
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ++ib) {
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1,
                                        qw ? qw + QK_K * i + 16 * ib : NULL);
            const float abs_scale = fabsf(scales[ib]);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(y, 0, 210);
            continue;
        }
        float iscale = -128.f / max_scale;
        put_f16(y + 208, 1 / iscale);
        for (int ib = 0; ib < 16; ++ib)
            sc[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
        memcpy(y + 192, sc, 16);
        const float dd = get_f16(y + 208);
        for (int j = 0; j < 16; ++j) {
            float d = dd * (float)sc[j];
            if (!d)
                continue;
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * j + ii] / d))) + 32);
        }
        const uint8_t *U = (const uint8_t *)L;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                ql[l] = (uint8_t)((U[j + l] & 0xF) | (U[j + l + 64] & 0xF) << 4);
                ql[l + 32] = (uint8_t)((U[j + l + 32] & 0xF) | (U[j + l + 96] & 0xF) << 4);
                qh[l] = (uint8_t)((U[j + l] >> 4) | ((U[j + l + 32] >> 4) << 2) |
                                  ((U[j + l + 64] >> 4) << 4) | ((U[j + l + 96] >> 4) << 6));
            }
        }
    }
}

/* ---- the float types ----------------------------------------------------------- */

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffff) > 0x7f800000)          /* NaN: quiet it */
        return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);   /* nearest, ties to even */
}

/* ---- dispatch ----------------------------------------------------------------- */

int bp_ggml_can_quantize(int type)
{
    switch (type) {
    case BP_GGML_F32: case BP_GGML_F16: case BP_GGML_BF16:
    case BP_GGML_Q4_0: case BP_GGML_Q4_1: case BP_GGML_Q5_0: case BP_GGML_Q5_1:
    case BP_GGML_Q8_0: case BP_GGML_Q2_K: case BP_GGML_Q3_K: case BP_GGML_Q4_K:
    case BP_GGML_Q5_K: case BP_GGML_Q6_K: case BP_GGML_IQ4_NL: case BP_GGML_IQ4_XS:
        return 1;
    }
    return 0;
}

uint64_t bp_ggml_quantize_row(int type, const float *x, int64_t n, const float *qw, void *dst)
{
    uint64_t bytes = bp_ggml_row_bytes(type, n);
    uint8_t *y = dst;
    if (!bp_ggml_can_quantize(type) || !bytes)
        return 0;
    switch (type) {
    case BP_GGML_F32: memcpy(y, x, (size_t)n * 4); break;
    case BP_GGML_F16:
        for (int64_t j = 0; j < n; j++)
            put_f16(y + 2 * j, x[j]);
        break;
    case BP_GGML_BF16:
        for (int64_t j = 0; j < n; j++) {
            uint16_t h = f32_to_bf16(x[j]);
            y[2 * j] = (uint8_t)(h & 255);
            y[2 * j + 1] = (uint8_t)(h >> 8);
        }
        break;
    case BP_GGML_Q4_0: quantize_q_01(x, n, qw, y, 4, 0); break;
    case BP_GGML_Q4_1: quantize_q_01(x, n, qw, y, 4, 1); break;
    case BP_GGML_Q5_0: quantize_q_01(x, n, qw, y, 5, 0); break;
    case BP_GGML_Q5_1: quantize_q_01(x, n, qw, y, 5, 1); break;
    case BP_GGML_Q8_0: quantize_q8_0(x, n, y); break;
    case BP_GGML_Q2_K: quantize_q2_K(x, n, qw, y); break;
    case BP_GGML_Q3_K: quantize_q3_K(x, n, qw, y); break;
    case BP_GGML_Q4_K: quantize_q4_K(x, n, qw, y); break;
    case BP_GGML_Q5_K: quantize_q5_K(x, n, qw, y); break;
    case BP_GGML_Q6_K: quantize_q6_K(x, n, qw, y); break;
    case BP_GGML_IQ4_NL: quantize_iq4(x, n, qw, y, 0); break;
    case BP_GGML_IQ4_XS: quantize_iq4(x, n, qw, y, 1); break;
    }
    return bytes;
}

/* ---- dequantization (ggml's dequantize_row_*, the same float operations) ----------- */

static void dequantize_q_01(const uint8_t *b, int64_t n, float *y, int bits, int with_min)
{
    const size_t bytes = (size_t)(with_min ? 4 : 2) + (bits == 5 ? 4 : 0) + 16;
    for (int64_t i = 0; i < n / QK; i++, b += bytes, y += QK) {
        const float d = get_f16(b), m = with_min ? get_f16(b + 2) : 0;
        const uint8_t *qh = b + (with_min ? 4 : 2), *qs = qh + (bits == 5 ? 4 : 0);
        uint32_t h = bits == 5 ? (uint32_t)qh[0] | (uint32_t)qh[1] << 8 |
                                 (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24 : 0;
        const int off = with_min ? 0 : 1 << (bits - 1);
        for (int j = 0; j < 16; ++j) {
            const int x0 = ((qs[j] & 0x0F) | (int)(((h >> j) << 4) & 0x10)) - off;
            const int x1 = ((qs[j] >> 4) | (int)((h >> (j + 12)) & 0x10)) - off;
            y[j] = with_min ? (float)x0 * d + m : (float)x0 * d;
            y[j + 16] = with_min ? (float)x1 * d + m : (float)x1 * d;
        }
    }
}

static void dequantize_k(int type, const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n / QK_K; i++) {
        switch (type) {
        case BP_GGML_Q2_K: {
            const float d = get_f16(b + 80), min = get_f16(b + 82);
            const uint8_t *q = b + 16;
            int is = 0;
            for (int k = 0; k < QK_K; k += 128, q += 32)
                for (int shift = 0; shift < 8; shift += 2)
                    for (int half = 0; half < 2; half++) {
                        uint8_t sc = b[is++];
                        float dl = d * (float)(sc & 0xF), ml = min * (float)(sc >> 4);
                        for (int l = 0; l < 16; ++l)
                            *y++ = dl * (float)((int8_t)((q[l + 16 * half] >> shift) & 3)) - ml;
                    }
            b += 84;
            break;
        }
        case BP_GGML_Q3_K: {
            const float d_all = get_f16(b + 108);
            const uint8_t *q = b + 32, *hm = b;
            uint8_t m = 1;
            int is = 0;
            for (int k = 0; k < QK_K; k += 128, q += 32)
                for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1))
                    for (int half = 0; half < 2; half++) {
                        float dl = d_all * (float)q3_scale(b + 96, is++);
                        for (int l = 0; l < 16; ++l) {
                            int o = l + 16 * half;
                            *y++ = dl * (float)((int8_t)((q[o] >> shift) & 3) -
                                                ((hm[o] & m) ? 0 : 4));
                        }
                    }
            b += 110;
            break;
        }
        case BP_GGML_Q4_K:
        case BP_GGML_Q5_K: {
            const int five = type == BP_GGML_Q5_K;
            const float d = get_f16(b), min = get_f16(b + 2);
            const uint8_t *s = b + 4, *qh = b + 16, *ql = b + (five ? 48 : 16);
            uint8_t u1 = 1, u2 = 2;
            for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2) {
                uint8_t sc, m;
                k4_scale_min(is, s, &sc, &m);
                const float d1 = d * (float)sc, m1 = min * (float)m;
                k4_scale_min(is + 1, s, &sc, &m);
                const float d2 = d * (float)sc, m2 = min * (float)m;
                for (int l = 0; l < 32; ++l)
                    *y++ = d1 * (float)((ql[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
                for (int l = 0; l < 32; ++l)
                    *y++ = d2 * (float)((ql[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
                u1 = (uint8_t)(u1 << 2);
                u2 = (uint8_t)(u2 << 2);
            }
            b += five ? 176 : 144;
            break;
        }
        case BP_GGML_Q6_K: {
            const float d = get_f16(b + 208);
            const uint8_t *ql = b, *qh = b + 128;
            const int8_t *sc = (const int8_t *)(b + 192);
            for (int k = 0; k < QK_K; k += 128, y += 128, ql += 64, qh += 32, sc += 8) {
                for (int l = 0; l < 32; ++l) {
                    int is = l / 16;
                    const int8_t q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * (float)sc[is + 0] * (float)q1;
                    y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                    y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                    y[l + 96] = d * (float)sc[is + 6] * (float)q4;
                }
            }
            b += 210;
            break;
        }
        }
    }
}

static void dequantize_iq4(const uint8_t *b, int64_t n, float *y, int xs)
{
    const int sbs = xs ? QK_K : QK;
    for (int64_t i = 0; i < n / sbs; i++, b += xs ? 136 : 18) {
        const float d = get_f16(b);
        const uint8_t *qs = b + (xs ? 8 : 2);
        const uint16_t sh = (uint16_t)(b[2] | b[3] << 8);
        for (int ib = 0; ib < sbs / QK; ib++, qs += 16, y += QK) {
            float dl = d;
            if (xs) {
                const int ls = ((b[4 + ib / 2] >> 4 * (ib % 2)) & 0xf) | (((sh >> 2 * ib) & 3) << 4);
                dl = d * (float)(ls - 32);
            }
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * (float)iq4nl_values[qs[j] & 0xf];
                y[j + 16] = dl * (float)iq4nl_values[qs[j] >> 4];
            }
        }
    }
}

int bp_ggml_dequantize_row(int type, const void *src, int64_t n, float *y)
{
    const uint8_t *b = src;
    if (!bp_ggml_can_quantize(type) || !bp_ggml_row_bytes(type, n))
        return -1;
    switch (type) {
    case BP_GGML_F32: memcpy(y, b, (size_t)n * 4); break;
    case BP_GGML_F16:
        for (int64_t j = 0; j < n; j++)
            y[j] = get_f16(b + 2 * j);
        break;
    case BP_GGML_BF16:
        for (int64_t j = 0; j < n; j++)
            y[j] = bp_bf16_to_f32((uint16_t)(b[2 * j] | b[2 * j + 1] << 8));
        break;
    case BP_GGML_Q4_0: dequantize_q_01(b, n, y, 4, 0); break;
    case BP_GGML_Q4_1: dequantize_q_01(b, n, y, 4, 1); break;
    case BP_GGML_Q5_0: dequantize_q_01(b, n, y, 5, 0); break;
    case BP_GGML_Q5_1: dequantize_q_01(b, n, y, 5, 1); break;
    case BP_GGML_Q8_0:
        for (int64_t i = 0; i < n / QK; i++, b += 34)
            for (int j = 0; j < QK; j++)
                *y++ = (float)(int8_t)b[2 + j] * get_f16(b);
        break;
    case BP_GGML_IQ4_NL: dequantize_iq4(b, n, y, 0); break;
    case BP_GGML_IQ4_XS: dequantize_iq4(b, n, y, 1); break;
    default: dequantize_k(type, b, n, y); break;
    }
    return 0;
}
