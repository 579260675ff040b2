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

// Floats one thread needs: Kt (HS, ldl) + scores (kQueryBlock, ldl), rounded to a cache line.
int64_t per_thread_floats(int64_t max_len, int64_t HS) {
  const int64_t ldl = round_up(std::max<int64_t>(max_len, 1), kPad);
  return round_up((HS + kQueryBlock) * ldl, kPad);
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

// In-register transpose of a 16 x 16 float block: r[i] holds row i on entry, column i on exit.
// Three stages: interleave pairs of rows (unpack), then pairs of pairs inside 128-bit lanes
// (shuffle_ps), then 128-bit lanes across registers (shuffle_f32x4 twice).
inline void transpose_16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}

// kt: (HS, ldl) <- K_h^T * scale, zero in columns L..ldl-1 so full-vector score tiles read zeros.
// 16 keys x 16 head columns per block through transpose_16x16 (scalar strided copying took an
// eighth of the head's time). Key rows past L are never read: they may lie past the end of qkv.
void load_keys_transposed(const HeadProblem& p, float* kt, int64_t ldl, float scale) {
  const int64_t row_stride = 3 * p.C;
  const float* keys = p.qkv + p.C + p.head * p.HS;  // K_h row j at keys + j * row_stride
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t d0 = 0; d0 < p.HS; d0 += simd::kLanes) {
    const int64_t width = std::min<int64_t>(simd::kLanes, p.HS - d0);
    const __mmask16 columns = simd::tail_mask(width);
    for (int64_t j0 = 0; j0 < ldl; j0 += simd::kLanes) {
      __m512 block[16];
      for (int64_t j = 0; j < simd::kLanes; ++j) {
        block[j] = j0 + j < p.L ? _mm512_maskz_loadu_ps(columns, keys + (j0 + j) * row_stride + d0)
                                : _mm512_setzero_ps();
      }
      transpose_16x16(block);
      for (int64_t d = 0; d < width; ++d) _mm512_storeu_ps(kt + (d0 + d) * ldl + j0, _mm512_mul_ps(block[d], s));
    }
  }
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

void attention_forward(float* out, const float* qkv, const int64_t* seq_offsets, int64_t S, int64_t NH,
                       int64_t HS, float* scratch, int64_t scratch_floats) {
  check(NH > 0 && HS > 0, "attention_forward: need NH > 0 and HS > 0, got NH=", NH, " HS=", HS);
  const int64_t max_len = max_sequence_length(seq_offsets, S);
  // Inside someone else's parallel region run on this thread alone (one scratch slot).
  const bool nested = omp_in_parallel() != 0;
  const int threads = nested ? 1 : omp_get_max_threads();
  const int64_t slot = per_thread_floats(max_len, HS);
  check(scratch != nullptr && scratch_floats >= slot * threads, "attention_forward: scratch has ", scratch_floats,
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
    attention_head(problem, scratch + omp_get_thread_num() * slot);
  }
}

}  // namespace scalebert::kernels
