// plasticlm's CPU kernels, forward and backward, for float32 on x86-64 CPUs with AVX2 and FMA: causal
// self-attention, and the exact GeLU (at the end of the file).
//
// Built on first use by plasticlm.cpu_kernels (through torch.utils.cpp_extension) and called through
// ctypes: plain C functions on raw float pointers, no torch headers, so it builds in about a second.
//
// Why it exists (README, "Step speed"): at the CPU micro presets (head dim 16, T = 128) PyTorch's
// flash attention for CPU took about a third of the transformer blocks' time, an order of magnitude
// above its FLOP count: its blocks are sized for large head dims. This kernel works on one (batch,
// head) at a time with everything in L1/L2: the scores of 8 query rows x 8 keys are one register tile
// (8 AVX2 accumulators), the softmax runs on whole rows of 8-lane vectors, and the backward
// recomputes the probabilities from the saved log-sum-exp (flash-attention style) and accumulates
// dK and dV transposed, so that every inner loop is a contiguous 8-lane FMA.
//
// Layouts (all contiguous, float32):
//   qkv  (B, T, 3, H, K)  the qkv projection as it leaves the linear layer, viewed
//   out  (B, T, H, K)     softmax(q k^T * scale + causal mask) v
//   lse  (B, H, T)        log-sum-exp of each row of the scaled, masked scores
//   dout (B, T, H, K), dqkv (B, T, 3, H, K)
// Each call handles the batch rows [b0, b1), so that callers can split a batch over threads.
// Return value: 0 on success, 1 for an unsupported head dim (16, 32 and 64 are built), 2 when a
// buffer cannot be allocated.

#include <immintrin.h>
#include <initializer_list>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

namespace {

constexpr int BR = 8;  // query rows per register tile (and keys per tile: one AVX2 vector)

inline __m256 exp256(__m256 x) {
  // Cephes expf: exp(x) = 2^n exp(r), r = x - n ln 2 in [-ln2/2, ln2/2], degree-6 polynomial; within
  // about 2 ulp of expf on [-87, 88], the clamp range (exp(-87) is 1.6e-38, below every use here).
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}

inline float hmax(__m256 v) {
  __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_max_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_max_ss(a, _mm_movehdup_ps(a)));
}

// Per-call scratch: one (batch, head) at a time. Row-major buffers hold Tp x K, transposed ones K x LD,
// score tiles BR x LD. LD avoids multiples of 256 floats: rows 1 KiB apart meet every 4th row at the
// 4 KiB stride, where they alias in the L1 cache.
struct Scratch {
  int64_t Tp, LD;
  float* base = nullptr;
  float *Q, *K, *V, *G, *Kt, *Vt, *dKt, *dVt, *P, *dS;
  bool alloc(int64_t T, int64_t KD) {
    Tp = (T + BR - 1) / BR * BR;
    LD = Tp + 8;
    if (LD % 256 == 0) LD += 8;
    const int64_t rows = Tp * KD, cols = KD * LD, tile = BR * LD;
    base = static_cast<float*>(aligned_alloc(64, sizeof(float) * (4 * rows + 4 * cols + 2 * tile + 16)));
    if (!base) return false;
    float* p = base;
    for (float** b : {&Q, &K, &V, &G}) { *b = p; p += rows; }
    for (float** b : {&Kt, &Vt, &dKt, &dVt}) { *b = p; p += cols; }
    for (float** b : {&P, &dS}) { *b = p; p += tile; }
    memset(base, 0, sizeof(float) * (4 * rows + 4 * cols + 2 * tile));  // zero padding rows/columns
    return true;
  }
  ~Scratch() { free(base); }
};

inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// One head of a strided (T rows, row_stride apart) source, times scale, into a row-major Tp x KD buffer.
template <int KD>
void load_rows(const float* src, int64_t row_stride, int64_t T, float scale, float* rowm) {
  const __m256 s8 = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < T; j++)
    for (int d = 0; d < KD; d += 8)
      _mm256_store_ps(rowm + j * KD + d, _mm256_mul_ps(_mm256_loadu_ps(src + j * row_stride + d), s8));
}

// The same head transposed, into a KD x LD buffer: 8 x 8 blocks through registers.
template <int KD>
void load_cols(const float* src, int64_t row_stride, int64_t T, float* colm, int64_t LD) {
  int64_t j0 = 0;
  for (; j0 + 8 <= T; j0 += 8)
    for (int d0 = 0; d0 < KD; d0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (j0 + i) * row_stride + d0);
      transpose8(r);
      for (int i = 0; i < 8; i++) _mm256_store_ps(colm + (d0 + i) * LD + j0, r[i]);
    }
  for (int64_t j = j0; j < T; j++)
    for (int d = 0; d < KD; d++) colm[d * LD + j] = src[j * row_stride + d];
}

