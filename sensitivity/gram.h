/*
 * gram.h - exact output error of a quantized layer from Gram matrices.
 *
 * With dW = What - W and dX = Xbar - X (Xbar = quantized activations):
 *   What Xbar^T - W X^T = dW Xbar^T + W dX^T
 * so each output row r contributes
 *   e_r = dW_r Gb dW_r^T + 2 dW_r c_r + e0_r,
 *   Gb = Xbar^T Xbar / n,  c_r = (Xbar^T dX / n) W_r^T,  e0_r = W_r (dX^T dX / n) W_r^T
 * Gb is built once per activation width (n d^2 flops); c and e0 once per
 * weight matrix, from the d x d Grams Xbar^T dX and dX^T dX (3 n d^2 + 4 rows
 * d^2) or from the rows as (W dX^T) Xbar (4 n d rows), whichever is
 * cheaper; each weight candidate then costs one symmetric
 * product dW Gb: 2 rows d^2 flops (unquantized activations: Gb = X^T X and
 * no c, e0).  Everything is accumulated in double, or (bp_gram_build_prec,
 * single) Gb's products run in float32 under a check.  When there are fewer
 * calibration rows than that saves (bp_gram_keep_rows), the scaled rows are
 * kept instead, W X^T is formed once per layer (a bp_ycache carries it
 * across activation widths), and each candidate costs one dgemm What Xbar^T
 * (2 n d flops per row).
 */
#ifndef BP_GRAM_H
#define BP_GRAM_H

#include <stdint.h>

#include "../common/bp_error.h"

typedef struct bp_gram {
    int64_t d;                /* input columns covered */
    double *G;                /* d x d, upper triangle valid, scaled by 1/n:
                               * Xbar^T Xbar (X^T X without quantized inputs) */
    const float *X, *Xq;      /* the inputs (quantized: Xq != NULL), borrowed */
    int64_t ld, col0;
    const float *w_of;        /* the W whose terms below are formed */
    double *Q, *e0, *WS;      /* rows x d: W H^T; rows: W_r S W_r^T; rows x d: W S */
    int totals;               /* Q and e0_total formed for layer totals (e0 may be NULL) */
    int q_borrowed;           /* Q is another gram's (bp_gram_use_totals) */
    double e0_total;          /* sum_r e0_r */
    const void *f_of[2];      /* the factors whose 1/2 tr(F W S W^T) are kfac0[i] */
    double kfac0[2];          /* one per factor slot (BP_GRAM_FACTORS) */
    double *Z;                /* instead of G (kept rows): X / sqrt(n), n x d */
    int64_t n;                /* rows of Z */
    double *Xb;               /* with Z and quantized inputs: Xq / sqrt(n), n x d */
    const float *y_of;        /* the W whose W X^T / sqrt(n) is cached in Y */
    double *Y;                /* rows x n */
    int y_borrowed;           /* Y belongs to the attached cache */
    struct bp_ycache *yc;     /* or NULL */
    double *A, *M;            /* work buffers */
    /* single precision (bp_gram_build_prec): Gb = Gc + mu mu^T with Gc the
     * Gram of the centred Xbar from float32 chunk products summed in double,
     * kept in float for SGEMM/SSYMM; the products checked (see below) */
    int single;
    float *Gf, *Vf, *Mf;      /* d x d; rows x d work buffers */
    double *mu, *gsd;         /* d: column means of Xbar; sqrt of Gc's diagonal */
    int fell_back;            /* the check failed once: now double (G) */
    int base_borrowed;        /* G (as lent), Gf, mu, gsd belong to another gram */
    const double *G_lent;
    const struct bp_gram_stats *st;  /* built from statistics (bp_gram_build_stats), or NULL */
} bp_gram;

/* Calibration statistics of one group's d input columns over n rows, sums
 * (not means), each d x d full symmetric or d: qtq = Xbar^T Xbar, qtx =
 * Xbar^T X (NULL when the inputs are not quantized: Xbar = X), xtx = X^T X
 * and qsum = sum of Xbar's rows.  Borrowed by the grams built on them. */
typedef struct bp_gram_stats {
    int64_t n, d;
    const double *qtq, *qtx, *xtx, *qsum;
} bp_gram_stats;

