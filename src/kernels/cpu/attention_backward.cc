// Training attention (forward with saved probabilities, and backward) on the packed layout. One
// (sequence, head) pair per task; every step is a small GEMM out = A X with A read through strides
// (so A^T costs nothing), computed by one register-tiled kernel (4 rows x 64 columns of
// accumulators). Backward keeps dS and the dropped probabilities Pd as (L, ldl) matrices in the
// thread's scratch and writes dQ, dK, dV once each, into the pair's own columns of dqkv.
#include "kernels/cpu/attention_backward.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kPad = 16;
constexpr int64_t kRowBlock = 4;     // output rows per register tile
constexpr int64_t kColumnBlock = 64; // output columns per register tile (4 zmm)

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Per thread: Vt or Kt (HS, ldl), dS (L, ldl), Pd (L, ldl), then the pair's dropout keep bits
// (dropout_keep_words(L * L) 64-bit words); then the bf16 path's own buffers (Bf16Scratch).
int64_t f32_floats(int64_t ldl, int64_t HS) {
  return round_up((HS + 2 * ldl) * ldl + 2 * dropout_keep_words(ldl * ldl), kPad);
}

// The bf16 products' operands, as 32-bit words of two bf16 (the pairs VDPBF16PS multiplies):
//   tr        (L, ldl) f32       a transposed f32 block (dS^T, Pd^T)
//   rows      (L, hw) words      rows of an (L, HS) block in bf16, natural order: word k = (x[2k], x[2k+1])
//   pairs_t   (hw, ldl) words    `rows` transposed: word (k, j) = row j's word k (K^T, V^T over head dims)
//   a         (L, hw) words      the coefficient rows of a product over head dims (Q, dout)
//   p         (L, lw) words      the coefficient rows of a product over keys (Pd, dS, dS^T, Pd^T)
//   pairs     (ldl/2, hw2) words consecutive rows interleaved: word (m, c) = (x[2m][c], x[2m+1][c])
// with hw = round_up(ceil(HS / 2), 16), lw = round_up(ldl / 2, 16), hw2 = round_up(HS, 16).
struct Bf16Scratch {
  int64_t ldl, hw, lw, hw2;
  float* tr;
  uint32_t *rows, *pairs_t, *a, *p, *pairs;
  int64_t floats;  // the buffers' size, 16-float aligned each
};

// The buffers inside `slot` (after the f32 path's), or, with slot null, only their sizes.
Bf16Scratch bf16_scratch(float* slot, int64_t ldl, int64_t HS) {
  Bf16Scratch b{ldl, round_up((HS + 1) / 2, kPad), round_up(ldl / 2, kPad), round_up(HS, kPad), nullptr, nullptr,
                nullptr, nullptr, nullptr, nullptr, 0};
  const int64_t start = f32_floats(ldl, HS);
  auto take = [&](int64_t floats) {
    float* region = slot == nullptr ? nullptr : slot + start + b.floats;
    b.floats += round_up(floats, kPad);
    return region;
  };
  b.tr = take(ldl * ldl);
  b.rows = reinterpret_cast<uint32_t*>(take(ldl * b.hw));
  b.pairs_t = reinterpret_cast<uint32_t*>(take(b.hw * ldl));
  b.a = reinterpret_cast<uint32_t*>(take(ldl * b.hw));
  b.p = reinterpret_cast<uint32_t*>(take(ldl * b.lw));
  b.pairs = reinterpret_cast<uint32_t*>(take(ldl / 2 * b.hw2));
  return b;
}

int64_t per_thread_floats(int64_t max_len, int64_t HS) {
  const int64_t ldl = round_up(std::max<int64_t>(max_len, 1), kPad);
  return f32_floats(ldl, HS) + bf16_scratch(nullptr, ldl, HS).floats;
}

// Where a thread's slot keeps the pair's keep bits (8-byte aligned: the slot and ldl are multiples of 16).
uint64_t* keep_bits_slot(float* scratch, int64_t HS, int64_t ldl) {
  return reinterpret_cast<uint64_t*>(scratch + (HS + 2 * ldl) * ldl);
}

// Geometry and dropout of one (sequence, head) problem.
struct Pair {
  const float* qkv;  // (L, 3C) rows of this sequence
  int64_t L;
  int64_t C;
  int64_t head;
  int64_t HS;
  const float* probs;      // (L, L) this pair's saved block
  uint64_t probs_index;    // counter index of probs[0] for dropout: offset + position in the probs layout
};

// A (rows, T) coefficient matrix read with arbitrary strides: a(r, t) = data[r * row_stride + t * t_stride],
// so one kernel serves A and A^T.
struct Coefficients {
  const float* data;
  int64_t row_stride;
  int64_t t_stride;
};