// The inverse: a KD x LD buffer written as T strided rows.
template <int KD>
void store_cols(const float* colm, int64_t LD, int64_t T, float* dst, int64_t row_stride) {
  int64_t j0 = 0;
  for (; j0 + 8 <= T; j0 += 8)
    for (int d0 = 0; d0 < KD; d0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; i++) r[i] = _mm256_load_ps(colm + (d0 + i) * LD + j0);
      transpose8(r);
      for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (j0 + i) * row_stride + d0, r[i]);
    }
  for (int64_t j = j0; j < T; j++)
    for (int d = 0; d < KD; d++) dst[j * row_stride + d] = colm[d * LD + j];
}

// S[r, j] = sum_d A[i0 + r, d] * Bt[d, j] for r < BR, j < nv (A row-major, Bt transposed).
template <int KD>
inline void tile_scores(const float* A, const float* Bt, int64_t LD, int64_t i0, int64_t nv, float* S) {
  const float* a = A + i0 * KD;
  for (int64_t j0 = 0; j0 < nv; j0 += 8) {
    __m256 acc[BR];
    for (int r = 0; r < BR; r++) acc[r] = _mm256_setzero_ps();
    for (int d = 0; d < KD; d++) {
      const __m256 b = _mm256_load_ps(Bt + d * LD + j0);
      for (int r = 0; r < BR; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + r * KD + d), b, acc[r]);
    }
    for (int r = 0; r < BR; r++) _mm256_store_ps(S + r * LD + j0, acc[r]);
  }
}

// O[r, :] = sum_{j < nv} P[r, j] * M[j, :] (M row-major Tp x KD; O is BR x KD).
template <int KD>
inline void tile_rows_times(const float* P, int64_t LD, const float* M, int64_t nv, float* O) {
  for (int h = 0; h < KD; h += 8) {
    __m256 acc[BR];
    for (int r = 0; r < BR; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t j = 0; j < nv; j++) {
      const __m256 m = _mm256_load_ps(M + j * KD + h);
      for (int r = 0; r < BR; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(P + r * LD + j), m, acc[r]);
    }
    for (int r = 0; r < BR; r++) _mm256_storeu_ps(O + r * KD + h, acc[r]);
  }
}

// Ct[d, j] += sum_r A[i0 + r, d] * X[r, j] for j < nv (Ct transposed K x LD).
template <int KD>
inline void tile_accumulate_t(const float* A, int64_t i0, const float* X, int64_t LD, int64_t nv, float* Ct) {
  const float* a = A + i0 * KD;
  for (int64_t j0 = 0; j0 < nv; j0 += 8) {
    __m256 x[BR];
    for (int r = 0; r < BR; r++) x[r] = _mm256_load_ps(X + r * LD + j0);
    for (int d = 0; d < KD; d++) {
      float* c = Ct + d * LD + j0;
      __m256 s0 = _mm256_load_ps(c), s1 = _mm256_setzero_ps();
      for (int r = 0; r < BR; r += 2) {
        s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + r * KD + d), x[r], s0);
        s1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (r + 1) * KD + d), x[r + 1], s1);
      }
      _mm256_store_ps(c, _mm256_add_ps(s0, s1));
    }
  }
}

