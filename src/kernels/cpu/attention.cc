// Packed variable-length multi-head attention. Per (sequence, head) pair, in that thread's scratch:
//   Kt = K_h^T / sqrt(HS)            (HS, ldl) with ldl = L rounded up to 16, zero beyond L
//   for query blocks of 4 rows:
//     S = Q_blk Kt                    (4, ldl)  register-tiled: 4 queries x 64 keys per FMA sweep over d
//     P = exp(S - rowmax), rowsum     (4, ldl)  vectorized exp
//     ctx = (P V_h) / rowsum          (4, HS)   register-tiled: 4 queries x 64 head columns, sweep over keys
// Q and V are read in place from qkv (each head slice of a row is HS contiguous floats); only K is
// copied, because scores vectorize over keys and K's keys are strided in qkv.
#include "kernels/cpu/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kQueryBlock = 4;  // queries per tile: 4 x 4 accumulators of 16 floats = 16 zmm
constexpr int64_t kPad = 16;        // key dimension padding (one zmm)

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Floats one thread needs: Kt (HS, ldl) + scores (kQueryBlock, ldl), rounded to a cache line; and
// enough for the bf16 path's layout (bf16_layout below), so one scratch serves both.
int64_t bf16_floats(int64_t max_len, int64_t HS);
int64_t per_thread_floats(int64_t max_len, int64_t HS) {
  const int64_t ldl = round_up(std::max<int64_t>(max_len, 1), kPad);
  return std::max(round_up((HS + kQueryBlock) * ldl, kPad), bf16_floats(max_len, HS));
}

// Geometry of one (sequence, head) problem.
struct HeadProblem {
  const float* qkv;  // (L, 3C) rows of this sequence
  float* out;        // (L, C) rows of this sequence
  int64_t L;         // tokens
  int64_t C;         // hidden = NH * HS
  int64_t head;      // h
  int64_t HS;
};

#ifdef __AVX512F__

// kt: (HS, ldl) <- K_h^T * scale, zero in columns L..ldl-1 so full-vector score tiles read zeros.
// 16 keys x 16 head columns per block through simd::transpose16x16 (scalar strided copying took an
// eighth of the head's time). Key rows past L are never read: they may lie past the end of qkv.
void load_keys_transposed(const HeadProblem& p, float* kt, int64_t ldl, float scale) {
  simd::load_transposed(kt, ldl, p.qkv + p.C + p.head * p.HS, 3 * p.C, p.L, p.HS, scale);
}

#else

// kt: (HS, ldl) <- K_h^T * scale, zero in columns L..ldl-1 so full-vector score tiles read zeros.
void load_keys_transposed(const HeadProblem& p, float* kt, int64_t ldl, float scale) {
  const int64_t row_stride = 3 * p.C;
  const float* keys = p.qkv + p.C + p.head * p.HS;  // K_h row j at keys + j * row_stride
  // d outer: the stores run along Kt's rows and the strided reads hit the same L rows' cache
  // lines for every d; the other order (strided stores) measured 4x slower.
  for (int64_t d = 0; d < p.HS; ++d) {
    float* kt_row = kt + d * ldl;  // (ldl)
    for (int64_t j = 0; j < p.L; ++j) kt_row[j] = keys[j * row_stride + d] * scale;
    for (int64_t j = p.L; j < ldl; ++j) kt_row[j] = 0.0f;
  }
}

#endif

#ifdef __AVX512F__

