/* Compiled inner loops of full-batch GD on deep linear networks (MF, MC), built by cdln.native.

   Compiled twice, with -DREAL=double -DSFX=d and with -DREAL=float -DSFX=s -DREAL_IS_FLOAT=1. Every matrix is
   row-major; layer l of batch member b lives at weights[l] + b * dims[l+1] * dims[l] (the
   (B, n_out, n_in) stacking of cdln.networks). Members are stepped one after another, each
   through all n_steps steps (its working set stays in cache), with the same arithmetic whatever
   the batch: a member trains bitwise the same in a batch as alone.

   A step: prefixes P_l = W_l ... W_0, the loss gradient G = dLoss/dE of the end-to-end matrix
   E = P_{L-1}, then for l = L-1 .. 1: U_{l-1} = W_l^T U_l (U_{L-1} = G) and
   W_l += s_l U_l P_{l-1}^T, finally W_0 += s_0 U_0, where s_l = -lr * scale_l of the member.
   Updating W_l in place is safe: later products use only W_{l-1} .. W_0 and the prefixes.

   dense_steps: G = (E - target) * obs (obs: the (d_out, d_in) loss weights, MC: mask / n_observed)
   or (E - target) * scale (obs NULL, MF). Products by BLAS ?gemm, updates of W_1.. fused into
   them (beta = 1).
   sampled_steps (MC, depth >= 2): the loss gradient is zero off the observed set, so only the
   observed entries of E = W_{L-1} P_{L-2} are formed, and G's products with P_{L-2}^T and W_{L-1}^T
   are sparse-dense; all three in one pass over the observed entries (CSR: row_ptr, cols; two sweeps
   for rows wider than 8 vectors), O(nnz k) with k = dims[L-1], instead of the dense O(d_out d_in k).
   The rest of the step is dense.

   Rounding: the paths sum in different orders (and BLAS and the compiler may fuse multiply-adds), so
   they agree with each other and with the torch path to rounding, not bitwise (tests/test_native.py).

   gemm_kind: 0 = CBLAS with 64-bit ints (OpenBLAS ILP64, as numpy ships it), 1 = CBLAS with
   32-bit ints, 2 = Fortran BLAS with 32-bit ints (MKL LP64, as torch ships it). */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef REAL
#define REAL double
#define SFX d
#endif
#ifndef REAL_IS_FLOAT
#define REAL_IS_FLOAT 0
#endif
typedef REAL real;
typedef int64_t i64;
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(CAT(cdln_, SFX), CAT(_, name))

