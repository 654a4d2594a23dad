// Launch wrappers of the CUDA kernels of the V4 forward, callable from plain C++.
//
// Conventions shared by every kernel:
//  - activations are fp32, row-major, one row per token (or per MoE slot), with explicit row
//    strides in elements;
//  - linear weights stay in their stored format (bf16, fp8 e4m3 with 128x128 e8m0 scales,
//    packed e2m1 with per-32 e8m0 scales) and are decoded inside the kernels;
//  - the KV cache has exactly the byte layout of src/kv/kv_layout.h and kv_entry_codec.h, reached
//    through the block tables of each chunk (BatchView);
//  - every reduction runs in an order that does not depend on the batch: a row's result is the
//    same bits whatever else is in the batch (batch invariance).
// Each wrapper enqueues on `stream` and checks the launch; none synchronizes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace longctx::cuda {

// Integer codes shared with the host enums (WeightFormat, KvDtype, IndexerKeyDtype).
enum WeightCode : int { kWeightBF16 = 0, kWeightFP8 = 1, kWeightFP4 = 2 };
enum KvCode : int { kKvF32 = 0, kKvBF16 = 1, kKvFP8 = 2 };
enum KeyCode : int { kKeyF32 = 0, kKeyBF16 = 1, kKeyFP4 = 2 };
enum ScoringCode : int { kScoreSoftmax = 0, kScoreSigmoid = 1, kScoreSqrtSoftplus = 2 };

// ---------------------------------------------------------------- linear.cu
// A weight matrix [out, in] in stored format; for expert groups, group g's weight and scales
// start group_weight_bytes / group_scale_bytes after group 0's.
struct LinearView {
  const uint8_t* weight = nullptr;
  const uint8_t* scale = nullptr;
  int format = kWeightBF16;
  int64_t out = 0;
  int64_t in = 0;
  int64_t group_weight_bytes = 0;
  int64_t group_scale_bytes = 0;
};

// Scratch for split-K partial sums (the K-chunk partials of small problems). Calls with at most
// gemv_max_rows rows (per busy expert group, on average) stream the weights with the GEMV kernel
// instead of the tiled one: same operations in the same order, the same bits; 0 forces the tiled
// kernel (tests compare the two).
struct LinearWorkspace {
  float* partial = nullptr;
  size_t floats = 0;
  int sm_count = 132;
  int gemv_max_rows = 8;
  // Calls with at least this many rows run the tensor-core GEMM (fp8 activations, fp32
  // promotion per scale block): the precision of the reference's fp8 GEMM, not the fp32 chains
  // above, so not batch-invariant. 0: never (batch-invariant mode).
  int tensor_core_min_rows = 0;
  // Scratch of the tensor-core grouped GEMM (quantized activations, converted fp4 weights):
  // at least grouped_linear_tc_scratch_bytes(); too little falls back to the fp32 kernels.
  uint8_t* tc_scratch = nullptr;
  size_t tc_scratch_bytes = 0;
  // Scratch of the fp8 tensor-core path (gemm_fp8_tc.h), owned by the caller: a cuBLASLt handle
  // (cublasLtHandle_t), its workspace, and room for the quantized activations
  // (fp8_tc_scratch_bytes). Without a handle, or with too little scratch, fp8 calls stay on the
  // fp32 kernels.
  void* blas_handle = nullptr;
  void* blas_workspace = nullptr;
  size_t blas_workspace_bytes = 0;
  void* fp8_scratch = nullptr;
  size_t fp8_scratch_bytes = 0;
  // Scratch of the bf16 tensor-core path of the grouped wo_a (gemm_bf16_tc.h; it shares the
  // cuBLASLt handle and workspace above): the bf16 weight and activations
  // (bf16_tc_scratch_bytes). Too little keeps those calls on the fp32 kernels.
  void* bf16_scratch = nullptr;
  size_t bf16_scratch_bytes = 0;
  // Scratch of the bf16-weight path (gemm_bf16_split.h; it shares the cuBLASLt handle and
  // workspace above): the activations split into bf16 terms (bf16_split_scratch_bytes). Too
  // little keeps those calls on the fp32 kernels.
  void* split_scratch = nullptr;
  size_t split_scratch_bytes = 0;
};