/* W X^T / sqrt(n) of one weight matrix, owned by the caller and reused by
 * every kept-rows Gram built from the same inputs X (the same rows, columns
 * and n: e.g. each activation width of one layer), one Gram at a time.
 * Zero-initialise; free with bp_ycache_free. */
typedef struct bp_ycache {
    const float *W;
    double *Y;
} bp_ycache;

void bp_ycache_free(bp_ycache *c);
/* Use c for g's W X^T (kept rows only; a Gram-mode g ignores it). */
void bp_gram_attach_y(bp_gram *g, bp_ycache *c);

/* Build from columns [col0, col0 + d) of the n x ld row-major matrices X
 * and (when not NULL) Xq, the quantized activations; both are read again
 * by the first row_errors / row_energy call of each weight matrix, so they
 * must outlive g's use. */
int bp_gram_build(bp_gram *g, const float *X, const float *Xq, int64_t n,
                  int64_t ld, int64_t col0, int64_t d, bp_error *err);
/* The same, choosing explicitly: keep_rows 1 keeps the scaled rows, 0 forms
 * the Grams (bp_gram_build keeps rows when n < d). */
int bp_gram_build_mode(bp_gram *g, const float *X, const float *Xq, int64_t n, int64_t ld,
                       int64_t col0, int64_t d, int keep_rows, bp_error *err);
void bp_gram_free(bp_gram *g);

/*
 * As bp_gram_build_mode; single (Grams only) forms Gb's products in single
 * precision as above, with the final sums in double.  Each row_errors call
 * then checks itself: a few rows' forms dW_r Gb dW_r^T are computed again
 * exactly from the rows, their float error, scaled to every row by the
 * row's bound (sum_j |dW_rj| sqrt(Gc_jj))^2 and taken 4 times, must stay
 * under 1e-6 of the row's error (cross terms included, so cancellation
 * counts); otherwise g
 * switches to double (G built from the rows) and the call is redone.  The
 * errors stay within 1e-6 relative of the double path (tests/test_gram.c:
 * random, large means, outlier channels, near-cancellation).
 */
int bp_gram_build_prec(bp_gram *g, const float *X, const float *Xq, int64_t n, int64_t ld,
                       int64_t col0, int64_t d, int keep_rows, int single, bp_error *err);

/* The same from statistics instead of rows (every product the rows would
 * give: Gb = qtq / n, H = (qtq - qtx) / n, S = (qtq - qtx - qtx^T + xtx) / n);
 * single as above, its check computing the sampled rows' forms from qtq in
 * double.  st must outlive g's use. */
int bp_gram_build_stats(bp_gram *g, const bp_gram_stats *st, int single, bp_error *err);

/* H (d x d, full) = alpha * Gb of a Gram-mode g (single: Gc in float plus
 * mu mu^T, in double).  GPTQ's Hessian in single precision is this with
 * alpha = 2, so the Gram and the Hessian of the same inputs are one. */
int bp_gram_hessian(const bp_gram *g, double alpha, double *H, bp_error *err);

/* dst: a Gram-mode g (not kept rows) of the same bytes as src's inputs, now
 * read from X, Xq (columns col0.., stride ld), lent src's Grams (not
 * copied: src must outlive dst).  For inputs shared by several layers or
 * measurements. */
int bp_gram_borrow(bp_gram *dst, const bp_gram *src, const float *X, const float *Xq,
                   int64_t ld, int64_t col0, bp_error *err);
/* The same for statistics: dst reads st (equal to src's) from now on. */
int bp_gram_borrow_stats(bp_gram *dst, const bp_gram *src, const bp_gram_stats *st,
                         bp_error *err);
/* owner takes g's Grams (g keeps using them, borrowed; owner must outlive
 * g's use of them and is freed with bp_gram_free). */
void bp_gram_lend(bp_gram *owner, bp_gram *g);

/* Keep rows rather than form Grams?  The cheaper in flops for n rows, d
 * inputs, `rows` outputs, quantized inputs or not, n_cand weight candidates,
 * a dense output factor (f_rows outputs, 0 without) and the Grams' products
 * in single precision or not (single ones counted at half the cost). */