/* Vector helpers for the observed-entries pass (AVX2 + FMA when the compiler targets it). */
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VEC_KERNELS 1
#if REAL_IS_FLOAT
#define VW 8
typedef __m256 vreal;
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
static inline float VHSUM(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#else
#define VW 4
typedef __m256d vreal;
#define VLOAD(p) _mm256_loadu_pd(p)
#define VSTORE(p, v) _mm256_storeu_pd(p, v)
#define VFMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define VADD(a, b) _mm256_add_pd(a, b)
#define VSET1(x) _mm256_set1_pd(x)
#define VZERO() _mm256_setzero_pd()
static inline double VHSUM(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
#endif
#else
#define VEC_KERNELS 0
#define VW 4
#endif

typedef void (*cblas64_t)(int, int, int, i64, i64, i64, real, const real *, i64, const real *, i64, real, real *, i64);
typedef void (*cblas32_t)(int, int, int, int, int, int, real, const real *, int, const real *, int, real, real *, int);
typedef void (*f77_t)(const char *, const char *, const int *, const int *, const int *, const real *, const real *,
                      const int *, const real *, const int *, const real *, real *, const int *);

typedef struct {
    void *fn;
    int kind;
} blas_t;

/* C = alpha op(A) op(B) + beta C, row-major; op(A) is m x k, op(B) k x n. */
static void gemm(const blas_t *blas, int ta, int tb, i64 m, i64 n, i64 k, real alpha, const real *a, i64 lda,
                 const real *b, i64 ldb, real beta, real *c, i64 ldc) {
    if (blas->kind == 0) {
        ((cblas64_t)blas->fn)(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else if (blas->kind == 1) {
        ((cblas32_t)blas->fn)(101, ta ? 112 : 111, tb ? 112 : 111, (int)m, (int)n, (int)k, alpha, a, (int)lda, b,
                              (int)ldb, beta, c, (int)ldc);
    } else { /* column-major view of the same memory: C^T = op(B)^T op(A)^T */
        const int mi = (int)n, ni = (int)m, ki = (int)k, la = (int)lda, lb = (int)ldb, lc = (int)ldc;
        ((f77_t)blas->fn)(tb ? "T" : "N", ta ? "T" : "N", &mi, &ni, &ki, &alpha, b, &lb, a, &la, &beta, c, &lc);
    }
}

static i64 max_inner(int depth, const i64 *dims) {
    i64 widest = 1;
    for (int l = 1; l < depth; l++)
        if (dims[l] > widest) widest = dims[l];
    return widest;
}

/* Scratch elements the kernels need for one member (reused across members). */
static i64 padded(i64 k) { return (k + VW - 1) / VW * VW; }

i64 FN(work_size)(int depth, const i64 *dims, int sampled, i64 nnz) {
    const i64 d_in = dims[0];
    i64 size = 2 * max_inner(depth, dims) * d_in; /* upstream ping-pong */
    for (int l = 1; l < depth - (sampled ? 1 : 0); l++) size += dims[l + 1] * d_in; /* prefixes */
    if (sampled) /* [P^T | U^T] rows, a row accumulator, the dot products at the observed entries */
        size += 2 * d_in * padded(dims[depth - 1]) + padded(dims[depth - 1]) + nnz;
    else if (depth == 1) size += dims[1] * d_in; /* G (E is W_0 itself) */
    return size;
}

/* The backward sweep below layer `top` (exclusive), from upstream u = U_top, stored (dims[top+1], d_in) with
   row stride ldu, or transposed (u_t: (d_in, dims[top+1]) with row stride ldu). Updates W_top .. W_0. */
static void backward_from(const blas_t *blas, int top, const i64 *dims, real **w, real **prefix, const real *steps,
                          i64 batch, i64 b, real *u, int u_t, i64 ldu, real **up) {
    const i64 d_in = dims[0];
    for (int l = top; l >= 1; l--) {
        real *next = up[l & 1];
        /* next = W_l^T U_l (dims[l] x d_in) with the old W_l, then W_l += s_l U_l P_{l-1}^T */
        gemm(blas, 1, u_t, dims[l], d_in, dims[l + 1], 1, w[l], dims[l], u, ldu, 0, next, d_in);
        gemm(blas, u_t, 1, dims[l + 1], dims[l], d_in, steps[l * batch + b], u, ldu, prefix[l - 1], d_in, 1, w[l],
             dims[l]);
        u = next;
        u_t = 0;
        ldu = d_in;
    }
    const real s0 = steps[b];
    real *w0 = w[0];
    if (!u_t) {
        for (i64 a = 0; a < dims[1]; a++)
            for (i64 j = 0; j < d_in; j++) w0[a * d_in + j] += s0 * u[a * ldu + j];
    } else {
        for (i64 a = 0; a < dims[1]; a++)
            for (i64 j = 0; j < d_in; j++) w0[a * d_in + j] += s0 * u[j * ldu + a];
    }
}

static void forward(const blas_t *blas, int upto, const i64 *dims, real **w, real **prefix) {
    const i64 d_in = dims[0];
    prefix[0] = w[0];
    for (int l = 1; l <= upto; l++)
        gemm(blas, 0, 0, dims[l + 1], d_in, dims[l], 1, w[l], dims[l], prefix[l - 1], d_in, 0, prefix[l], d_in);
}

int FN(dense_steps)(int depth, const i64 *dims, i64 batch, real **weights, const real *steps, const real *target,
                    const real *obs, real scale, real *work, i64 n_steps, void *gemm_fn, int gemm_kind) {
    if (depth < 1 || depth > 64) return 1;
    const blas_t blas = {gemm_fn, gemm_kind};
    const i64 d_in = dims[0], d_out = dims[depth], n = d_out * d_in, widest = max_inner(depth, dims);
    real *prefix[64], *up[2], *w[64];
    real *p = work;
    up[0] = p;
    up[1] = p + widest * d_in;
    p += 2 * widest * d_in;
    for (int l = 1; l < depth; l++) {
        prefix[l] = p;
        p += dims[l + 1] * d_in;
    }
    real *g_alone = p; /* depth 1: G cannot overwrite E = W_0 */
    for (i64 b = 0; b < batch; b++) {
        for (int l = 0; l < depth; l++) w[l] = weights[l] + b * dims[l + 1] * dims[l];
        for (i64 step = 0; step < n_steps; step++) {
            forward(&blas, depth - 1, dims, w, prefix);
            const real *e = prefix[depth - 1];
            real *g = depth > 1 ? prefix[depth - 1] : g_alone; /* G overwrites E */
            if (obs)
                for (i64 i = 0; i < n; i++) g[i] = (e[i] - target[i]) * obs[i];
            else
                for (i64 i = 0; i < n; i++) g[i] = (e[i] - target[i]) * scale;
            backward_from(&blas, depth - 1, dims, w, prefix, steps, batch, b, g, 0, d_in, up);
        }
    }
    return 0;
}

/* One pass over the observed entries, row i of W_{L-1} at a time (k = its width, kp = k padded):
   e = W_{L-1}[i] . P^T[j], g = (e - target) * obs, acc += g P^T[j], U^T[j] += g W_{L-1}[i] (old row),
   then W_{L-1}[i] += s acc (the row is not read again this step). ptu rows: [P^T[j] | U^T[j]], 2 kp wide,
   padding zero. The vector kernels below do the same with the row in registers. */
static void observed_pass_generic(i64 d_out, i64 k, const i64 *row_ptr, const i64 *cols, const real *target,
                                  const real *obs, real *top, real *ptu, real *acc, real s_top) {
    const i64 kp = padded(k);
    for (i64 i = 0; i < d_out; i++) {
        real *wi = top + i * k;
        for (i64 a = 0; a < k; a++) acc[a] = 0;
        for (i64 q = row_ptr[i]; q < row_ptr[i + 1]; q++) {
            const real *pj = ptu + cols[q] * 2 * kp;
            real *uj = ptu + cols[q] * 2 * kp + kp;
            real e = 0;
#pragma omp simd reduction(+ : e)
            for (i64 a = 0; a < k; a++) e += wi[a] * pj[a];
            const real g = (e - target[q]) * obs[q];
#pragma omp simd
            for (i64 a = 0; a < k; a++) {
                acc[a] += g * pj[a];
                uj[a] += g * wi[a];
            }
        }
        for (i64 a = 0; a < k; a++) wi[a] += s_top * acc[a];
    }
}

#if VEC_KERNELS
/* The same pass with the row of W_{L-1} and its accumulator held in KV vector registers (k <= KV * VW). */
#define DEFINE_PASS(KV)                                                                                             \
    static void observed_pass_##KV(i64 d_out, i64 k, const i64 *row_ptr, const i64 *cols, const real *target,      \
                                   const real *obs, real *top, real *ptu, real s_top) {                           \
        const i64 kp = KV * VW;                                                                                     \
        const vreal step = VSET1(s_top);                                                                            \
        for (i64 i = 0; i < d_out; i++) {                                                                           \
            real *wi = top + i * k, row[KV * VW];                                                                   \
            memset(row, 0, sizeof row);                                                                             \
            memcpy(row, wi, k * sizeof(real));                                                                      \
            vreal w[KV], acc[KV];                                                                                   \
            _Pragma("GCC unroll 8") for (int v = 0; v < KV; v++) {                                                  \
                w[v] = VLOAD(row + v * VW);                                                                         \
                acc[v] = VZERO();                                                                                   \
            }                                                                                                       \
            for (i64 q = row_ptr[i]; q < row_ptr[i + 1]; q++) {                                                     \
                real *pj = ptu + cols[q] * 2 * kp, *uj = pj + kp;                                                   \
                vreal p[KV], d0 = VZERO(), d1 = VZERO();                                                            \
                _Pragma("GCC unroll 8") for (int v = 0; v < KV; v++) {                                              \
                    p[v] = VLOAD(pj + v * VW);                                                                      \
                    if (v & 1)                                                                                      \
                        d1 = VFMA(w[v], p[v], d1);                                                                  \
                    else                                                                                            \
                        d0 = VFMA(w[v], p[v], d0);                                                                  \
                }                                                                                                   \
                const vreal g = VSET1((VHSUM(VADD(d0, d1)) - target[q]) * obs[q]);                                  \
                _Pragma("GCC unroll 8") for (int v = 0; v < KV; v++) {                                              \
                    acc[v] = VFMA(g, p[v], acc[v]);                                                                 \
                    VSTORE(uj + v * VW, VFMA(g, w[v], VLOAD(uj + v * VW)));                                         \
                }                                                                                                   \
            }                                                                                                       \
            _Pragma("GCC unroll 8") for (int v = 0; v < KV; v++) VSTORE(row + v * VW, VFMA(step, acc[v], w[v]));    \
            memcpy(wi, row, k * sizeof(real));                                                                      \
        }                                                                                                           \
    }
DEFINE_PASS(1)
DEFINE_PASS(2)
DEFINE_PASS(3)
DEFINE_PASS(4)
DEFINE_PASS(5)
DEFINE_PASS(6)
DEFINE_PASS(7)
DEFINE_PASS(8)

/* Wider rows (k > 8 VW): two sweeps over the observed entries, each in blocks of at most 8 vectors of a row
   held in registers: first the dot products (e[q] accumulates block by block), then, with g known, the
   accumulator and U^T updates. */
#define DEFINE_BLOCK(NV)                                                                                            \
    static void dots_##NV(const real *row, i64 q0, i64 q1, const i64 *cols, const real *ptu, i64 stride, i64 off, \
                          real *e) {                                                                                \
        vreal w[NV];                                                                                                \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) w[v] = VLOAD(row + v * VW);                            \
        for (i64 q = q0; q < q1; q++) {                                                                             \
            const real *pj = ptu + cols[q] * stride + off;                                                          \
            vreal d0 = VZERO(), d1 = VZERO();                                                                       \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) {                                                  \
                if (v & 1)                                                                                          \
                    d1 = VFMA(w[v], VLOAD(pj + v * VW), d1);                                                        \
                else                                                                                                \
                    d0 = VFMA(w[v], VLOAD(pj + v * VW), d0);                                                        \
            }                                                                                                       \
            e[q - q0] += VHSUM(VADD(d0, d1));                                                                       \
        }                                                                                                           \
    }                                                                                                               \
    static void axpys_##NV(real *row, i64 q0, i64 q1, const i64 *cols, real *ptu, i64 stride, i64 kp, i64 off,     \
                           const real *g, real s) {                                                                 \
        vreal w[NV], acc[NV];                                                                                       \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) {                                                      \
            w[v] = VLOAD(row + v * VW);                                                                             \
            acc[v] = VZERO();                                                                                       \
        }                                                                                                           \
        for (i64 q = q0; q < q1; q++) {                                                                             \
            real *pj = ptu + cols[q] * stride + off, *uj = pj + kp;                                                 \
            const vreal gq = VSET1(g[q - q0]);                                                                      \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) {                                                  \
                acc[v] = VFMA(gq, VLOAD(pj + v * VW), acc[v]);                                                      \
                VSTORE(uj + v * VW, VFMA(gq, w[v], VLOAD(uj + v * VW)));                                            \
            }                                                                                                       \
        }                                                                                                           \
        const vreal step = VSET1(s);                                                                                \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) VSTORE(row + v * VW, VFMA(step, acc[v], w[v]));       \
    }