// The one product every step of attention is made of (each a small GEMM of rank T):
//   out[r * out_stride + c] = sum_{t < T} a(r, t) * x[t * x_stride + c]   for r < R, c < width.
// Register tiles of 4 rows x 64 columns: per t, 4 row loads of x serve 16 FMAs; the accumulators
// stay in registers for the whole sweep over t (the output is written once).
#ifdef __AVX512F__
// Walks an (R, width) output in register tiles of 4 rows x 64 columns, calling
// tile(std::integral_constant<int, V>{}, r0, rows, c0, masks) with V the tile's 16-float vectors
// (fewer at the right edge, masked by `masks`) and `rows` <= 4 valid rows from r0.
template <typename Tile>
void for_each_tile(int64_t R, int64_t width, Tile&& tile) {
  for (int64_t c0 = 0; c0 < width; c0 += kColumnBlock) {
    const int64_t w = std::min(kColumnBlock, width - c0);
    const int64_t vectors = (w + simd::kLanes - 1) / simd::kLanes;
    __mmask16 masks[4];
    for (int64_t v = 0; v < 4; ++v) masks[v] = simd::tail_mask(std::max<int64_t>(0, w - v * simd::kLanes));
    for (int64_t r0 = 0; r0 < R; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, R - r0);
      switch (vectors) {
        case 4: tile(std::integral_constant<int, 4>{}, r0, rows, c0, masks); break;
        case 3: tile(std::integral_constant<int, 3>{}, r0, rows, c0, masks); break;
        case 2: tile(std::integral_constant<int, 2>{}, r0, rows, c0, masks); break;
        default: tile(std::integral_constant<int, 1>{}, r0, rows, c0, masks); break;
      }
    }
  }
}

template <int V>
inline void product_tile(float* out, int64_t out_stride, const Coefficients& a, const float* x, int64_t x_stride,
                         int64_t r0, int64_t rows, int64_t T, int64_t c0, const __mmask16 masks[V]) {
  __m512 acc[kRowBlock][V];
#pragma GCC unroll 4
  for (int r = 0; r < kRowBlock; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  // Rows past `rows` repeat the last valid row (computed, never stored): no tail kernel needed.
  const float* a0 = a.data + r0 * a.row_stride;
  const float* a1 = a.data + (r0 + std::min<int64_t>(1, rows - 1)) * a.row_stride;
  const float* a2 = a.data + (r0 + std::min<int64_t>(2, rows - 1)) * a.row_stride;
  const float* a3 = a.data + (r0 + std::min<int64_t>(3, rows - 1)) * a.row_stride;
  const __mmask16 m0 = masks[0], m1 = V > 1 ? masks[1] : 0, m2 = V > 2 ? masks[2] : 0, m3 = V > 3 ? masks[3] : 0;
  const int64_t t_stride = a.t_stride;
  for (int64_t t = 0; t < T; ++t) {
    const float* x_row = x + t * x_stride + c0;
    __m512 xv[V];
    xv[0] = _mm512_maskz_loadu_ps(m0, x_row);
    if constexpr (V > 1) xv[1] = _mm512_maskz_loadu_ps(m1, x_row + simd::kLanes);
    if constexpr (V > 2) xv[2] = _mm512_maskz_loadu_ps(m2, x_row + 2 * simd::kLanes);
    if constexpr (V > 3) xv[3] = _mm512_maskz_loadu_ps(m3, x_row + 3 * simd::kLanes);
    const __m512 c0v = _mm512_set1_ps(a0[t * t_stride]), c1v = _mm512_set1_ps(a1[t * t_stride]);
    const __m512 c2v = _mm512_set1_ps(a2[t * t_stride]), c3v = _mm512_set1_ps(a3[t * t_stride]);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      acc[0][v] = _mm512_fmadd_ps(c0v, xv[v], acc[0][v]);
      acc[1][v] = _mm512_fmadd_ps(c1v, xv[v], acc[1][v]);
      acc[2][v] = _mm512_fmadd_ps(c2v, xv[v], acc[2][v]);
      acc[3][v] = _mm512_fmadd_ps(c3v, xv[v], acc[3][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < kRowBlock; ++r) {  // constant trip count keeps acc in registers (see attention.cc)
    if (r >= rows) break;
    float* o = out + (r0 + r) * out_stride + c0;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(o + v * simd::kLanes, masks[v], acc[r][v]);
  }
}

void product(float* out, int64_t out_stride, const Coefficients& a, const float* x, int64_t x_stride, int64_t R,
             int64_t T, int64_t width) {
  for_each_tile(R, width, [&](auto vectors, int64_t r0, int64_t rows, int64_t c0, const __mmask16* masks) {
    product_tile<decltype(vectors)::value>(out, out_stride, a, x, x_stride, r0, rows, T, c0, masks);
  });
}

// row: (n) <- exp(row - max(row)) / sum.
inline void softmax_row(float* row, int64_t n) {
  const float max = simd::row_max(row, n);
  simd::scale_row(row, n, 1.0f / simd::exp_shift_sum(row, n, max));
}
#else
void product(float* out, int64_t out_stride, const Coefficients& a, const float* x, int64_t x_stride, int64_t R,
             int64_t T, int64_t width) {
  for (int64_t r = 0; r < R; ++r) {
    float* o = out + r * out_stride;
    for (int64_t c = 0; c < width; ++c) o[c] = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
      const float coefficient = a.data[r * a.row_stride + t * a.t_stride];
      const float* x_row = x + t * x_stride;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) o[c] += coefficient * x_row[c];
    }
  }
}

inline void softmax_row(float* row, int64_t n) {
  float max = row[0];
  for (int64_t j = 1; j < n; ++j) max = std::max(max, row[j]);
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    row[j] = std::exp(row[j] - max);
    sum += row[j];
  }
  const float inverse = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) row[j] *= inverse;
}
#endif