// y[r, o] = sum_k x[r, c(o) + k] W[o, k] for r < rows; c(o) = (o / x_group_outputs) * in when
// x_group_outputs > 0 (the grouped wo_a), else 0. Each output sums its K in chunks of 256, each
// chunk sequentially, chunk partials added in order: the same bits for any batch size. Except:
// fp8 weights with rows >= workspace.tensor_core_min_rows (> 0) run on the tensor cores, not
// batch-invariant: the grouped wo_a (x_group_outputs > 0) on bf16 ones with the activations
// rounded to bf16 (gemm_bf16_tc.h), the others on fp8 ones with fp8 activations and fp32
// promotion per 128-deep block (gemm_fp8_tc.h). So do bf16 weights of at least
// kBf16SplitMinOutputs outputs (x_group_outputs == 0), on bf16 ones at fp32 accuracy: the
// activations split into three bf16 terms (gemm_bf16_split.h).
void linear(const LinearView& w, const float* x, int64_t x_stride, int64_t rows, float* y,
            int64_t y_stride, int64_t x_group_outputs, const LinearWorkspace& workspace,
            cudaStream_t stream);

// ---- fp8 activations quantized once (fast mode)
// The e4m3 form of one fp32 activation tensor x [rows, width] (width % 128 == 0) for the fp8
// tensor-core GEMM (gemm_fp8_tc.h), made by one pass over x and shared by every fp8 linear that
// reads x. The codes and scales are exactly those the GEMM's own quantization finds in
// fp8_simulate_rows(x), and the tail rows exactly that simulation, so a linear on this view
// gives the bits of linear() on the simulated copy.
//  - rows [0, tc_rows), tc_rows = rows / 4 * 4 (cuBLASLt wants the scale vectors 16-byte
//    aligned): codes [tc_rows, width] e4m3 row-major; scales fp32 powers of two, block-major:
//    the scale of row r, block b at scales[b * tc_rows + r];
//  - rows [tc_rows, rows) (0 to 3, for the fp32 kernels): fp8-simulated fp32 at
//    tail + (r - tc_rows) * tail_stride.
// Producers: fp8_quantize_activations (from x), rms_norm_quantize_rows (q_norm),
// swiglu_quantize (the shared expert's hidden). Consumer: linear_fp8.
struct Fp8Activations {
  uint8_t* codes = nullptr;
  float* scales = nullptr;
  float* tail = nullptr;
  int64_t tail_stride = 0;
  int64_t rows = 0;
  int64_t tc_rows = 0;
  int64_t width = 0;
};
// Bytes of the buffer that holds the view of `rows` rows of `width` (codes, scales, tail).
size_t fp8_activation_bytes(int64_t rows, int64_t width);
// The view's pointers into `buffer` (256-byte aligned, fp8_activation_bytes(rows, width)).
Fp8Activations fp8_activations_in(void* buffer, int64_t rows, int64_t width);
// One pass over x (row stride x_stride, 16-byte aligned rows) into the view in `buffer`. With
// `simulated` (row stride simulated_stride), the fp8-simulated copy of every row is written too,
// bitwise fp8_simulate_rows(x) (for the routed experts), and holds the view's tail rows.
Fp8Activations fp8_quantize_activations(const float* x, int64_t x_stride, int64_t rows, int64_t width,
                                        void* buffer, cudaStream_t stream, float* simulated = nullptr,
                                        int64_t simulated_stride = 0);
// y = x W^T for an fp8 weight on quantized activations: the tensor-core GEMM on the first
// tc_rows rows, the fp32 kernels on the tail, as linear() splits the rows. The bits of
// linear(w, fp8_simulate_rows(x), ...) with the same workspace. The caller checks
// fp8_tc_supported(w, x.rows, workspace) first (fails otherwise: codes alone cannot feed the
// fp32 kernels). Ignores tensor_core_min_rows.
void linear_fp8(const LinearView& w, const Fp8Activations& x, float* y, int64_t y_stride,
                const LinearWorkspace& workspace, cudaStream_t stream);