DEFINE_BLOCK(1)
DEFINE_BLOCK(2)
DEFINE_BLOCK(3)
DEFINE_BLOCK(4)
DEFINE_BLOCK(5)
DEFINE_BLOCK(6)
DEFINE_BLOCK(7)
DEFINE_BLOCK(8)

typedef void (*dots_t)(const real *, i64, i64, const i64 *, const real *, i64, i64, real *);
typedef void (*axpys_t)(real *, i64, i64, const i64 *, real *, i64, i64, i64, const real *, real);
static const dots_t DOTS[9] = {NULL, dots_1, dots_2, dots_3, dots_4, dots_5, dots_6, dots_7, dots_8};
static const axpys_t AXPYS[9] = {NULL, axpys_1, axpys_2, axpys_3, axpys_4, axpys_5, axpys_6, axpys_7, axpys_8};

static void observed_pass_blocked(i64 d_out, i64 k, const i64 *row_ptr, const i64 *cols, const real *target,
                                  const real *obs, real *top, real *ptu, real *e, real s_top) {
    /* Blocks of the row outermost: each sweep over the rows touches one 8-vector slice of the [P^T | U^T]
       panel, which stays in cache when the whole panel does not (wide rows: the original DLN). */
    const i64 kp = padded(k), stride = 2 * kp, block = 8 * VW, nnz = row_ptr[d_out];
    real row[8 * VW];
    memset(e, 0, nnz * sizeof(real));
    for (i64 off = 0; off < kp; off += block) {
        const i64 nv = (kp - off < block ? kp - off : block) / VW, valid = (k - off < block ? k - off : block);
        memset(row, 0, sizeof row);
        for (i64 i = 0; i < d_out; i++) {
            memcpy(row, top + i * k + off, valid * sizeof(real));
            DOTS[nv](row, row_ptr[i], row_ptr[i + 1], cols, ptu, stride, off, e + row_ptr[i]);
        }
    }
    for (i64 q = 0; q < nnz; q++) e[q] = (e[q] - target[q]) * obs[q];
    for (i64 off = 0; off < kp; off += block) {
        const i64 nv = (kp - off < block ? kp - off : block) / VW, valid = (k - off < block ? k - off : block);
        memset(row, 0, sizeof row);
        for (i64 i = 0; i < d_out; i++) {
            memcpy(row, top + i * k + off, valid * sizeof(real));
            AXPYS[nv](row, row_ptr[i], row_ptr[i + 1], cols, ptu, stride, kp, off, e + row_ptr[i], s_top);
            memcpy(top + i * k + off, row, valid * sizeof(real)); /* this slice of row i is not read again */
        }
    }
}
#endif