// t: (HS, ldl) <- block^T * scale where block row j (j < L) is the head's HS columns of qkv row j
// at column `column0`; columns L..ldl-1 of t are zero.
void load_transposed(const Pair& p, int64_t column0, float scale, float* t, int64_t ldl) {
  const int64_t stride = 3 * p.C;
  const float* base = p.qkv + column0 + p.head * p.HS;
#ifdef __AVX512F__
  simd::load_transposed(t, ldl, base, stride, p.L, p.HS, scale);
#else
  for (int64_t d = 0; d < p.HS; ++d) {
    float* t_row = t + d * ldl;
    for (int64_t j = 0; j < p.L; ++j) t_row[j] = base[j * stride + d] * scale;
    for (int64_t j = p.L; j < ldl; ++j) t_row[j] = 0.0f;
  }
#endif
}

// out[j] = (element first + j kept ? in[j] * scale : 0) for j < n, from dropout_keep_bits' bits;
// out == in is allowed.
void apply_keep_bits(float* out, const float* in, const uint64_t* keep, int64_t first, int64_t n, float scale) {
#ifdef __AVX512F__
  for (int64_t j = 0; j < n; j += simd::kLanes) {
    const __mmask16 lanes = simd::tail_mask(n - j);
    const __mmask16 kept = static_cast<__mmask16>(dropout_keep16(keep, first + j)) & lanes;
    _mm512_mask_storeu_ps(out + j, lanes, _mm512_maskz_mul_ps(kept, _mm512_maskz_loadu_ps(lanes, in + j),
                                                              _mm512_set1_ps(scale)));
  }
#else
  for (int64_t j = 0; j < n; ++j) {
    const int64_t e = first + j;
    out[j] = (keep[e >> 6] >> (e & 63)) & 1u ? in[j] * scale : 0.0f;
  }
#endif
}

// The pair's keep bits (its L * L elements from the counter, drawn once for the whole block) into
// the thread's slot.
const uint64_t* pair_keep_bits(const Pair& p, float dropout_p, uint64_t seed, float* scratch, int64_t ldl) {
  uint64_t* keep = keep_bits_slot(scratch, p.HS, ldl);
  dropout_keep_bits(keep, p.L * p.L, dropout_p, seed, p.probs_index);
  return keep;
}

// The dropped probabilities Pd = P * M into pd (L, ldl) when dropout_p > 0; returns the matrix the
// context product multiplies V with (pd, or P itself) and sets its row stride.
const float* dropped_probabilities(const Pair& p, const float* probs, float* pd, int64_t ldl, float dropout_p,
                                   uint64_t seed, float* scratch, int64_t* row_stride) {
  *row_stride = p.L;
  if (dropout_p <= 0.0f) return probs;
  const uint64_t* keep = pair_keep_bits(p, dropout_p, seed, scratch, ldl);
  const float scale = dropout_scale(dropout_p);
  for (int64_t i = 0; i < p.L; ++i) apply_keep_bits(pd + i * ldl, probs + i * p.L, keep, i * p.L, p.L, scale);
  *row_stride = ldl;
  return pd;
}

// ds (L, ldl): dPd on entry, dS * scale on return, per query row: dP = dPd * M, then the softmax
// backward dS = P * (dP - rowsum(dP * P)). pd (L, ldl) gets Pd = P * M when dropping. Returns
// whether it dropped.
bool softmax_backward_rows(const Pair& p, float* ds, float* pd, int64_t ldl, float dropout_p, uint64_t seed,
                           float* scratch, float scale) {
  const bool dropping = dropout_p > 0.0f;
  const uint64_t* keep = dropping ? pair_keep_bits(p, dropout_p, seed, scratch, ldl) : nullptr;  // M regenerated
  const float keep_scale = dropping ? dropout_scale(dropout_p) : 1.0f;
  for (int64_t i = 0; i < p.L; ++i) {
    float* row = ds + i * ldl;
    const float* prob = p.probs + i * p.L;
    if (dropping) {  // dP = dPd * M, then Pd = P * M
      apply_keep_bits(row, row, keep, i * p.L, p.L, keep_scale);
      apply_keep_bits(pd + i * ldl, prob, keep, i * p.L, p.L, keep_scale);
    }
    double dot = 0.0;  // rowsum(dP * P), the softmax Jacobian's rank-one part (in double, 8 lanes at once)
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < p.L; ++j) dot += static_cast<double>(row[j]) * prob[j];
    const float row_dot = static_cast<float>(dot);
#pragma omp simd
    for (int64_t j = 0; j < p.L; ++j) row[j] = prob[j] * (row[j] - row_dot) * scale;
  }
  return dropping;
}