int bp_gram_keep_rows(int64_t n, int64_t d, int64_t rows, int quantized, size_t n_cand,
                      int64_t f_rows, int single);
/* Does single precision save more than its check costs (in flops) for n
 * rows, d inputs, `rows` outputs and n_cand candidates, on products large
 * enough for SGEMM to run faster than DGEMM (d >= BP_GRAM_SINGLE_MIN_IN)?
 * Small layers are done in double: on the e2e ViT (in <= 256) the float
 * path took 0.30 s against double's 0.24 s. */
/* The flops of the kept rows' route for n_cand candidates (W X^T once,
 * What Xbar^T per candidate; f_rows: a dense factor's rows, or 0). */
double bp_gram_kept_flops(int64_t n, int64_t d, int64_t rows, size_t n_cand, int64_t f_rows);
enum { BP_GRAM_SINGLE_MIN_IN = 512 };
int bp_gram_single_pays(int64_t n, int64_t d, int64_t rows, size_t n_cand);

/* row_err[r] = ||What_r Xbar^T - W_r X^T||^2 / n for rows x d matrices W,
 * What (row stride ldw). */
int bp_gram_row_errors(bp_gram *g, const float *W, const float *What,
                       int64_t rows, int64_t ldw, double *row_err, bp_error *err);

/* One group's output Fisher (layer.h's bp_ofactor) in double, over the
 * `rows` output rows of a bp_gram_row_errors call. */
typedef struct bp_gram_fisher {
    int64_t rank;             /* 0: F is dense, rows x rows */
    const double *F;
    const double *U, *s, *d;  /* rank x rows, rank, rows */
    const double *n;          /* rows: unit null direction of the remainder, or NULL */
} bp_gram_fisher;

/* The output factors of one row_errors call, each giving one trace
 * 1/2 tr(F E): the loss Fisher (metric kfac) and the decision Fisher
 * (metric margin).  NULL where the layer has none. */
enum { BP_GRAM_FACTORS = 2 };
typedef struct bp_gram_factors {
    const bp_gram_fisher *f[BP_GRAM_FACTORS];
} bp_gram_factors;

/*
 * The same row errors and, with f, the loss increase K-FAC predicts:
 *   *kfac = 1/2 tr(F E),  E = E_n[dy dy^T] = (What Xbar^T - W X^T)(...)^T / n
 * Grams: E = dW (Gb dW^T + 2 Q^T) + W S W^T up to its antisymmetric part,
 * which F (symmetric) does not see, so tr(F E) = sum (F dW) o (dW Gb + 2 Q)
 * + tr(F W S W^T), the last once per weight matrix;
 * kept rows: E = D D^T with D = (What Xbar^T - W X^T) / sqrt(n), so
 * tr(F E) = sum (F D) o D.  Low rank: tr(F E) = sum_i s_i u_i^T E u_i +
 * tr(P D P E), which is sum_r d_r E_rr without a null direction n and
 * otherwise tr(D E) - 2 (D n)^T E n + (n^T D n)(n^T E n).  f NULL: *kfac is
 * not touched.
 */
int bp_gram_row_errors_kfac(bp_gram *g, const float *W, const float *What, int64_t rows,
                            int64_t ldw, const bp_gram_fisher *f, double *row_err,
                            double *kfac, bp_error *err);
/* The same with several factors at once (fs may be NULL): traces[i] =
 * 1/2 tr(F_i E) for every factor present (0 where absent), from one
 * product dW Gb per candidate. */
int bp_gram_row_errors_factors(bp_gram *g, const float *W, const float *What, int64_t rows,
                               int64_t ldw, const bp_gram_factors *fs, double *row_err,
                               double traces[BP_GRAM_FACTORS], bp_error *err);

/* row_energy[r] = ||W_r X^T||^2 / n (uses the X^T X block only). */
int bp_gram_row_energy(bp_gram *g, const float *W, int64_t rows,
                       int64_t ldw, double *row_energy, bp_error *err);