// Expert groups: group g owns output slots [offsets[g], offsets[g] + counts[g]) (device arrays);
// slot s reads x row x_rows[s] and writes y row s. total_slots bounds the slots. group_list
// (optional, device, >= min(groups, total_slots) entries) lists the busy groups, -1 after the
// last: then blocks go to those groups only (decode touches 6 experts of 256).
void grouped_linear(const LinearView& w, int groups, const int32_t* offsets, const int32_t* counts,
                    int64_t total_slots, const float* x, int64_t x_stride, const int32_t* x_rows,
                    float* y, int64_t y_stride, const LinearWorkspace& workspace,
                    cudaStream_t stream, const int32_t* group_list = nullptr);

// ---------------------------------------------------------------- grouped_gemm_tc.cu
// The tensor-core path of grouped_linear (fp4 / fp8 weights, activations already fp8-simulated:
// e4m3 x e4m3 products with fp32 promotion per 128-block); grouped_linear dispatches to it when
// total_slots >= workspace.tensor_core_min_rows > 0. Returns false, enqueuing nothing, when the
// format, layout or scratch does not allow it, or with under 16 rows per busy group on average
// (streaming the weights wins there).
// fp4 weights reach the tensor cores as e4m3 either converted inside the GEMM (no scratch; wins
// with few rows per group: all experts busy at prefill) or by a separate conversion pass over
// batches of 8 groups (scratch; wins with many rows per group, the conversion amortized over
// more row tiles). Both give bitwise the same results. kAuto picks by total_slots / groups
// (LONGCTX_CUDA_TC_FP4_PASS_ROWS overrides the threshold; 0: always the pass), and falls back to
// in-GEMM conversion when the scratch is too small for the pass.
enum class Fp4Conversion { kAuto, kInGemm, kPass };
bool grouped_linear_tc(const LinearView& w, int groups, const int32_t* offsets, const int32_t* counts,
                       int64_t total_slots, const float* x, int64_t x_stride, const int32_t* x_rows, float* y,
                       int64_t y_stride, const LinearWorkspace& workspace, cudaStream_t stream,
                       const int32_t* group_list = nullptr, Fp4Conversion fp4 = Fp4Conversion::kAuto);
// Scratch bytes that path needs for total_slots slots: the quantized activations (with the
// conversion pass: up to 8 converted fp4 groups too).
size_t grouped_linear_tc_scratch_bytes(const LinearView& w, int groups, int64_t total_slots,
                                       Fp4Conversion fp4 = Fp4Conversion::kAuto);

// fp8 simulation of activations, blocks of 128 along each row (cols % 128 == 0): out = the e4m3
// value times the power-of-two block scale. out may alias x.
void fp8_simulate_rows(const float* x, int64_t rows, int64_t cols, int64_t x_stride, float* out,
                       int64_t out_stride, cudaStream_t stream);

// ---------------------------------------------------------------- norm_embed.cu
// out[r, j, :] = embed[tokens[r], :] for j < copies (bf16 table [vocab, hidden]).
void embedding(const uint16_t* table, int64_t hidden, const int32_t* tokens, int64_t rows,
               int copies, float* out, cudaStream_t stream);
// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight (weight may be null); out may alias x.
void rms_norm_rows(const float* x, int64_t rows, int64_t n, int64_t stride, const float* weight,
                   float eps, float* out, cudaStream_t stream);
// rms_norm_rows (the same bits) straight into fp8 form: the view of the normed rows in `buffer`
// (fp8_activation_bytes(rows, n); n % 128 == 0, 16-byte aligned rows), one pass over x. `out`
// (may alias x, may be null) also gets the normed fp32 rows.
Fp8Activations rms_norm_quantize_rows(const float* x, int64_t rows, int64_t n, int64_t stride,
                                      const float* weight, float eps, void* buffer, float* out,
                                      cudaStream_t stream);
// streams[r, j, :] = e[r, :] + h[r * hc + j, :].
void add_projected_streams(const float* e, const float* h, int64_t rows, int hc, int64_t hidden,
                           float* streams, cudaStream_t stream);
// dst[i, :] = src[index[i], :] (width floats per row).
void gather_rows(const float* src, const int32_t* index, int64_t count, int64_t width, float* dst,
                 cudaStream_t stream);