// probs_out: the pair's (L, L) block, the same memory as p.probs.
void forward_pair(const Pair& p, float* probs_out, float* out, float dropout_p, uint64_t seed, float* scratch) {
  const int64_t ldl = round_up(p.L, kPad);
  const int64_t stride = 3 * p.C;
  float* kt = scratch;                       // (HS, ldl) K_h^T * scale
  float* pd = kt + p.HS * ldl + ldl * ldl;   // (L, ldl) P * M when dropping
  load_transposed(p, p.C, 1.0f / std::sqrt(static_cast<float>(p.HS)), kt, ldl);
  const float* queries = p.qkv + p.head * p.HS;
  const float* values = p.qkv + 2 * p.C + p.head * p.HS;
  // Scores S = Q Kt straight into the probability block, then softmax per row in place.
  product(probs_out, p.L, Coefficients{queries, stride, 1}, kt, ldl, p.L, p.HS, p.L);
  for (int64_t i = 0; i < p.L; ++i) softmax_row(probs_out + i * p.L, p.L);
  int64_t weights_stride = 0;
  const float* weights = dropped_probabilities(p, probs_out, pd, ldl, dropout_p, seed, scratch, &weights_stride);
  product(out + p.head * p.HS, p.C, Coefficients{weights, weights_stride, 1}, values, stride, p.L, p.L,
          p.HS);  // out_h = Pd V_h
}

void backward_pair(const Pair& p, float* dqkv, const float* dout, float dropout_p, uint64_t seed, float* scratch) {
  const int64_t ldl = round_up(p.L, kPad);
  const int64_t stride = 3 * p.C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.HS));
  float* vt = scratch;                 // (HS, ldl) V_h^T
  float* ds = vt + p.HS * ldl;         // (L, ldl) dPd, then dP, then dS * scale
  float* pd = ds + ldl * ldl;          // (L, ldl) P * M when dropping
  load_transposed(p, 2 * p.C, 1.0f, vt, ldl);
  const int64_t q_col = p.head * p.HS, k_col = p.C + q_col, v_col = 2 * p.C + q_col;
  const float* dout_h = dout + q_col;  // (L, HS) with row stride C

  product(ds, ldl, Coefficients{dout_h, p.C, 1}, vt, ldl, p.L, p.HS, p.L);  // dPd = dout_h V_h^T
  Coefficients weights{p.probs, 1, p.L};  // Pd^T: a(j, i) = P[i][j]
  const bool dropping = softmax_backward_rows(p, ds, pd, ldl, dropout_p, seed, scratch, scale);
  if (dropping) weights = Coefficients{pd, 1, ldl};
  const float* queries = p.qkv + q_col;
  const float* keys = p.qkv + k_col;
  product(dqkv + q_col, stride, Coefficients{ds, ldl, 1}, keys, stride, p.L, p.L, p.HS);     // dQ = dS K
  product(dqkv + k_col, stride, Coefficients{ds, 1, ldl}, queries, stride, p.L, p.L, p.HS);  // dK = dS^T Q
  product(dqkv + v_col, stride, weights, dout_h, p.C, p.L, p.L, p.HS);                       // dV = Pd^T dout
}

#if defined(__AVX512F__) && defined(__AVX512BF16__)
// ---- bf16 products (VDPBF16PS, f32 accumulation), for mixed-precision training ----
// The same steps as forward_pair / backward_pair with each of the pair's small GEMMs on bf16
// operands: out = A X with A's rows and X's row pairs packed as words of two bf16 (Bf16Scratch).
// Softmax, dropout and the softmax backward stay f32, as does everything saved (P) and written.

inline __m512bh as_bh(__m512i words) { return reinterpret_cast<__m512bh>(words); }

// dst (R, dst_stride words): row r = bf16(a[r][0..T) * scale) in natural order, zero up to the
// next 16 words. a(r, t) = a[r * a_stride + t].
void pack_rows(uint32_t* dst, int64_t dst_stride, const float* a, int64_t a_stride, int64_t R, int64_t T, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  const int64_t words = (T + 1) / 2;
  for (int64_t r = 0; r < R; ++r) {
    const float* row = a + r * a_stride;
    for (int64_t k = 0; k < words; k += simd::kLanes) {  // 16 words = 32 floats per step
      const int64_t i = 2 * k;
      const __m512 lo = _mm512_maskz_loadu_ps(simd::tail_mask(std::max<int64_t>(0, T - i)), row + i);
      const __m512 hi = _mm512_maskz_loadu_ps(simd::tail_mask(std::max<int64_t>(0, T - i - simd::kLanes)),
                                              row + i + simd::kLanes);
      const __m512bh packed = _mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, s), _mm512_mul_ps(lo, s));
      _mm512_storeu_si512(dst + r * dst_stride + k, reinterpret_cast<__m512i>(packed));
    }
  }
}

// dst (ceil(T / 2), dst_stride words): word (m, c) = (x[2m][c], x[2m+1][c]) for c < width, a missing
// odd row as zero. cvtne2ps puts row 2m in the low 16 bf16 and row 2m+1 in the high 16; the
// permute interleaves them.
void pack_pairs(uint32_t* dst, int64_t dst_stride, const float* x, int64_t x_stride, int64_t T, int64_t width) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t m = 0; m < (T + 1) / 2; ++m) {
    const float* even = x + 2 * m * x_stride;
    const bool has_odd = 2 * m + 1 < T;
    for (int64_t c0 = 0; c0 < width; c0 += simd::kLanes) {
      const __mmask16 columns = simd::tail_mask(width - c0);
      const __m512 lo = _mm512_maskz_loadu_ps(columns, even + c0);
      const __m512 hi = has_odd ? _mm512_maskz_loadu_ps(columns, even + x_stride + c0) : _mm512_setzero_ps();
      const __m512i packed = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
      _mm512_storeu_si512(dst + m * dst_stride + c0, _mm512_permutexvar_epi16(interleave, packed));
    }
  }
}