/*
 * Layer totals, where no row's error is needed (no grad2, no output factor):
 * sum_r e_r = <dW^T dW, Gb> + 2 <dW, W H^T> + <W^T W, S> exactly, in double.
 * bp_gram_outer forms M = (What - W)^T (What - W) (What NULL: W^T W), d x d,
 * upper triangle, once per weights: every activation width's Gram reuses it,
 * where the rows' route pays a d x d product per candidate and width.
 * bp_gram_total_error takes MW = W^T W and MdW = dW^T dW; g must hold a
 * double Gram (not kept rows, not single).  bp_gram_total_energy:
 * sum_r ||W_r X^T||^2 / n.
 */
int bp_gram_outer(const float *W, const float *What, int64_t rows, int64_t ldw, int64_t d,
                  double *M, bp_error *err);
/*
 * Single precision for dW^T dW (precision: single): M formed from float32
 * products of 1,024-row chunks of dW, summed in double (the accumulation
 * in float is at most 1,024 terms long).  Its rounding may only meet the
 * centred Gram: bp_gram_t1_centred returns <dW^T dW, Gb> as
 * <M, gs Gb - mu mu^T> + ||dW mu||^2 (Gb: d x d, upper triangle read,
 * scaled by gs; mu: Xbar's column means), the mean's part exactly in
 * double, so that weights whose errors cancel along the mean (SQuant's row
 * sums) are not swamped by the float error of a large mean.  *sigma
 * estimates that float error before any of it is known, from the
 * accumulation length k, the unit roundoff u and the centred variances
 * c_j: 2 u sqrt(k) sqrt(sum_r (sum_j c_j dW_rj^2)^2), the standard
 * deviation of <dM, Gc> when each entry's rounding is an independent
 * random walk, bounded above with Gc_ij^2 <= c_i c_j (c from
 * bp_gram_centred_diag).
 */
int bp_gram_outer_single(const float *W, const float *What, int64_t rows, int64_t ldw,
                         int64_t d, double *M, bp_error *err);
double bp_gram_t1_centred(const double *M, const double *Gb, double gs, const double *mu,
                          const double *c, const float *W, const float *What, int64_t rows,
                          int64_t ldw, int64_t d, double *sigma);
/* c_j = max(gs Gb_jj - mu_j^2, 0): the centred diagonal, for the estimate. */
void bp_gram_centred_diag(const double *Gb, double gs, const double *mu, int64_t d, double *c);
int bp_gram_total_error(bp_gram *g, const float *W, const float *What, int64_t rows,
                        int64_t ldw, const double *MW, const double *MdW, double *total,
                        bp_error *err);
int bp_gram_total_energy(bp_gram *g, const float *W, int64_t rows, int64_t ldw,
                         const double *MW, double *energy, bp_error *err);
/* The cross terms alone, 2 <dW, W H^T> + <W^T W, S> (0 without quantized
 * inputs), for a <dW^T dW, Gb> contracted elsewhere; and that contraction,
 * <A, B> over the upper triangles of symmetric d x d A and B. */
int bp_gram_total_cross(bp_gram *g, const float *W, const float *What, int64_t rows,
                        int64_t ldw, const double *MW, double *cross, bp_error *err);
double bp_gram_contract(const double *A, const double *B, int64_t d);
/* The quantizers of one layer share the totals' cross terms of each
 * activation width: owner (a cache's gram, bp_gram_lend) takes the W H^T
 * and sum e0 g formed (g keeps reading them); bp_gram_use_totals gives them
 * to another gram g of the same inputs when they were formed for W (the
 * same pointer: the caller makes sure it still holds the same weights, or
 * calls bp_gram_drop_totals on the owner first). */
void bp_gram_share_totals(bp_gram *owner, bp_gram *g);
int bp_gram_use_totals(bp_gram *g, const bp_gram *owner, const float *W);   /* 1: taken */
void bp_gram_drop_totals(bp_gram *owner);

/* G = alpha A^T A (full symmetric, da x da) for A = columns [xoff, xoff + d)
 * of the n x ldx matrix X, with a ones column appended when `ones` (da =
 * d + 1); accumulated in double in row chunks with dsyrk.  The Hessians of
 * GPTQ and ERQ are built with it. */
int bp_input_gram(const float *X, int64_t n, int64_t ldx, int64_t xoff, int64_t d, int ones,
                  double alpha, double *G, bp_error *err);

#endif