template <int KD>
int forward(const float* qkv, float* out, float* lse, int64_t B, int64_t T, int64_t H, float scale, int64_t b0,
            int64_t b1) {
  Scratch w;
  if (!w.alloc(T, KD)) return 2;
  const int64_t LD = w.LD, rs = 3 * H * KD;
  float O[BR * KD];
  for (int64_t b = b0; b < b1; b++) {
    for (int64_t h = 0; h < H; h++) {
      const float* base = qkv + b * T * rs + h * KD;
      load_rows<KD>(base, rs, T, scale, w.Q);
      load_cols<KD>(base + H * KD, rs, T, w.Kt, LD);
      load_rows<KD>(base + 2 * H * KD, rs, T, 1.0f, w.V);
      for (int64_t i0 = 0; i0 < T; i0 += BR) {
        const int64_t nv = i0 + BR;  // keys 0..i0+7 cover the tile's rows; later ones are masked
        tile_scores<KD>(w.Q, w.Kt, LD, i0, nv, w.P);
        for (int r = 0; r < BR && i0 + r < T; r++) {
          float* s = w.P + r * LD;
          for (int64_t c = i0 + r + 1; c < nv; c++) s[c] = -INFINITY;
          __m256 mv = _mm256_set1_ps(-INFINITY);
          for (int64_t j = 0; j < nv; j += 8) mv = _mm256_max_ps(mv, _mm256_load_ps(s + j));
          const float m = hmax(mv);
          const __m256 m8 = _mm256_set1_ps(m);
          for (int64_t j = 0; j < nv; j += 8) _mm256_store_ps(s + j, exp256(_mm256_sub_ps(_mm256_load_ps(s + j), m8)));
          for (int64_t c = i0 + r + 1; c < nv; c++) s[c] = 0.0f;
          __m256 lv = _mm256_setzero_ps();
          for (int64_t j = 0; j < nv; j += 8) lv = _mm256_add_ps(lv, _mm256_load_ps(s + j));
          const float l = hsum(lv);
          lse[(b * H + h) * T + i0 + r] = m + logf(l);
          const __m256 inv = _mm256_set1_ps(1.0f / l);
          for (int64_t j = 0; j < nv; j += 8) _mm256_store_ps(s + j, _mm256_mul_ps(_mm256_load_ps(s + j), inv));
        }
        tile_rows_times<KD>(w.P, LD, w.V, nv, O);
        for (int r = 0; r < BR && i0 + r < T; r++) memcpy(out + ((b * T + i0 + r) * H + h) * KD, O + r * KD, sizeof O / BR);
      }
    }
  }
  return 0;
}

template <int KD>
int backward(const float* qkv, const float* out, const float* lse, const float* dout, float* dqkv, int64_t B,
             int64_t T, int64_t H, float scale, int64_t b0, int64_t b1) {
  Scratch w;
  if (!w.alloc(T, KD)) return 2;
  const int64_t LD = w.LD, rs = 3 * H * KD, ors = H * KD;
  float dQ[BR * KD];
  for (int64_t b = b0; b < b1; b++) {
    for (int64_t h = 0; h < H; h++) {
      const float* base = qkv + b * T * rs + h * KD;
      load_rows<KD>(base, rs, T, scale, w.Q);
      load_rows<KD>(base + H * KD, rs, T, 1.0f, w.K);
      load_cols<KD>(base + H * KD, rs, T, w.Kt, LD);
      load_cols<KD>(base + 2 * H * KD, rs, T, w.Vt, LD);
      load_rows<KD>(dout + b * T * ors + h * KD, ors, T, 1.0f, w.G);
      for (int d = 0; d < KD; d++) {
        memset(w.dKt + d * LD, 0, sizeof(float) * w.Tp);
        memset(w.dVt + d * LD, 0, sizeof(float) * w.Tp);
      }
      for (int64_t i0 = 0; i0 < T; i0 += BR) {
        const int64_t nv = i0 + BR;
        tile_scores<KD>(w.Q, w.Kt, LD, i0, nv, w.P);   // scores again
        tile_scores<KD>(w.G, w.Vt, LD, i0, nv, w.dS);  // dP = dO V^T
        for (int r = 0; r < BR; r++) {
          float* p = w.P + r * LD;
          float* ds = w.dS + r * LD;
          float Dr = 0.0f, L = 0.0f;  // padding rows (i >= T) have dO = 0, hence dS = 0
          if (i0 + r < T) {
            const float* y = out + ((b * T + i0 + r) * H + h) * KD;
            const float* g = w.G + (i0 + r) * KD;
            for (int d = 0; d < KD; d++) Dr += g[d] * y[d];
            L = lse[(b * H + h) * T + i0 + r];
          }
          const __m256 L8 = _mm256_set1_ps(L), D8 = _mm256_set1_ps(Dr);
          for (int64_t j = 0; j < nv; j += 8) _mm256_store_ps(p + j, exp256(_mm256_sub_ps(_mm256_load_ps(p + j), L8)));
          for (int64_t c = i0 + r + 1; c < nv; c++) p[c] = 0.0f;
          for (int64_t j = 0; j < nv; j += 8)
            _mm256_store_ps(ds + j, _mm256_mul_ps(_mm256_load_ps(p + j), _mm256_sub_ps(_mm256_load_ps(ds + j), D8)));
        }
        tile_rows_times<KD>(w.dS, LD, w.K, nv, dQ);  // dQ = dS K (times scale)
        for (int r = 0; r < BR && i0 + r < T; r++) {
          float* dq = dqkv + (b * T + i0 + r) * rs + h * KD;
          for (int d = 0; d < KD; d++) dq[d] = dQ[r * KD + d] * scale;
        }
        tile_accumulate_t<KD>(w.Q, i0, w.dS, LD, nv, w.dKt);  // dK^T += (scale Q)^T dS
        tile_accumulate_t<KD>(w.G, i0, w.P, LD, nv, w.dVt);   // dV^T += dO^T P
      }
      float* dk = dqkv + b * T * rs + H * KD + h * KD;
      store_cols<KD>(w.dKt, LD, T, dk, rs);
      store_cols<KD>(w.dVt, LD, T, dk + H * KD, rs);
    }
  }
  return 0;
}