// dst (columns, dst_stride words) <- src^T for src (rows, columns) words with row stride
// src_stride; dst's columns rows..round_up(rows, 16) are zero. Shuffles only: the bits move intact.
void transpose_words(uint32_t* dst, int64_t dst_stride, const uint32_t* src, int64_t src_stride, int64_t rows,
                     int64_t columns) {
  for (int64_t k0 = 0; k0 < columns; k0 += simd::kLanes) {
    const int64_t width = std::min<int64_t>(simd::kLanes, columns - k0);
    for (int64_t j0 = 0; j0 < rows; j0 += simd::kLanes) {
      __m512 block[simd::kLanes];
      for (int64_t j = 0; j < simd::kLanes; ++j) {
        block[j] = j0 + j < rows
                       ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(simd::tail_mask(width),
                                                                      src + (j0 + j) * src_stride + k0))
                       : _mm512_setzero_ps();
      }
      simd::transpose16x16(block);
      for (int64_t k = 0; k < width; ++k) {
        _mm512_storeu_ps(reinterpret_cast<float*>(dst + (k0 + k) * dst_stride + j0), block[k]);
      }
    }
  }
}

// out[r * out_stride + c] = sum_{m < T2} dot_bf16(a[r * a_stride + m], x[m * x_stride + c]) for
// r < R, c < width: the f32 `product` on packed operands, same 4 x 64 register tiles.
template <int V>
inline void product_tile_bf16(float* out, int64_t out_stride, const uint32_t* a, int64_t a_stride, const uint32_t* x,
                              int64_t x_stride, int64_t r0, int64_t rows, int64_t T2, int64_t c0,
                              const __mmask16 masks[V]) {
  __m512 acc[kRowBlock][V];
#pragma GCC unroll 4
  for (int r = 0; r < kRowBlock; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  const uint32_t* a0 = a + r0 * a_stride;  // rows past `rows` repeat the last valid one (not stored)
  const uint32_t* a1 = a + (r0 + std::min<int64_t>(1, rows - 1)) * a_stride;
  const uint32_t* a2 = a + (r0 + std::min<int64_t>(2, rows - 1)) * a_stride;
  const uint32_t* a3 = a + (r0 + std::min<int64_t>(3, rows - 1)) * a_stride;
  for (int64_t m = 0; m < T2; ++m) {
    const uint32_t* x_row = x + m * x_stride + c0;
    __m512bh xv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) xv[v] = as_bh(_mm512_maskz_loadu_epi32(masks[v], x_row + v * simd::kLanes));
    const __m512bh c0v = as_bh(_mm512_set1_epi32(static_cast<int>(a0[m])));
    const __m512bh c1v = as_bh(_mm512_set1_epi32(static_cast<int>(a1[m])));
    const __m512bh c2v = as_bh(_mm512_set1_epi32(static_cast<int>(a2[m])));
    const __m512bh c3v = as_bh(_mm512_set1_epi32(static_cast<int>(a3[m])));
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      acc[0][v] = _mm512_dpbf16_ps(acc[0][v], c0v, xv[v]);
      acc[1][v] = _mm512_dpbf16_ps(acc[1][v], c1v, xv[v]);
      acc[2][v] = _mm512_dpbf16_ps(acc[2][v], c2v, xv[v]);
      acc[3][v] = _mm512_dpbf16_ps(acc[3][v], c3v, xv[v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < kRowBlock; ++r) {
    if (r >= rows) break;
    float* o = out + (r0 + r) * out_stride + c0;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(o + v * simd::kLanes, masks[v], acc[r][v]);
  }
}

void product_bf16(float* out, int64_t out_stride, const uint32_t* a, int64_t a_stride, const uint32_t* x,
                  int64_t x_stride, int64_t R, int64_t T2, int64_t width) {
  for_each_tile(R, width, [&](auto vectors, int64_t r0, int64_t rows, int64_t c0, const __mmask16* masks) {
    product_tile_bf16<decltype(vectors)::value>(out, out_stride, a, a_stride, x, x_stride, r0, rows, T2, c0, masks);
  });
}

void forward_pair_bf16(const Pair& p, float* probs_out, float* out, float dropout_p, uint64_t seed, float* scratch) {
  const int64_t ldl = round_up(p.L, kPad), stride = 3 * p.C, HS2 = (p.HS + 1) / 2, L2 = (p.L + 1) / 2;
  const Bf16Scratch b = bf16_scratch(scratch, ldl, p.HS);
  float* pd = scratch + p.HS * ldl + ldl * ldl;  // (L, ldl) P * M when dropping, as in forward_pair
  const float* queries = p.qkv + p.head * p.HS;
  const float* keys = p.qkv + p.C + p.head * p.HS;
  const float* values = p.qkv + 2 * p.C + p.head * p.HS;
  // S = Q (K * scale)^T: K's rows packed, then transposed into pairs over head dims.
  pack_rows(b.rows, b.hw, keys, stride, p.L, p.HS, 1.0f / std::sqrt(static_cast<float>(p.HS)));
  transpose_words(b.pairs_t, ldl, b.rows, b.hw, p.L, HS2);
  pack_rows(b.a, b.hw, queries, stride, p.L, p.HS, 1.0f);
  product_bf16(probs_out, p.L, b.a, b.hw, b.pairs_t, ldl, p.L, HS2, p.L);
  for (int64_t i = 0; i < p.L; ++i) softmax_row(probs_out + i * p.L, p.L);
  int64_t weights_stride = 0;
  const float* weights = dropped_probabilities(p, probs_out, pd, ldl, dropout_p, seed, scratch, &weights_stride);
  pack_rows(b.p, b.lw, weights, weights_stride, p.L, p.L, 1.0f);
  pack_pairs(b.pairs, b.hw2, values, stride, p.L, p.HS);
  product_bf16(out + p.head * p.HS, p.C, b.p, b.lw, b.pairs, b.hw2, p.L, L2, p.HS);  // out_h = Pd V_h
}

void backward_pair_bf16(const Pair& p, float* dqkv, const float* dout, float dropout_p, uint64_t seed,
                        float* scratch) {
  const int64_t ldl = round_up(p.L, kPad), stride = 3 * p.C, HS2 = (p.HS + 1) / 2, L2 = (p.L + 1) / 2;
  const Bf16Scratch b = bf16_scratch(scratch, ldl, p.HS);
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.HS));
  float* ds = scratch + p.HS * ldl;  // (L, ldl) dPd, then dP, then dS * scale (as in backward_pair)
  float* pd = ds + ldl * ldl;        // (L, ldl) P * M when dropping
  const int64_t q_col = p.head * p.HS, k_col = p.C + q_col, v_col = 2 * p.C + q_col;
  const float* dout_h = dout + q_col;  // (L, HS) with row stride C
  const float* queries = p.qkv + q_col;
  const float* keys = p.qkv + k_col;
  const float* values = p.qkv + v_col;

  // dPd = dout_h V_h^T
  pack_rows(b.rows, b.hw, values, stride, p.L, p.HS, 1.0f);
  transpose_words(b.pairs_t, ldl, b.rows, b.hw, p.L, HS2);
  pack_rows(b.a, b.hw, dout_h, p.C, p.L, p.HS, 1.0f);
  product_bf16(ds, ldl, b.a, b.hw, b.pairs_t, ldl, p.L, HS2, p.L);
  const bool dropping = softmax_backward_rows(p, ds, pd, ldl, dropout_p, seed, scratch, scale);
  // dQ = dS K
  pack_rows(b.p, b.lw, ds, ldl, p.L, p.L, 1.0f);
  pack_pairs(b.pairs, b.hw2, keys, stride, p.L, p.HS);
  product_bf16(dqkv + q_col, stride, b.p, b.lw, b.pairs, b.hw2, p.L, L2, p.HS);
  // dK = dS^T Q
  simd::load_transposed(b.tr, ldl, ds, ldl, p.L, p.L, 1.0f);
  pack_rows(b.p, b.lw, b.tr, ldl, p.L, p.L, 1.0f);
  pack_pairs(b.pairs, b.hw2, queries, stride, p.L, p.HS);
  product_bf16(dqkv + k_col, stride, b.p, b.lw, b.pairs, b.hw2, p.L, L2, p.HS);
  // dV = Pd^T dout_h
  if (dropping) {
    simd::load_transposed(b.tr, ldl, pd, ldl, p.L, p.L, 1.0f);
  } else {
    simd::load_transposed(b.tr, ldl, p.probs, p.L, p.L, p.L, 1.0f);
  }
  pack_rows(b.p, b.lw, b.tr, ldl, p.L, p.L, 1.0f);
  pack_pairs(b.pairs, b.hw2, dout_h, p.C, p.L, p.HS);
  product_bf16(dqkv + v_col, stride, b.p, b.lw, b.pairs, b.hw2, p.L, L2, p.HS);
}
#endif