// scores[r][j0 .. j0 + 16V) = sum_d q[r][d] * kt[d][j0 + ..] for the 4 query rows q[0..3].
template <int V>
inline void score_tile(const float* const q[kQueryBlock], const float* kt, int64_t ldl, int64_t HS,
                       float* scores, int64_t j0) {
  __m512 acc[kQueryBlock][V];
  for (int r = 0; r < kQueryBlock; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t d = 0; d < HS; ++d) {
    const float* kt_row = kt + d * ldl + j0;
    __m512 k[V];
    for (int v = 0; v < V; ++v) k[v] = _mm512_loadu_ps(kt_row + v * simd::kLanes);
    for (int r = 0; r < kQueryBlock; ++r) {
      const __m512 qb = _mm512_set1_ps(q[r][d]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(qb, k[v], acc[r][v]);
    }
  }
  for (int r = 0; r < kQueryBlock; ++r) {
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(scores + r * ldl + j0 + v * simd::kLanes, acc[r][v]);
  }
}

// out[r][c0 .. c0 + 16V) = inv_sum[r] * sum_j probs[r][j] * V[j][c0 + ..] for r < rows;
// masks[v] selects the valid head columns of vector v (the last one may be partial).
template <int V>
inline void context_tile(const float* probs, int64_t ldl, const float* values, int64_t value_stride, int64_t L,
                         const __mmask16 masks[V], const float inv_sum[kQueryBlock], float* const out[kQueryBlock],
                         int64_t rows, int64_t c0) {
  __m512 acc[kQueryBlock][V];
  for (int r = 0; r < kQueryBlock; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t j = 0; j < L; ++j) {
    const float* value_row = values + j * value_stride + c0;
    __m512 x[V];
    for (int v = 0; v < V; ++v) x[v] = _mm512_maskz_loadu_ps(masks[v], value_row + v * simd::kLanes);
    for (int r = 0; r < kQueryBlock; ++r) {
      const __m512 pb = _mm512_set1_ps(probs[r * ldl + j]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(pb, x[v], acc[r][v]);
    }
  }
  // Constant trip count with a guard (not `r < rows`): a runtime index into acc would force the
  // accumulators out of registers for the whole sweep above (measured: 43 -> 65 GFLOP/s).
  for (int r = 0; r < kQueryBlock; ++r) {
    if (r >= rows) break;
    const __m512 scale = _mm512_set1_ps(inv_sum[r]);
    for (int v = 0; v < V; ++v) {
      _mm512_mask_storeu_ps(out[r] + c0 + v * simd::kLanes, masks[v], _mm512_mul_ps(acc[r][v], scale));
    }
  }
}

void attention_head(const HeadProblem& p, float* scratch) {
  const int64_t ldl = round_up(p.L, kPad);
  float* kt = scratch;                // (HS, ldl)
  float* scores = kt + p.HS * ldl;    // (kQueryBlock, ldl)
  load_keys_transposed(p, kt, ldl, 1.0f / std::sqrt(static_cast<float>(p.HS)));
  const int64_t row_stride = 3 * p.C;
  const float* queries = p.qkv + p.head * p.HS;          // Q_h row i at queries + i * row_stride
  const float* values = p.qkv + 2 * p.C + p.head * p.HS; // V_h row j at values + j * row_stride

  for (int64_t i0 = 0; i0 < p.L; i0 += kQueryBlock) {
    const int64_t rows = std::min(kQueryBlock, p.L - i0);
    // A short last block repeats its last query in the unused tile rows (cheaper than a tail kernel).
    const float* q[kQueryBlock];
    float* out_rows[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) {
      const int64_t i = i0 + std::min(r, rows - 1);
      q[r] = queries + i * row_stride;
      out_rows[r] = p.out + i * p.C + p.head * p.HS;
    }
    int64_t j0 = 0;
    for (; j0 + 4 * simd::kLanes <= ldl; j0 += 4 * simd::kLanes) score_tile<4>(q, kt, ldl, p.HS, scores, j0);
    for (; j0 < ldl; j0 += simd::kLanes) score_tile<1>(q, kt, ldl, p.HS, scores, j0);

    float inv_sum[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) {
      float* row = scores + r * ldl;  // (L) valid keys; the padding columns are ignored
      const float max = simd::row_max(row, p.L);
      inv_sum[r] = 1.0f / simd::exp_shift_sum(row, p.L, max);
    }

    for (int64_t c0 = 0; c0 < p.HS; c0 += 4 * simd::kLanes) {
      const int64_t width = std::min<int64_t>(4 * simd::kLanes, p.HS - c0);
      const int64_t vectors = (width + simd::kLanes - 1) / simd::kLanes;
      __mmask16 masks[4];
      for (int64_t v = 0; v < 4; ++v) masks[v] = simd::tail_mask(std::max<int64_t>(0, width - v * simd::kLanes));
      switch (vectors) {
        case 4: context_tile<4>(scores, ldl, values, row_stride, p.L, masks, inv_sum, out_rows, rows, c0); break;
        case 3: context_tile<3>(scores, ldl, values, row_stride, p.L, masks, inv_sum, out_rows, rows, c0); break;
        case 2: context_tile<2>(scores, ldl, values, row_stride, p.L, masks, inv_sum, out_rows, rows, c0); break;
        default: context_tile<1>(scores, ldl, values, row_stride, p.L, masks, inv_sum, out_rows, rows, c0); break;
      }
    }
  }
}

#else  // plain C++ with the same blocking; inner loops run over contiguous keys or head columns.

void attention_head(const HeadProblem& p, float* scratch) {
  const int64_t ldl = round_up(p.L, kPad);
  float* kt = scratch;              // (HS, ldl)
  float* scores = kt + p.HS * ldl;  // (1, ldl): one query at a time here
  load_keys_transposed(p, kt, ldl, 1.0f / std::sqrt(static_cast<float>(p.HS)));
  const int64_t row_stride = 3 * p.C;
  const float* queries = p.qkv + p.head * p.HS;
  const float* values = p.qkv + 2 * p.C + p.head * p.HS;
  for (int64_t i = 0; i < p.L; ++i) {
    const float* q = queries + i * row_stride;  // (HS)
    for (int64_t j = 0; j < p.L; ++j) scores[j] = 0.0f;
    for (int64_t d = 0; d < p.HS; ++d) {
      const float qd = q[d];
      const float* kt_row = kt + d * ldl;
#pragma omp simd
      for (int64_t j = 0; j < p.L; ++j) scores[j] += qd * kt_row[j];
    }
    float max = scores[0];
    for (int64_t j = 1; j < p.L; ++j) max = std::max(max, scores[j]);
    double sum = 0.0;  // serial sum: double keeps long rows as accurate as the vector path
    for (int64_t j = 0; j < p.L; ++j) {
      scores[j] = std::exp(scores[j] - max);
      sum += scores[j];
    }
    float* o = p.out + i * p.C + p.head * p.HS;  // (HS)
    for (int64_t c = 0; c < p.HS; ++c) o[c] = 0.0f;
    for (int64_t j = 0; j < p.L; ++j) {
      const float pj = static_cast<float>(scores[j] / sum);
      const float* v = values + j * row_stride;
#pragma omp simd
      for (int64_t c = 0; c < p.HS; ++c) o[c] += pj * v[c];
    }
  }
}

#endif

// ---------------------------------------------------------------------------------------------
// bf16 products (VDPBF16PS) for the low-precision engines. Per (sequence, head) pair, with pairs
// of bf16 packed in 32-bit words (word = (x[2k], x[2k+1]), the order VDPBF16PS multiplies in):
//   kb  (ldl, hpr)   K_h rows * scale in bf16, natural order (word k = dims 2k, 2k+1), zero rows >= L
//   ktp (hp, ldl)    kb transposed as words: ktp[k][j] = (K[j][2k], K[j][2k+1]) * scale
//   vp  (ldl/2, HSr) vp[m][c] = (V[2m][c], V[2m+1][c]), zero rows >= L
//   scores (4, ldl)  f32: S = Q_blk Kt by VDPBF16PS over word k, then softmax in f32 as above
//   pw  (4, ldl/2)   P rows in bf16 (padding keys zeroed), natural order: word m = (P[2m], P[2m+1])
//   ctx = (P V_h) / rowsum by VDPBF16PS over word m
// ldl = L rounded up to 32 (whole words of keys, whole 16-key vectors of words), hp = ceil(HS / 2),
// hpr = hp rounded up to 16, HSr = HS rounded up to 16. Accumulation is f32; inputs are rounded to
// bf16 (relative error 2^-9), as in oneDNN's bf16 matmul.

constexpr int64_t kBf16KeyPad = 32;

struct Bf16Layout {
  int64_t ldl, hp, hpr, HSr;
  int64_t kb, ktp, vp, scores, pw, qw, total;  // offsets in 32-bit units
};

Bf16Layout bf16_layout(int64_t max_len, int64_t HS) {
  Bf16Layout layout{};
  layout.ldl = round_up(std::max<int64_t>(max_len, 1), kBf16KeyPad);
  layout.hp = (HS + 1) / 2;
  layout.hpr = round_up(layout.hp, kPad);
  layout.HSr = round_up(HS, kPad);
  int64_t at = 0;
  auto take = [&at](int64_t count) {
    const int64_t offset = at;
    at += round_up(count, kPad);
    return offset;
  };
  layout.kb = take(layout.ldl * layout.hpr);
  layout.ktp = take(layout.hp * layout.ldl);
  layout.vp = take(layout.ldl / 2 * layout.HSr);
  layout.scores = take(kQueryBlock * layout.ldl);
  layout.pw = take(kQueryBlock * layout.ldl / 2);
  layout.qw = take(kQueryBlock * layout.hpr);
  layout.total = at;
  return layout;
}

int64_t bf16_floats(int64_t max_len, int64_t HS) { return bf16_layout(max_len, HS).total; }

#if defined(__AVX512F__) && defined(__AVX512BF16__)

inline __m512bh as_bh(__m512i words) { return reinterpret_cast<__m512bh>(words); }

// dst: words of bf16(src[0..n) * scale) in natural order, zero up to `words` words.
inline void to_bf16_words(uint32_t* dst, const float* src, int64_t n, float scale, int64_t words) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t k = 0; k < words; k += simd::kLanes) {  // 16 words = 32 floats per step
    const int64_t i = 2 * k;
    const __m512 lo = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(simd::tail_mask(std::max<int64_t>(0, n - i)), src + i));
    const __m512 hi = _mm512_mul_ps(
        s, _mm512_maskz_loadu_ps(simd::tail_mask(std::max<int64_t>(0, n - i - simd::kLanes)), src + i + simd::kLanes));
    _mm512_storeu_si512(dst + k, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
  }
}