static void observed_pass(i64 d_out, i64 k, const i64 *row_ptr, const i64 *cols, const real *target, const real *obs,
                          real *top, real *ptu, real *acc, real *e, real s_top) {
#if VEC_KERNELS
    switch (padded(k) / VW) {
    case 1: observed_pass_1(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    case 2: observed_pass_2(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    case 3: observed_pass_3(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    case 4: observed_pass_4(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    case 5: observed_pass_5(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    case 6: observed_pass_6(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    case 7: observed_pass_7(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    case 8: observed_pass_8(d_out, k, row_ptr, cols, target, obs, top, ptu, s_top); return;
    default: observed_pass_blocked(d_out, k, row_ptr, cols, target, obs, top, ptu, e, s_top); return;
    }
#else
    (void)e;
#endif
    observed_pass_generic(d_out, k, row_ptr, cols, target, obs, top, ptu, acc, s_top);
}

int FN(sampled_steps)(int depth, const i64 *dims, i64 batch, real **weights, const real *steps, const i64 *row_ptr,
                      const i64 *cols, const real *target_obs, const real *obs, real *work, i64 n_steps, void *gemm_fn,
                      int gemm_kind) {
    if (depth < 2 || depth > 64) return 1;
    const blas_t blas = {gemm_fn, gemm_kind};
    const i64 d_in = dims[0], d_out = dims[depth], k = dims[depth - 1], kp = padded(k), widest = max_inner(depth, dims);
    real *prefix[64], *up[2], *w[64];
    real *p = work;
    up[0] = p;
    up[1] = p + widest * d_in;
    p += 2 * widest * d_in;
    for (int l = 1; l < depth - 1; l++) {
        prefix[l] = p;
        p += dims[l + 1] * d_in;
    }
    real *ptu = p, *acc = p + 2 * d_in * kp, *e = acc + kp;
    memset(ptu, 0, sizeof(real) * 2 * d_in * kp); /* the padding stays zero */
    for (i64 b = 0; b < batch; b++) {
        for (int l = 0; l < depth; l++) w[l] = weights[l] + b * dims[l + 1] * dims[l];
        const real s_top = steps[(depth - 1) * batch + b];
        for (i64 step = 0; step < n_steps; step++) {
            forward(&blas, depth - 2, dims, w, prefix);
            const real *last = prefix[depth - 2]; /* P_{L-2}: (k, d_in) */
            for (i64 j = 0; j < d_in; j++) {
                real *row = ptu + j * 2 * kp;
                for (i64 a = 0; a < k; a++) row[a] = last[a * d_in + j];
                memset(row + kp, 0, sizeof(real) * k);
            }
            observed_pass(d_out, k, row_ptr, cols, target_obs, obs, w[depth - 1], ptu, acc, e, s_top);
            backward_from(&blas, depth - 2, dims, w, prefix, steps, batch, b, ptu + kp, 1, 2 * kp, up);
        }
    }
    return 0;
}

/* MS: the loss gradient G_b = A^T (A w_b - y) of `batch` flattened end-to-end matrices w_b (n = d_out d_in
   numbers each; G is (batch, n)), in ONE pass over the (m, n) operator A, four rows at a time: their
   residuals r[i][b] = <A_i, w_b> - y_i (the rows read from memory), then G_b += sum_i r[i][b] A_i (the
   rows again, from cache). A step is bound by reading A; `(A w - y)` then `A^T r` read it twice. Networks
   go two at a time through register-blocked loops: each chunk of w_b or G_b is loaded once per 4 rows. */

/* out[r * batch + b] = <x_r, w_b> - y_r for `rows` (1..4) rows x_r (row stride n) and `nb` (1..2) networks w_b
   (stride n). Every (row, network) sum has its own accumulator and runs in one order whatever the other rows
   and networks, so a network's gradient is bitwise the same in a batch as alone. Called with constant `rows`,
   so the compiler specialises it. */
static inline void residuals(const real *x, const real *w, const real *y, i64 n, int rows, int nb, real *out,
                             i64 batch) {
    i64 j = 0;
    real s[4][2] = {{0}};
#if VEC_KERNELS
    vreal acc[4][2];
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = VZERO();
    for (; j + VW <= n; j += VW) {
        const vreal w0 = VLOAD(w + j), w1 = nb > 1 ? VLOAD(w + n + j) : VZERO();
        for (int r = 0; r < rows; r++) {
            const vreal a = VLOAD(x + r * n + j);
            acc[r][0] = VFMA(a, w0, acc[r][0]);
            acc[r][1] = VFMA(a, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) s[r][0] = VHSUM(acc[r][0]), s[r][1] = VHSUM(acc[r][1]);
#endif
    for (; j < n; j++)
        for (int r = 0; r < rows; r++) {
            s[r][0] += x[r * n + j] * w[j];
            if (nb > 1) s[r][1] += x[r * n + j] * w[n + j];
        }
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nb; b++) out[r * batch + b] = s[r][b] - y[r];
}

/* g_b += sum_{r < rows} c[r * batch + b] x_r for `nb` (1..2) networks g_b (stride n): each chunk of g is loaded
   and stored once per `rows` rows; the rows are added in order, whatever the batch. */
static inline void updates(const real *x, i64 n, int rows, int nb, const real *c, i64 batch, real *g) {
    i64 j = 0;
#if VEC_KERNELS
    vreal c0[4], c1[4];
    for (int r = 0; r < rows; r++) c0[r] = VSET1(c[r * batch]), c1[r] = VSET1(nb > 1 ? c[r * batch + 1] : 0);
    for (; j + VW <= n; j += VW) {
        vreal g0 = VLOAD(g + j), g1 = nb > 1 ? VLOAD(g + n + j) : VZERO();
        for (int r = 0; r < rows; r++) {
            const vreal a = VLOAD(x + r * n + j);
            g0 = VFMA(a, c0[r], g0);
            g1 = VFMA(a, c1[r], g1);
        }
        VSTORE(g + j, g0);
        if (nb > 1) VSTORE(g + n + j, g1);
    }
#endif
    for (; j < n; j++)
        for (int r = 0; r < rows; r++) {
            g[j] += c[r * batch] * x[r * n + j];
            if (nb > 1) g[n + j] += c[r * batch + 1] * x[r * n + j];
        }
}

/* r: 4 * batch scratch. */
int FN(sensing_grad)(const real *a, const real *y, const real *w, real *g, real *r, i64 m, i64 n, i64 batch) {
    if (batch < 1) return 1;
    memset(g, 0, sizeof(real) * batch * n);
    for (i64 i = 0; i < m; i += 4) {
        const real *x = a + i * n;
        if (i + 4 <= m) {
            for (i64 b = 0; b < batch; b += 2)
                residuals(x, w + b * n, y + i, n, 4, batch - b > 1 ? 2 : 1, r + b, batch);
            for (i64 b = 0; b < batch; b += 2) updates(x, n, 4, batch - b > 1 ? 2 : 1, r + b, batch, g + b * n);
        } else { /* the last rows, one at a time */
            for (i64 q = i; q < m; q++)
                for (i64 b = 0; b < batch; b += 2) {
                    const int nb = batch - b > 1 ? 2 : 1;
                    residuals(a + q * n, w + b * n, y + q, n, 1, nb, r + b, batch);
                    updates(a + q * n, n, 1, nb, r + b, batch, g + b * n);
                }
        }
    }
    return 0;
}