struct Checked {
  int64_t slot;
  int threads;
};

Checked check_arguments(const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS, float dropout_p,
                        const float* scratch, int64_t scratch_floats, const char* who) {
  check(NH > 0 && HS > 0, who, ": need NH > 0 and HS > 0, got NH=", NH, " HS=", HS);
  check(dropout_p >= 0.0f && dropout_p <= 1.0f, who, ": dropout_p must be in [0, 1], got ", dropout_p);
  const int64_t max_len = max_sequence_length(seq_offsets, S);
  const bool nested = omp_in_parallel() != 0;
  const int threads = nested ? 1 : omp_get_max_threads();
  const int64_t slot = per_thread_floats(max_len, HS);
  check(scratch != nullptr && scratch_floats >= slot * threads, who, ": scratch has ", scratch_floats,
        " floats, needs attention_train_scratch_floats(max_len=", max_len, ", HS=", HS, ", threads=", threads,
        ") = ", slot * threads);
  return {slot, threads};
}

// Calls body(s, h, slot) for every (sequence s, head h) pair on the team, `slot` being the calling
// thread's scratch. One pair per task, each writing only its own outputs: the results do not depend
// on the thread count.
template <typename Body>
void for_each_pair(int64_t S, int64_t NH, const Checked& checked, float* scratch, Body&& body) {
  const int64_t pairs = S * NH;
#pragma omp parallel for schedule(dynamic, 1) num_threads(checked.threads) if (pairs > 1)
  for (int64_t pair = 0; pair < pairs; ++pair) body(pair / NH, pair % NH, scratch + omp_get_thread_num() * checked.slot);
}