void attention_head_bf16(const HeadProblem& p, float* scratch) {
  const Bf16Layout layout = bf16_layout(p.L, p.HS);
  const int64_t ldl = layout.ldl, hp = layout.hp, hpr = layout.hpr, HSr = layout.HSr;
  uint32_t* words = reinterpret_cast<uint32_t*>(scratch);
  uint32_t* kb = words + layout.kb;
  uint32_t* ktp = words + layout.ktp;
  uint32_t* vp = words + layout.vp;
  float* scores = scratch + layout.scores;
  uint32_t* pw = words + layout.pw;
  uint32_t* qw = words + layout.qw;
  const int64_t row_stride = 3 * p.C;
  const float* queries = p.qkv + p.head * p.HS;
  const float* keys = p.qkv + p.C + p.head * p.HS;
  const float* values = p.qkv + 2 * p.C + p.head * p.HS;

  // K rows in bf16, then transposed 16 keys x 16 words at a time.
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.HS));
  for (int64_t j = 0; j < ldl; ++j) {
    if (j < p.L) {
      to_bf16_words(kb + j * hpr, keys + j * row_stride, p.HS, scale, hpr);
    } else {
      std::fill(kb + j * hpr, kb + (j + 1) * hpr, 0u);
    }
  }
  for (int64_t k0 = 0; k0 < hp; k0 += simd::kLanes) {
    for (int64_t j0 = 0; j0 < ldl; j0 += simd::kLanes) {
      __m512 block[16];
      for (int64_t j = 0; j < simd::kLanes; ++j) block[j] = _mm512_loadu_ps(kb + (j0 + j) * hpr + k0);
      simd::transpose16x16(block);
      for (int64_t k = 0; k < std::min<int64_t>(simd::kLanes, hp - k0); ++k) {
        _mm512_storeu_ps(ktp + (k0 + k) * ldl + j0, block[k]);
      }
    }
  }
  // V as pairs of rows: cvtne2ps puts row 2m in the low 16 bf16 and row 2m+1 in the high 16; the
  // permute interleaves them into words (V[2m][c], V[2m+1][c]).
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t m = 0; m < ldl / 2; ++m) {
    const int64_t j = 2 * m;
    for (int64_t c0 = 0; c0 < HSr; c0 += simd::kLanes) {
      const __mmask16 columns = simd::tail_mask(std::max<int64_t>(0, p.HS - c0));
      const __m512 even = j < p.L ? _mm512_maskz_loadu_ps(columns, values + j * row_stride + c0) : _mm512_setzero_ps();
      const __m512 odd =
          j + 1 < p.L ? _mm512_maskz_loadu_ps(columns, values + (j + 1) * row_stride + c0) : _mm512_setzero_ps();
      const __m512i packed = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
      _mm512_storeu_si512(vp + m * HSr + c0, _mm512_permutexvar_epi16(interleave, packed));
    }
  }

  const int64_t key_words = (p.L + 1) / 2;
  for (int64_t i0 = 0; i0 < p.L; i0 += kQueryBlock) {
    const int64_t rows = std::min(kQueryBlock, p.L - i0);
    float* out_rows[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) {
      const int64_t i = i0 + std::min(r, rows - 1);  // short last block: repeat its last query
      to_bf16_words(qw + r * hpr, queries + i * row_stride, p.HS, 1.0f, hpr);
      out_rows[r] = p.out + i * p.C + p.head * p.HS;
    }
    // Scores: 4 queries x 16 keys per accumulator, one VDPBF16PS per word of head dimensions.
    for (int64_t j0 = 0; j0 < ldl; j0 += simd::kLanes) {
      __m512 acc[kQueryBlock];
      for (int r = 0; r < kQueryBlock; ++r) acc[r] = _mm512_setzero_ps();
      for (int64_t k = 0; k < hp; ++k) {
        const __m512bh key_pairs = as_bh(_mm512_loadu_si512(ktp + k * ldl + j0));
        for (int r = 0; r < kQueryBlock; ++r) {
          acc[r] = _mm512_dpbf16_ps(acc[r], as_bh(_mm512_set1_epi32(static_cast<int>(qw[r * hpr + k]))), key_pairs);
        }
      }
      for (int r = 0; r < kQueryBlock; ++r) _mm512_storeu_ps(scores + r * ldl + j0, acc[r]);
    }
    float inv_sum[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) {
      float* row = scores + r * ldl;
      const float max = simd::row_max(row, p.L);
      inv_sum[r] = 1.0f / simd::exp_shift_sum(row, p.L, max);
      std::fill(row + p.L, row + ldl, 0.0f);  // padding keys get no probability
      to_bf16_words(pw + r * (ldl / 2), row, ldl, 1.0f, ldl / 2);
    }
    // Context: 4 queries x 64 head columns, one VDPBF16PS per pair of keys.
    for (int64_t c0 = 0; c0 < HSr; c0 += 4 * simd::kLanes) {
      const int64_t vectors = std::min<int64_t>(4, (HSr - c0) / simd::kLanes);
      __m512 acc[kQueryBlock][4];
      for (int r = 0; r < kQueryBlock; ++r) {
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
      }
      for (int64_t m = 0; m < key_words; ++m) {
        __m512bh value_pairs[4];
        for (int v = 0; v < 4; ++v) {
          value_pairs[v] = as_bh(v < vectors ? _mm512_loadu_si512(vp + m * HSr + c0 + v * simd::kLanes)
                                             : _mm512_setzero_si512());
        }
        for (int r = 0; r < kQueryBlock; ++r) {
          const __m512bh prob_pair = as_bh(_mm512_set1_epi32(static_cast<int>(pw[r * (ldl / 2) + m])));
          for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], prob_pair, value_pairs[v]);
        }
      }
      for (int r = 0; r < kQueryBlock; ++r) {
        if (r >= rows) break;
        const __m512 scale_row = _mm512_set1_ps(inv_sum[r]);
        for (int v = 0; v < vectors; ++v) {
          const __mmask16 columns = simd::tail_mask(std::max<int64_t>(0, p.HS - c0 - v * simd::kLanes));
          _mm512_mask_storeu_ps(out_rows[r] + c0 + v * simd::kLanes, columns, _mm512_mul_ps(acc[r][v], scale_row));
        }
      }
    }
  }
}