// ---------------------------------------------------------------- hyper_connection.cu
struct HyperConnectionView {
  const float* fn = nullptr;     // [mix, hc * hidden]
  const float* base = nullptr;   // [mix]
  const float* scale = nullptr;  // [3] (sublayers) or [1] (heads)
};
// Scratch floats hc_pre / hc_head need for `rows` tokens.
size_t hc_workspace_floats(int64_t rows, int hc, int64_t hidden);
// Per token: mixes, Sinkhorn, y = sum_j pre_j stream_j, then y = RMSNorm(y) * norm_weight.
void hc_pre(const HyperConnectionView& w, const float* streams, int64_t rows, int hc,
            int64_t hidden, int iterations, float hc_eps, float norm_eps, const float* norm_weight,
            float* y, float* post, float* comb, float* workspace, cudaStream_t stream,
            bool reference_kernels = false);
// streams[r, k, :] = post[r, k] * out[r, :] + sum_j comb[r, j, k] * streams[r, j, :].
// (reference_kernels: the first kernels, which the prefill paths match bitwise; for tests.)
void hc_post(const float* out, const float* post, const float* comb, int64_t rows, int hc,
             int64_t hidden, float* streams, cudaStream_t stream, bool reference_kernels = false);
// Final merge of the streams of rows row_index[i] then RMSNorm(norm_weight): y [count, hidden].
void hc_head(const HyperConnectionView& w, const float* streams, const int32_t* row_index,
             int64_t count, int hc, int64_t hidden, float hc_eps, float norm_eps,
             const float* norm_weight, float* y, float* workspace, cudaStream_t stream);

// ---------------------------------------------------------------- rope.cu
// RoPE tables are inverse frequencies [rope_dim / 2]; angles are float(pos) * freq in fp32,
// their cos/sin taken in double, as the CPU reference does.
// x[r, 0:rope_dim) (row stride) rotated by +pos[r] (or -pos[r]).
void rope_rows(float* x, int64_t rows, int64_t stride, int rope_dim, const int32_t* pos,
               const float* inv_freq, bool inverse, cudaStream_t stream);
// q [rows, heads, d]: per-head RMSNorm without weight, then RoPE of the last rope_dim dims.
void q_norm_rope(float* q, int64_t rows, int heads, int d, int rope_dim, const int32_t* pos,
                 const float* inv_freq, float eps, cudaStream_t stream);
// kv [rows, d]: RMSNorm(norm), RoPE of the last rope_dim dims, fp8 simulation of the first
// d - rope_dim in blocks of 64, then the storage round trip of kv_dtype.
void kv_norm_rope_quant(float* kv, int64_t rows, int d, int rope_dim, const float* norm,
                        const int32_t* pos, const float* inv_freq, float eps, int kv_dtype,
                        cudaStream_t stream);
// Indexer queries q [rows, heads, dim]: RoPE of the last rope_dim dims, Hadamard, fp4
// simulation (blocks of 32); weights [rows, heads] *= weight_scale.
void indexer_q_prepare(float* q, float* weights, int64_t rows, int heads, int dim, int rope_dim,
                       const int32_t* pos, const float* inv_freq, float weight_scale,
                       cudaStream_t stream);

// ---------------------------------------------------------------- KV cache views
struct KvLayerView {
  uint8_t* window_pages = nullptr;      // [pages][window_page_bytes]
  uint8_t* compressed_pages = nullptr;  // [pages][compressed_page_bytes]
  int64_t window_page_bytes = 0;
  int64_t compressed_page_bytes = 0;
  int64_t kv_entry_bytes = 0;
  int window_entries = 0;
  int64_t state_offset = 0;  // bytes
  int ratio = 0;
  int compressed_pool = -1;
  int entries_per_page = 0;
  int64_t indexer_offset = 0;
  int64_t indexer_key_bytes = 0;
  int main_channels = 0;
  int main_accumulators = 0;
  int index_channels = 0;
  int kv_dtype = kKvF32;
  int key_dtype = kKeyF32;
  int head_dim = 0;
  int rope_dim = 0;
  int index_dim = 0;
};