// ---- First query only: one query row against the pair's L keys and values ----

// The pair of sequence s, head h for the first-query kernels: its keys/values, its probability row,
// and its dropout counter index (the full attention's query row 0).
struct FirstQueryPair {
  const float* qkv;      // (L, 3C) rows of this sequence
  const float* query;    // (HS) this head's slice of the sequence's query row
  int64_t L, C, head, HS;
  uint64_t probs_index;  // counter index of the row's element 0
};

FirstQueryPair first_query_pair(const float* q, const float* qkv, const int64_t* seq_offsets, int64_t s, int64_t h,
                                int64_t NH, int64_t HS, uint64_t offset) {
  const int64_t C = NH * HS, begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
  const int64_t block = attention_probs_offset(seq_offsets, s, NH) + h * L * L;
  return FirstQueryPair{qkv + begin * 3 * C, q + s * C + h * HS, L, C, h, HS, offset + static_cast<uint64_t>(block)};
}

// sum_d a[d] * b[d] over n floats, 16 lanes at once.
inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

// probs_row: (L) <- softmax(q K^T * scale); out_h: (HS) <- sum_j Pd_j V[j]. keep: (L) scratch.
void first_query_forward_pair(const FirstQueryPair& p, float* probs_row, float* out_h, float dropout_p, uint64_t seed,
                              float* keep) {
  const int64_t stride = 3 * p.C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.HS));
  const float* keys = p.qkv + p.C + p.head * p.HS;
  const float* values = p.qkv + 2 * p.C + p.head * p.HS;
  for (int64_t j = 0; j < p.L; ++j) probs_row[j] = dot(p.query, keys + j * stride, p.HS) * scale;
  softmax_row(probs_row, p.L);
  const float* weights = probs_row;
  if (dropout_p > 0.0f) {
    dropout_mask(keep, p.L, dropout_p, seed, p.probs_index);
#pragma omp simd
    for (int64_t j = 0; j < p.L; ++j) keep[j] *= probs_row[j];
    weights = keep;
  }
  for (int64_t d = 0; d < p.HS; ++d) out_h[d] = 0.0f;
  for (int64_t j = 0; j < p.L; ++j) {
    const float w = weights[j];
    const float* v = values + j * stride;
#pragma omp simd
    for (int64_t d = 0; d < p.HS; ++d) out_h[d] += w * v[d];
  }
}

// dq_h: (HS) overwritten; the pair's K and V columns of dqkv (L rows) overwritten. ds, keep: (L) scratch.
void first_query_backward_pair(const FirstQueryPair& p, const float* prob, const float* dout_h, float* dq_h,
                               float* dqkv, float dropout_p, uint64_t seed, float* ds, float* keep) {
  const int64_t stride = 3 * p.C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.HS));
  const int64_t k_col = p.C + p.head * p.HS, v_col = 2 * p.C + p.head * p.HS;
  const bool dropping = dropout_p > 0.0f;
  if (dropping) dropout_mask(keep, p.L, dropout_p, seed, p.probs_index);
  // dPd_j = dout_h . V[j];  dV[j] = Pd_j dout_h;  dP_j = dPd_j M_j
  for (int64_t j = 0; j < p.L; ++j) {
    const float multiplier = dropping ? keep[j] : 1.0f;
    ds[j] = dot(dout_h, p.qkv + j * stride + v_col, p.HS) * multiplier;
    const float pd = prob[j] * multiplier;
    float* dv = dqkv + j * stride + v_col;
#pragma omp simd
    for (int64_t d = 0; d < p.HS; ++d) dv[d] = pd * dout_h[d];
  }
  double row_dot = 0.0;  // rowsum(dP * P)
#pragma omp simd reduction(+ : row_dot)
  for (int64_t j = 0; j < p.L; ++j) row_dot += static_cast<double>(ds[j]) * prob[j];
  const float rank_one = static_cast<float>(row_dot);
  // dS_j = P_j (dP_j - rowsum) * scale;  dK[j] = dS_j q;  dq = sum_j dS_j K[j]
  for (int64_t d = 0; d < p.HS; ++d) dq_h[d] = 0.0f;
  for (int64_t j = 0; j < p.L; ++j) {
    const float dsj = prob[j] * (ds[j] - rank_one) * scale;
    const float* k = p.qkv + j * stride + k_col;
    float* dk = dqkv + j * stride + k_col;
#pragma omp simd
    for (int64_t d = 0; d < p.HS; ++d) {
      dk[d] = dsj * p.query[d];
      dq_h[d] += dsj * k[d];
    }
  }
}

}  // namespace

int64_t attention_probs_offset(const int64_t* seq_offsets, int64_t s, int64_t NH) {
  int64_t total = 0;
  for (int64_t t = 0; t < s; ++t) {
    const int64_t length = seq_offsets[t + 1] - seq_offsets[t];
    total += length * length;
  }
  return NH * total;
}

int64_t attention_probs_floats(const int64_t* seq_offsets, int64_t S, int64_t NH) {
  check(NH > 0, "attention_probs_floats: NH must be > 0, got ", NH);
  max_sequence_length(seq_offsets, S);  // validates
  return attention_probs_offset(seq_offsets, S, NH);
}