#endif
}  // namespace

int64_t attention_scratch_floats(int64_t max_len, int64_t HS, int threads) {
  check(max_len >= 0 && HS > 0 && threads > 0, "attention_scratch_floats: need max_len >= 0, HS > 0, threads > 0, got max_len=",
        max_len, " HS=", HS, " threads=", threads);
  return per_thread_floats(max_len, HS) * threads;
}

int64_t max_sequence_length(const int64_t* seq_offsets, int64_t S) {
  check(S >= 0, "max_sequence_length: S must be >= 0, got ", S);
  check(seq_offsets[0] == 0, "seq_offsets[0] must be 0, got ", seq_offsets[0]);
  int64_t longest = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t length = seq_offsets[s + 1] - seq_offsets[s];
    check(length >= 0, "seq_offsets must not decrease: seq_offsets[", s, "]=", seq_offsets[s], " > seq_offsets[",
          s + 1, "]=", seq_offsets[s + 1]);
    longest = std::max(longest, length);
  }
  return longest;
}

bool attention_bf16_available() {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
  return true;
#else
  return false;
#endif
}

namespace {

template <typename Head>
void run_pairs(const char* who, float* out, const float* qkv, const int64_t* seq_offsets, int64_t S, int64_t NH,
               int64_t HS, float* scratch, int64_t scratch_floats, Head&& head) {
  check(NH > 0 && HS > 0, who, ": need NH > 0 and HS > 0, got NH=", NH, " HS=", HS);
  const int64_t max_len = max_sequence_length(seq_offsets, S);
  // Inside someone else's parallel region run on this thread alone (one scratch slot).
  const bool nested = omp_in_parallel() != 0;
  const int threads = nested ? 1 : omp_get_max_threads();
  const int64_t slot = per_thread_floats(max_len, HS);
  check(scratch != nullptr && scratch_floats >= slot * threads, who, ": scratch has ", scratch_floats,
        " floats, needs attention_scratch_floats(max_len=", max_len, ", HS=", HS, ", threads=", threads,
        ") = ", slot * threads);
  const int64_t C = NH * HS;
  const int64_t pairs = S * NH;
  // Sequences differ in length, so hand out (sequence, head) pairs one at a time.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (pairs > 1)
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t s = pair / NH;
    const int64_t begin = seq_offsets[s];
    HeadProblem problem{qkv + begin * 3 * C, out + begin * C, seq_offsets[s + 1] - begin, C, pair % NH, HS};
    if (problem.L == 0) continue;
    head(problem, scratch + omp_get_thread_num() * slot);
  }
}

}  // namespace

void attention_forward(float* out, const float* qkv, const int64_t* seq_offsets, int64_t S, int64_t NH,
                       int64_t HS, float* scratch, int64_t scratch_floats) {
  run_pairs("attention_forward", out, qkv, seq_offsets, S, NH, HS, scratch, scratch_floats,
            [](const HeadProblem& problem, float* slot) { attention_head(problem, slot); });
}

void attention_forward_bf16(float* out, const float* qkv, const int64_t* seq_offsets, int64_t S, int64_t NH,
                            int64_t HS, float* scratch, int64_t scratch_floats) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
  run_pairs("attention_forward_bf16", out, qkv, seq_offsets, S, NH, HS, scratch, scratch_floats,
            [](const HeadProblem& problem, float* slot) { attention_head_bf16(problem, slot); });
#else
  attention_forward(out, qkv, seq_offsets, S, NH, HS, scratch, scratch_floats);
#endif
}

}  // namespace scalebert::kernels