inline constexpr int kMaxCompressedPools = 4;
inline constexpr int kBlockPositions = 256;  // kKvBlockSize

struct ChunkInfo {
  int32_t first_row = 0;
  int32_t rows = 0;
  int32_t start_pos = 0;
  int32_t window_table = 0;  // offset of the window block table in BatchView::tables
  int32_t window_blocks = 0;
  int32_t compressed_table[kMaxCompressedPools] = {};
  int32_t compressed_blocks[kMaxCompressedPools] = {};
};

struct BatchView {
  const ChunkInfo* chunks = nullptr;  // device
  int num_chunks = 0;
  const int32_t* tables = nullptr;    // device, concatenated page ids
  const int32_t* row_pos = nullptr;   // device [rows]
  const int32_t* row_chunk = nullptr; // device [rows]
  int64_t rows = 0;
};

// ---------------------------------------------------------------- compressor.cu
struct CompressorView {
  const float* ape = nullptr;   // [ratio, width]
  const float* norm = nullptr;  // [channels]
  int ratio = 0;
  int overlap = 0;
  int channels = 0;
};
// Streams every chunk's projections ([rows, width] each) through the main compressor and,
// when index != nullptr, the indexer's; completed entries are finished and stored. With
// `snapshots` (speculative decoding), the layer's whole state after each row's position is
// copied to snapshots[row * snapshot_stride + snapshot_offset ...] (state_floats of the layer),
// so that a rejected draft can be rolled back. Prefill-sized chunks pool their entries in
// parallel (bitwise the same results); `streaming_only` forces the sequential walk (tests).
void run_compressors(const KvLayerView& kv, const BatchView& batch, const CompressorView& main,
                     const float* main_kv, const float* main_score, const CompressorView* index,
                     const float* index_kv, const float* index_score, const float* inv_freq,
                     float eps, cudaStream_t stream, float* snapshots = nullptr,
                     int64_t snapshot_stride = 0, int64_t snapshot_offset = 0,
                     bool streaming_only = false);

// ---------------------------------------------------------------- indexer.cu
// scores[i, e] (row stride score_stride) = sum_h w[r, h] relu(q[r, h] . key_e) for rows
// r = row_begin + i, i < row_count, and the visible entries e < (pos + 1) / ratio.
// With a workspace (indexer_workspace_bytes(row_count)), fp4 keys and 64 heads x 128, the scores
// come from int8 tensor cores, bitwise equal to the fp32 kernel's (see indexer.cu); without one,
// or with LONGCTX_INDEXER_OLD=1, from the fp32 kernel.
size_t indexer_workspace_bytes(int64_t rows);
void indexer_scores(const KvLayerView& kv, const BatchView& batch, int64_t row_begin,
                    int64_t row_count, const float* q, const float* weights, int heads, int dim,
                    float* scores, int64_t score_stride, int64_t max_visible, cudaStream_t stream,
                    void* workspace = nullptr);
// For each row: the top k = min(topk, visible) entries by score (ties to the lower index),
// ascending, into selected[i, 0:k); counts[i] = k. With a workspace of
// topk_workspace_bytes(row_count, score_stride) bytes, steps of at most 32 rows split each row
// over many blocks (the same results).
size_t topk_workspace_bytes(int64_t rows, int64_t score_stride);
void topk_rows(const float* scores, int64_t score_stride, const int32_t* row_pos,
               int64_t row_begin, int64_t row_count, int ratio, int topk, int32_t* selected,
               int32_t* counts, cudaStream_t stream, void* workspace = nullptr);

// ---------------------------------------------------------------- attention.cu
// out [rows, heads, d]: softmax with sink over the window keys and the compressed entries
// (selected [rows, topk_stride] with counts, or all visible when selected is null), fp32,
// then inverse RoPE at the row's position.
// max_keys bounds any row's key count (window + compressed entries); rows are processed in
// slices that fit the workspace (at least attention_workspace_floats(1, ...)).
size_t attention_workspace_floats(int64_t rows, int heads, int head_dim, int64_t max_keys);
void sparse_attention(const KvLayerView& kv, const BatchView& batch, const float* q,
                      const float* fresh_kv, const float* sinks, const int32_t* selected,
                      const int32_t* selected_counts, int topk_stride, int heads, int window,
                      int64_t max_keys, const float* inv_freq, float* out, float* workspace,
                      size_t workspace_floats, cudaStream_t stream);