// Exact GeLU, x Phi(x) = x/2 (1 + erf(x / sqrt 2)), with erf as ATen's vectorized CPU kernel computes it
// (Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, float rounding) and exp(-z^2) shared by the
// derivative Phi(x) + x phi(x) in the backward.
struct GeluParts {
  __m256 cdf, pdf;  // Phi(x) and phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
};

inline GeluParts gelu_parts(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  const __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
  const __m256 zs = _mm256_and_ps(sign, z), za = _mm256_xor_ps(zs, z);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), za, one));
  __m256 r = _mm256_set1_ps(1.061405429f);
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(-1.453152027f));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(1.421413741f));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(-0.284496736f));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(0.254829592f));
  const __m256 e = exp256(_mm256_xor_ps(sign, _mm256_mul_ps(z, z)));  // exp(-z^2) = exp(-x^2 / 2)
  const __m256 erf = _mm256_xor_ps(zs, _mm256_fnmadd_ps(_mm256_mul_ps(r, t), e, one));
  return {_mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(one, erf)),
          _mm256_mul_ps(e, _mm256_set1_ps(0.39894228040143268f))};
}

inline __m256 load_n(const float* p, int64_t n) {  // the first n < 8 floats, zeros after
  alignas(32) float tmp[8] = {0};
  memcpy(tmp, p, sizeof(float) * n);
  return _mm256_load_ps(tmp);
}

inline void store_n(float* p, __m256 v, int64_t n) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  memcpy(p, tmp, sizeof(float) * n);
}

}  // namespace

extern "C" {

void plasticlm_gelu_forward(const float* x, float* y, int64_t n) {
  const auto f = [](__m256 v) { return _mm256_mul_ps(v, gelu_parts(v).cdf); };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) store_n(y + i, f(load_n(x + i, n - i)), n - i);
}

void plasticlm_gelu_backward(const float* x, const float* grad, float* dx, int64_t n) {
  const auto f = [](__m256 v, __m256 g) {
    const GeluParts p = gelu_parts(v);
    return _mm256_mul_ps(g, _mm256_fmadd_ps(v, p.pdf, p.cdf));
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dx + i, f(_mm256_loadu_ps(x + i), _mm256_loadu_ps(grad + i)));
  if (i < n) store_n(dx + i, f(load_n(x + i, n - i), load_n(grad + i, n - i)), n - i);
}

int plasticlm_attention_forward(const float* qkv, float* out, float* lse, int64_t B, int64_t T, int64_t H,
                                int64_t head_dim, float scale, int64_t b0, int64_t b1) {
  switch (head_dim) {
    case 16: return forward<16>(qkv, out, lse, B, T, H, scale, b0, b1);
    case 32: return forward<32>(qkv, out, lse, B, T, H, scale, b0, b1);
    case 64: return forward<64>(qkv, out, lse, B, T, H, scale, b0, b1);
    default: return 1;
  }
}

int plasticlm_attention_backward(const float* qkv, const float* out, const float* lse, const float* dout, float* dqkv,
                                 int64_t B, int64_t T, int64_t H, int64_t head_dim, float scale, int64_t b0,
                                 int64_t b1) {
  switch (head_dim) {
    case 16: return backward<16>(qkv, out, lse, dout, dqkv, B, T, H, scale, b0, b1);
    case 32: return backward<32>(qkv, out, lse, dout, dqkv, B, T, H, scale, b0, b1);
    case 64: return backward<64>(qkv, out, lse, dout, dqkv, B, T, H, scale, b0, b1);
    default: return 1;
  }
}

}  // extern "C"