int64_t attention_train_scratch_floats(int64_t max_len, int64_t HS, int threads) {
  check(max_len >= 0 && HS > 0 && threads > 0, "attention_train_scratch_floats: need max_len >= 0, HS > 0, threads > 0, got max_len=",
        max_len, " HS=", HS, " threads=", threads);
  return per_thread_floats(max_len, HS) * threads;
}

void attention_forward_train(float* out, float* probs, const float* qkv, const int64_t* seq_offsets, int64_t S,
                             int64_t NH, int64_t HS, float dropout_p, uint64_t seed, uint64_t offset, float* scratch,
                             int64_t scratch_floats, bool bf16_products) {
  bf16_products = bf16_products && attention_bf16_available();
  const Checked checked =
      check_arguments(seq_offsets, S, NH, HS, dropout_p, scratch, scratch_floats, "attention_forward_train");
  check(static_cast<const float*>(out) != qkv, "attention_forward_train: out must not alias qkv");
  const int64_t C = NH * HS;
  for_each_pair(S, NH, checked, scratch, [&](int64_t s, int64_t h, float* slot) {
    const int64_t begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
    if (L == 0) return;
    const int64_t block = attention_probs_offset(seq_offsets, s, NH) + h * L * L;
    Pair problem{qkv + begin * 3 * C, L, C, h, HS, probs + block, offset + static_cast<uint64_t>(block)};
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    if (bf16_products) return forward_pair_bf16(problem, probs + block, out + begin * C, dropout_p, seed, slot);
#endif
    forward_pair(problem, probs + block, out + begin * C, dropout_p, seed, slot);
  });
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                        const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS, float dropout_p, uint64_t seed,
                        uint64_t offset, float* scratch, int64_t scratch_floats, bool bf16_products) {
  bf16_products = bf16_products && attention_bf16_available();
  const Checked checked =
      check_arguments(seq_offsets, S, NH, HS, dropout_p, scratch, scratch_floats, "attention_backward");
  check(static_cast<const float*>(dqkv) != qkv && static_cast<const float*>(dqkv) != dout,
        "attention_backward: dqkv must not alias qkv or dout");
  const int64_t C = NH * HS;
  for_each_pair(S, NH, checked, scratch, [&](int64_t s, int64_t h, float* slot) {
    const int64_t begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
    if (L == 0) return;
    const int64_t block = attention_probs_offset(seq_offsets, s, NH) + h * L * L;
    Pair problem{qkv + begin * 3 * C, L, C, h, HS, probs + block, offset + static_cast<uint64_t>(block)};
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    if (bf16_products) {
      return backward_pair_bf16(problem, dqkv + begin * 3 * C, dout + begin * C, dropout_p, seed, slot);
    }
#endif
    backward_pair(problem, dqkv + begin * 3 * C, dout + begin * C, dropout_p, seed, slot);
  });
}

void first_query_attention_forward_train(float* out, float* probs, const float* q, const float* qkv,
                                         const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS,
                                         float dropout_p, uint64_t seed, uint64_t offset, float* scratch,
                                         int64_t scratch_floats) {
  const Checked checked = check_arguments(seq_offsets, S, NH, HS, dropout_p, scratch, scratch_floats,
                                          "first_query_attention_forward_train");
  check(static_cast<const float*>(out) != qkv && static_cast<const float*>(out) != q,
        "first_query_attention_forward_train: out must not alias q or qkv");
  const int64_t C = NH * HS;
  for_each_pair(S, NH, checked, scratch, [&](int64_t s, int64_t h, float* slot) {
    const FirstQueryPair problem = first_query_pair(q, qkv, seq_offsets, s, h, NH, HS, offset);
    float* out_h = out + s * C + h * HS;
    if (problem.L == 0) {  // an empty sequence attends to nothing
      std::fill(out_h, out_h + HS, 0.0f);
      return;
    }
    first_query_forward_pair(problem, probs + NH * seq_offsets[s] + h * problem.L, out_h, dropout_p, seed, slot);
  });
}

void first_query_attention_backward(float* dq, float* dqkv, const float* dout, const float* q, const float* qkv,
                                    const float* probs, const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS,
                                    float dropout_p, uint64_t seed, uint64_t offset, float* scratch,
                                    int64_t scratch_floats) {
  const Checked checked = check_arguments(seq_offsets, S, NH, HS, dropout_p, scratch, scratch_floats,
                                          "first_query_attention_backward");
  for (const float* input : {dout, q, qkv, probs}) {
    check(input != dq && input != dqkv, "first_query_attention_backward: dq and dqkv must not alias the inputs");
  }
  const int64_t C = NH * HS;
  for_each_pair(S, NH, checked, scratch, [&](int64_t s, int64_t h, float* slot) {
    const FirstQueryPair problem = first_query_pair(q, qkv, seq_offsets, s, h, NH, HS, offset);
    float* dq_h = dq + s * C + h * HS;
    if (problem.L == 0) {
      std::fill(dq_h, dq_h + HS, 0.0f);
      return;
    }
    // The slot holds ds (L), then the multipliers (L).
    first_query_backward_pair(problem, probs + NH * seq_offsets[s] + h * problem.L, dout + s * C + h * HS, dq_h,
                              dqkv + seq_offsets[s] * 3 * C, dropout_p, seed, slot, slot + problem.L);
  });
}

}  // namespace scalebert::kernels