// The same attention on the tensor cores (fast mode only, not batch-invariant): bf16 query and
// probabilities on bf16 mma with fp32 softmax statistics and accumulators, as the reference's
// bf16 attention. Needs bf16 or fp8 pages and head_dim 512 (sparse_attention_tc_supported);
// workspace as sparse_attention's (used only when a row's keys are split over several blocks).
bool sparse_attention_tc_supported(const KvLayerView& kv);
void sparse_attention_tc(const KvLayerView& kv, const BatchView& batch, const float* q,
                         const float* fresh_kv, const float* sinks, const int32_t* selected,
                         const int32_t* selected_counts, int topk_stride, int heads, int window,
                         int64_t max_keys, const float* inv_freq, float* out, float* workspace,
                         size_t workspace_floats, cudaStream_t stream);
// Stores the rows' kv into the window rings (the last position of a ring slot wins).
void write_window(const KvLayerView& kv, const BatchView& batch, const float* fresh_kv,
                  cudaStream_t stream);

// ---------------------------------------------------------------- moe.cu
// Routing of every row: experts/weights [rows, k].
void moe_route(const float* logits, const float* bias, const int32_t* tid2eid,
               const int32_t* tokens, int64_t rows, int num_experts, int k, int scoring,
               bool normalize, float scaling, int32_t* experts, float* weights,
               cudaStream_t stream);
// Groups the (row, j) entries by expert: counts/offsets [num_experts], slot_rows and
// slot_weights [rows * k], entry_slot [rows, k]; active [num_experts] lists the experts with
// rows in ascending id, then -1. fill is scratch [num_experts].
void moe_permute(const int32_t* experts, const float* weights, int64_t rows, int k,
                 int num_experts, int32_t* counts, int32_t* offsets, int32_t* fill,
                 int32_t* slot_rows, float* slot_weights, int32_t* entry_slot, int32_t* active,
                 cudaStream_t stream);
// out = silu(min(gate, L)) * clamp(up, -L, L) (* row_weights[r]); L <= 0: no clamp.
void swiglu(const float* gate, const float* up, int64_t rows, int64_t inter,
            const float* row_weights, float limit, float* out, cudaStream_t stream);
// swiglu (the same bits) straight into fp8 form, for an fp8 down projection: the view of
// out [rows, inter] in `buffer` (fp8_activation_bytes(rows, inter); inter % 128 == 0), with no
// fp32 copy written.
Fp8Activations swiglu_quantize(const float* gate, const float* up, int64_t rows, int64_t inter,
                               const float* row_weights, float limit, void* buffer, cudaStream_t stream);
// out[r] = sum over the row's experts in ascending id of slot_out[slot], then + shared[r].
void moe_combine(const float* slot_out, const int32_t* entry_slot, const int32_t* experts,
                 int64_t rows, int k, int64_t hidden, const float* shared, float* out,
                 cudaStream_t stream);

// ---------------------------------------------------------------- synthetic.cu
// Random data made on the device for benchmarks (never used by the forward).
// `groups` stacked [out, in] matrices of N(0, stddev) values in the stored format: bf16, fp8 e4m3
// with one e8m0 scale per 128x128 block (from the block's amax), or packed e2m1 with one per 32.
void fill_linear_random(uint8_t* weight, uint8_t* scale, int format, int64_t out, int64_t in, int64_t groups,
                        float stddev, uint64_t seed, cudaStream_t stream);
// out[i] = mean + stddev * N(0, 1).
void fill_floats_random(float* out, int64_t count, float mean, float stddev, uint64_t seed, cudaStream_t stream);
// Every window page (ring entries and a finite compressor state) and compressed page (entries and
// indexer keys) of one layer, each vector N(0, 1) stored through the cache's encoders.
void fill_kv_pages_random(const KvLayerView& kv, int64_t window_pages, int64_t compressed_pages, uint64_t seed,
                          cudaStream_t stream);

}  // namespace longctx::cuda
