// The CUDA backend: every op of backends/backend.hpp on one non-blocking
// stream, and the GPU hooks of backends/gpu.hpp (probe, weight upload, the
// backend factory).
//
// Matrix products:
//   n_tok <= kMatvecMaxTokens (8)  the quantized matrix-vector kernel reads the
//                                   GGUF blocks in device memory directly;
//   more tokens                    cuBLAS GEMM with FP32 accumulation: the
//                                   activation rounded to FP16 (BF16 for BF16
//                                   weights), quantized weights dequantized to
//                                   FP16 in chunks of rows into a scratch buffer
//                                   (F16 / BF16 weights used in place, F32 as
//                                   an FP32 GEMM).
//
// A step of one token (begin_step(1) .. end_step) is captured as a CUDA graph
// and launched as one unit; the next step's capture updates the instantiated
// graph in place (same kernels, new positions and grid sizes) or, when its
// shape changed, instantiates a new one. EMBER_CUDA_GRAPHS=0 turns this off.
// Nothing that allocates or synchronises may run while capturing: the only
// growing buffers (the GEMM scratch) belong to the many-token path, which is
// never captured, and the attention's split-KV scratch is allocated up front.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cuda/cuda_device.hpp"
#include "backends/cuda/cuda_kernels.cuh"
#include "backends/gpu.hpp"
#include "ember/error.hpp"
#include "ember/types.hpp"

namespace ember {
namespace {

// Floats of split-KV scratch per backend (8 MiB): enough for 64 splits of a
// token step with 64 heads of 256 dims; a batch that needs more uses fewer splits.
constexpr size_t kPartialFloats = size_t{2} << 20;
// FP16 elements of dequantized weight rows per GEMM chunk (64 MiB).
constexpr int64_t kWeightScratchElems = int64_t{32} << 20;

bool is_sticky(cudaError_t e) {
    return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorMisalignedAddress ||
           e == cudaErrorIllegalInstruction || e == cudaErrorHardwareStackError || e == cudaErrorAssert ||
           e == cudaErrorECCUncorrectable || e == cudaErrorLaunchTimeout || e == cudaErrorInvalidPc;
}

bool is_no_device(cudaError_t e) {
    return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInitializationError ||
           e == cudaErrorSystemDriverMismatch || e == cudaErrorCompatNotSupportedOnDevice;
}

// "CUDA: <what> failed: <message> (<name>); <what to do>"
std::string cuda_failure(const std::string& what, cudaError_t e, size_t bytes = 0) {
    std::string m = "CUDA: " + what + " failed: " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")";
    if (e == cudaErrorMemoryAllocation)
        m += "; the GPU is out of memory (" + std::to_string(bytes) +
             " bytes asked for): lower n_gpu_layers (-ngl) or n_ctx, or free the GPU of other work";
    else if (is_sticky(e))
        m += "; the GPU context cannot be used after this error: restart the process, and please report it "
             "(model, settings, GPU) if it happens again";
    else if (is_no_device(e))
        m += "; check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or run on the CPU with "
             "n_gpu_layers = 0 (-ngl 0)";
    return m;
}

std::string blas_failure(const std::string& what, cublasStatus_t s) {
    std::string m = "cuBLAS: " + what + " failed: " + cublasGetStatusString(s) + " (" + cublasGetStatusName(s) + ")";
    if (s == CUBLAS_STATUS_ALLOC_FAILED)
        m += "; the GPU is out of memory: lower n_gpu_layers (-ngl) or n_ctx";
    else if (s == CUBLAS_STATUS_NOT_INITIALIZED)
        m += "; check the NVIDIA driver (nvidia-smi), or run on the CPU with n_gpu_layers = 0 (-ngl 0)";
    return m;
}

// Throws Error(Backend) when the machine has no usable device.
void require_device() {
    if (cuda::devices().empty())
        throw Error(ErrorCode::Backend, "CUDA: no usable GPU (" + cuda::unavailable_reason() +
                                            "); check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or "
                                            "run on the CPU with n_gpu_layers = 0 (-ngl 0)");
}

bool graphs_enabled_by_env() {
    const char* env = std::getenv("EMBER_CUDA_GRAPHS");
    return env == nullptr || std::strcmp(env, "0") != 0;
}

bool cuda_supports(TensorType t) {
    switch (t) {
        case TensorType::F32: case TensorType::F16: case TensorType::BF16: case TensorType::Q4_0:
        case TensorType::Q4_1: case TensorType::Q5_0: case TensorType::Q5_1: case TensorType::Q8_0:
        case TensorType::Q2_K: case TensorType::Q3_K: case TensorType::Q4_K: case TensorType::Q5_K:
        case TensorType::Q6_K: return true;
        default: return false;
    }
}

// ---- weights ---------------------------------------------------------------------

// Each upload is its own cudaMalloc, copied on a private stream and waited
// for: a plain cudaMemcpy from pageable memory may return before the DMA has
// landed, and the backends' non-blocking streams would not wait for it.
class CudaWeights final : public DeviceWeights {
public:
    ~CudaWeights() override {
        if (stream_ != nullptr) {
            cudaStreamSynchronize(stream_);
            cudaStreamDestroy(stream_);
        }
        for (void* p : ptrs_) cudaFree(p);
        cudaGetLastError();
    }

    void* upload(const void* host, size_t bytes, const char* what) override {
        const std::string name = what != nullptr ? what : "a weight";
        ptrs_.reserve(ptrs_.size() + 1);  // so that recording the pointer cannot throw after the allocation
        void* p = nullptr;
        cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
        if (e != cudaSuccess) {
            cudaGetLastError();
            throw Error(ErrorCode::Backend, cuda_failure("cudaMalloc for " + name, e, bytes));
        }
        ptrs_.push_back(p);
        if (bytes > 0) {
            if (stream_ == nullptr) check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
            check(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, stream_),
                  "cudaMemcpyAsync of " + name + " to the GPU");
            check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (upload of " + name + ")");
        }
        bytes_ += bytes;
        return p;
    }

    size_t bytes() const noexcept override { return bytes_; }

private:
    static void check(cudaError_t e, const std::string& what) {
        if (e == cudaSuccess) return;
        if (!is_sticky(e)) cudaGetLastError();
        throw Error(ErrorCode::Backend, cuda_failure(what, e));
    }

    cudaStream_t stream_ = nullptr;
    std::vector<void*> ptrs_;
    size_t bytes_ = 0;
};

// ---- the backend -------------------------------------------------------------------

class CudaBackend final : public Backend {
public:
    CudaBackend() {
        try {
            init();
        } catch (...) {
            release();
            throw;
        }
    }
    ~CudaBackend() override { release(); }
    CudaBackend(const CudaBackend&) = delete;
    CudaBackend& operator=(const CudaBackend&) = delete;

    std::string_view name() const noexcept override { return "cuda"; }

    float* alloc_f32(size_t n) override {
        no_capture("alloc_f32");
        if (n > SIZE_MAX / sizeof(float))
            fail(ErrorCode::Backend, "CUDA: alloc_f32 of " + std::to_string(n) +
                                         " floats overflows the address space; lower n_ctx or the batch size");
        return static_cast<float*>(device_alloc(n * sizeof(float), "cudaMalloc (activations)"));
    }

    void alloc_kv(KvCache* c) override {
        no_capture("alloc_kv");
        const size_t k_row = kv_row_bytes(c->type_k, c->k_width), v_row = kv_row_bytes(c->type_v, c->v_width);
        for (const auto& [type, width, what] : {std::tuple{c->type_k, c->k_width, "k_width"},
                                                 std::tuple{c->type_v, c->v_width, "v_width"}})
            if ((type == KvType::Q8_0 || type == KvType::Q4_0) && width % 32 != 0)
                fail(ErrorCode::InvalidArgument, std::string("alloc_kv: a Q8_0 / Q4_0 cache needs rows of whole "
                                                             "blocks of 32, but ") + what + " is " +
                                                     std::to_string(width) + "; use an f16 cache");
        for (int64_t l = 0; l < c->n_layer; ++l) {
            const int64_t cells = kv_cells(*c, l);
            if (cells <= 0 || cells > c->n_ctx)
                fail(ErrorCode::InvalidArgument, "alloc_kv: layer " + std::to_string(l) + " has " +
                                                     std::to_string(cells) + " cells, outside 1.." +
                                                     std::to_string(c->n_ctx) + " (n_ctx)");
        }
        std::vector<void*> ptrs(static_cast<size_t>(2 * c->n_layer), nullptr);
        for (int64_t l = 0; l < c->n_layer; ++l) {
            const int64_t cells = kv_cells(*c, l);  // a sliding-window layer's ring, or n_ctx rows
            // zeroed (device_alloc): a row read before kv_store wrote it (a restored session's
            // gaps) is zeros, never NaN garbage
            ptrs[static_cast<size_t>(l)] = device_alloc(static_cast<size_t>(cells) * k_row, "cudaMalloc (KV cache, keys)");
            ptrs[static_cast<size_t>(c->n_layer + l)] =
                device_alloc(static_cast<size_t>(cells) * v_row, "cudaMalloc (KV cache, values)");
        }
        kv_ptrs_.push_back(std::move(ptrs));
        c->k = kv_ptrs_.back().data();
        c->v = kv_ptrs_.back().data() + c->n_layer;
    }

    void kv_read(const KvCache& c, int64_t layer, bool value, int64_t row0, int64_t n_rows, void* dst) override {
        no_capture("kv_read");
        const size_t row = kv_rows(c, layer, value, row0, n_rows, "kv_read");
        if (n_rows == 0) return;
        const auto* base = static_cast<const uint8_t*>(value ? c.v[layer] : c.k[layer]);
        check(cudaMemcpyAsync(dst, base + static_cast<size_t>(row0) * row, static_cast<size_t>(n_rows) * row,
                              cudaMemcpyDeviceToHost, stream_),
              "cudaMemcpyAsync (KV rows to host)");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (KV rows to host)");
    }

    void kv_write(const KvCache& c, int64_t layer, bool value, int64_t row0, int64_t n_rows,
                  const void* src) override {
        no_capture("kv_write");
        const size_t row = kv_rows(c, layer, value, row0, n_rows, "kv_write");
        if (n_rows == 0) return;
        auto* base = static_cast<uint8_t*>(value ? c.v[layer] : c.k[layer]);
        check(cudaMemcpyAsync(base + static_cast<size_t>(row0) * row, src, static_cast<size_t>(n_rows) * row,
                              cudaMemcpyHostToDevice, stream_),
              "cudaMemcpyAsync (KV rows from host)");
        // the caller may reuse src as soon as this returns
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (KV rows from host)");
    }

    void to_host(const float* src, float* dst, size_t n) override {
        no_capture("to_host");
        if (n == 0) return;
        check(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (to host)");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (to host)");
    }

    void from_host(const float* src, float* dst, size_t n) override {
        no_capture("from_host");
        if (n == 0) return;
        check(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, stream_),
              "cudaMemcpyAsync (from host)");
        // the caller may reuse src as soon as this returns
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (from host)");
    }

    void begin_step(int64_t n_tok) override {
        abort_capture();  // a step left by an exception without abort_step
        if (!graphs_ || n_tok != 1) return;
        check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
        capturing_ = true;
    }

    void end_step() override {
        if (!capturing_) return;
        capturing_ = false;
        cudaGraph_t graph = nullptr;
        cudaError_t e = cudaStreamEndCapture(stream_, &graph);
        if (e != cudaSuccess) {
            if (graph != nullptr) cudaGraphDestroy(graph);
            check(e, "cudaStreamEndCapture");
        }
        struct GraphGuard {
            cudaGraph_t g;
            ~GraphGuard() { cudaGraphDestroy(g); }
        } guard{graph};
        if (exec_ != nullptr) {
            cudaGraphExecUpdateResultInfo info{};
            if (cudaGraphExecUpdate(exec_, graph, &info) != cudaSuccess) {
                // another shape of step (e.g. the attention gained a split): instantiate anew
                cudaGetLastError();
                cudaGraphExecDestroy(exec_);
                exec_ = nullptr;
            }
        }
        if (exec_ == nullptr) {
            // into a local: a failed instantiation leaves no handle for release() to destroy
            cudaGraphExec_t exec = nullptr;
            check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
            exec_ = exec;
        }
        check(cudaGraphLaunch(exec_, stream_), "cudaGraphLaunch");
    }

    void abort_step() noexcept override { abort_capture(); }

    void get_rows(const WeightView& w, const int32_t* ids, int64_t n, float* out) override {
        if (n <= 0) return;
        require_type(w, "get_rows");
        cudaPointerAttributes attr{};
        bool host_ids = true;
        if (cudaPointerGetAttributes(&attr, ids) == cudaSuccess)
            host_ids = attr.type == cudaMemoryTypeUnregistered || attr.type == cudaMemoryTypeHost;
        else
            cudaGetLastError();
        if (host_ids)
            for (int64_t i = 0; i < n; ++i)
                if (ids[i] < 0 || ids[i] >= w.n_out)
                    fail(ErrorCode::InvalidArgument, "get_rows: id " + std::to_string(ids[i]) + " is out of range for " +
                                                         std::string(w.name) + " (" + std::to_string(w.n_out) + " rows)");
        check(cuda::launch_get_rows(w.type, w.data, w.row_bytes, w.n_in, w.n_out, host_ids ? nullptr : ids,
                                    host_ids ? ids : nullptr, n, out, stream_),
              "get_rows kernel");
    }

    void matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) override {
        if (n_tok <= 0 || w.n_out <= 0) return;
        require_type(w, "matmul");
        if (n_tok <= cuda::kMatvecMaxTokens) {
            check(cuda::launch_matvec(w.type, w.data, w.row_bytes, w.n_out, w.n_in, x, n_tok, y, w.n_out, stream_),
                  "matvec kernel (" + std::string(w.name) + ")");
            return;
        }
        gemm(w, x, n_tok, y);
    }

    void rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y) override {
        check(cuda::launch_rms_norm(x, weight, n_tok, n, eps, y, stream_), "rms_norm kernel");
    }

    void rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, const int32_t* pos,
              const RopeParams& p) override {
        if (n_tok <= 0) return;
        if (p.n_rot % 2 != 0 || p.n_rot > head_dim || p.n_rot < 0)
            fail(ErrorCode::InvalidArgument, "rope: n_rot = " + std::to_string(p.n_rot) +
                                                 " must be even and at most head_dim = " + std::to_string(head_dim));
        // the positions travel as one scalar (a captured graph then only needs a parameter update)
        for (int64_t t = 1; t < n_tok; ++t)
            if (pos[t] != pos[0] + t)
                fail(ErrorCode::Internal, "CUDA rope: positions must be consecutive (pos[" + std::to_string(t) +
                                              "] = " + std::to_string(pos[t]) + " after pos[0] = " +
                                              std::to_string(pos[0]) + ")");
        check(cuda::launch_rope(x, n_tok, n_head, head_dim, pos[0], p, stream_), "rope kernel");
    }

    void kv_store(const KvCache& c, int64_t layer, const float* k, const float* v, int64_t pos0,
                  int64_t n_tok) override {
        if (n_tok <= 0) return;
        // the batch's rows must be distinct rows of the ring
        check_cache(c, layer, pos0, n_tok, n_tok, "kv_store");
        const int64_t cells = kv_cells(c, layer);
        check(cuda::launch_kv_store(k, c.k[layer], c.type_k, c.k_width, cells, pos0, n_tok, stream_),
              "kv_store kernel (keys)");
        check(cuda::launch_kv_store(v, c.v[layer], c.type_v, c.v_width, cells, pos0, n_tok, stream_),
              "kv_store kernel (values)");
    }

    void attention(const KvCache& c, int64_t layer, const float* q, int64_t n_tok, int64_t pos0, const AttnParams& p,
                   float* out) override {
        if (n_tok <= 0) return;
        if (p.n_swa < 0)
            fail(ErrorCode::InvalidArgument, "attention: n_swa = " + std::to_string(p.n_swa) + " is negative");
        // every position the batch reads, from the first its first token sees to its last token's own,
        // must still be in the ring after the batch's kv_store
        check_cache(c, layer, pos0, n_tok, pos0 + n_tok - attn_first_pos(pos0, p.n_swa), "attention");
        if (p.n_head_kv <= 0 || p.n_head % p.n_head_kv != 0 || p.head_dim_k <= 0 || p.head_dim_v <= 0 ||
            c.k_width < int64_t{p.n_head_kv} * p.head_dim_k || c.v_width < int64_t{p.n_head_kv} * p.head_dim_v)
            fail(ErrorCode::InvalidArgument, "attention: bad heads (n_head " + std::to_string(p.n_head) +
                                                 ", n_head_kv " + std::to_string(p.n_head_kv) + ", head dims " +
                                                 std::to_string(p.head_dim_k) + "/" + std::to_string(p.head_dim_v) +
                                                 ") for the cache");
        if (p.head_dim_k > cuda::kAttnMaxHeadDim || p.head_dim_v > cuda::kAttnMaxHeadDim ||
            cuda::attention_smem_bytes(p.head_dim_k, p.head_dim_v) > smem_limit_)
            fail(ErrorCode::Unsupported, "CUDA attention: head dims " + std::to_string(p.head_dim_k) + "/" +
                                             std::to_string(p.head_dim_v) +
                                             " are more than this GPU's kernels handle (at most 256); run the "
                                             "layers on the CPU (lower n_gpu_layers, -ngl)");
        const auto quantized = [](KvType t) { return t == KvType::Q8_0 || t == KvType::Q4_0; };
        if ((quantized(c.type_k) && p.head_dim_k % 32 != 0) || (quantized(c.type_v) && p.head_dim_v % 32 != 0))
            fail(ErrorCode::InvalidArgument, "attention: head dims " + std::to_string(p.head_dim_k) + "/" +
                                                 std::to_string(p.head_dim_v) +
                                                 " are not whole blocks of 32 of the Q8_0 / Q4_0 cache; use an f16 cache");
        cuda::AttnArgs a;
        a.k = c.k[layer];
        a.v = c.v[layer];
        a.type_k = c.type_k;
        a.type_v = c.type_v;
        a.k_width = c.k_width;
        a.v_width = c.v_width;
        a.cells = kv_cells(c, layer);
        a.n_swa = p.n_swa;
        a.q = q;
        a.out = out;
        a.n_tok = n_tok;
        a.pos0 = pos0;
        a.n_head = p.n_head;
        a.n_head_kv = p.n_head_kv;
        a.dk = p.head_dim_k;
        a.dv = p.head_dim_v;
        a.scale = p.scale;
        a.partials = partials_;
        a.partials_cap = kPartialFloats;
        a.n_sm = n_sm_;
        // a token step always takes the split path, so its graph keeps one shape as the context grows
        a.always_split = n_tok == 1;
        check(cuda::launch_attention(a, stream_), "attention kernel");
    }

    void swiglu(const float* gate, const float* up, int64_t n, float* out) override {
        check(cuda::launch_swiglu(gate, up, n, out, stream_), "swiglu kernel");
    }

    void geglu(const float* gate, const float* up, int64_t n, float* out) override {
        check(cuda::launch_geglu(gate, up, n, out, stream_), "geglu kernel");
    }

    void add(float* x, const float* y, int64_t n) override {
        check(cuda::launch_add(x, y, n, stream_), "add kernel");
    }

    void add_bias(float* x, const float* b, int64_t n_tok, int64_t n) override {
        check(cuda::launch_add_bias(x, b, n_tok, n, stream_), "add_bias kernel");
    }

    void scale(float* x, float s, int64_t n) override {
        check(cuda::launch_scale(x, s, n, stream_), "scale kernel");
    }

    void softcap(float* x, float cap, int64_t n) override {
        if (!(cap > 0.0f))
            fail(ErrorCode::InvalidArgument, "softcap: cap = " + std::to_string(cap) + " must be positive");
        check(cuda::launch_softcap(x, cap, n, stream_), "softcap kernel");
    }

private:
    struct Scratch {
        void* p = nullptr;
        size_t bytes = 0;
    };

    void init() {
        require_device();
        int dev = 0;
        check(cudaGetDevice(&dev), "cudaGetDevice");
        check(cudaDeviceGetAttribute(&n_sm_, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
        int optin = 0;
        check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
        smem_limit_ = std::min(cuda::attention_smem_bytes(cuda::kAttnMaxHeadDim, cuda::kAttnMaxHeadDim),
                               static_cast<size_t>(optin));
        check(cuda::attention_set_smem_limit(smem_limit_), "cudaFuncSetAttribute (attention shared memory)");
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        check_blas(cublasCreate(&blas_), "cublasCreate");
        check_blas(cublasSetStream(blas_, stream_), "cublasSetStream");
        partials_ = static_cast<float*>(device_alloc(kPartialFloats * sizeof(float), "cudaMalloc (attention scratch)"));
        graphs_ = graphs_enabled_by_env();
    }

    // Frees everything; never throws (the destructor and a failed constructor).
    void release() noexcept {
        abort_capture();
        if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
        exec_ = nullptr;
        if (stream_ != nullptr) cudaStreamSynchronize(stream_);
        for (void* p : allocations_) cudaFree(p);
        allocations_.clear();
        for (Scratch* s : {&w16_, &x16_})
            if (s->p != nullptr) cudaFree(s->p);
        if (blas_ != nullptr) cublasDestroy(blas_);
        blas_ = nullptr;
        if (stream_ != nullptr) cudaStreamDestroy(stream_);
        stream_ = nullptr;
        cudaGetLastError();
    }

    // Ends a capture in progress and discards what it recorded.
    void abort_capture() noexcept {
        if (!capturing_) return;
        capturing_ = false;
        cudaGraph_t g = nullptr;
        cudaStreamEndCapture(stream_, &g);
        if (g != nullptr) cudaGraphDestroy(g);
        cudaGetLastError();
    }

    [[noreturn]] void fail(ErrorCode code, const std::string& message) {
        abort_capture();  // never leave the stream capturing behind an exception
        throw Error(code, message);
    }

    void check(cudaError_t e, const std::string& what, size_t bytes = 0) {
        if (e == cudaSuccess) return;
        if (!is_sticky(e)) cudaGetLastError();  // clear it so the backend stays usable
        fail(ErrorCode::Backend, cuda_failure(what, e, bytes));
    }

    void check_blas(cublasStatus_t s, const std::string& what) {
        if (s != CUBLAS_STATUS_SUCCESS) fail(ErrorCode::Backend, blas_failure(what, s));
    }

    void no_capture(const char* op) {
        if (capturing_)
            fail(ErrorCode::Internal, std::string("CUDA backend: ") + op +
                                          " inside begin_step/end_step (it would synchronise a captured stream); "
                                          "this is a bug in ember, please report it");
    }

    void require_type(const WeightView& w, const char* op) {
        if (!cuda_supports(w.type))
            fail(ErrorCode::Unsupported, std::string("CUDA ") + op + ": " + std::string(w.name) + " has type " +
                                             type_info(w.type).name +
                                             ", which the CUDA backend does not handle; keep this layer on the CPU");
    }

    // The op touches positions pos0 .. pos0 + n_tok - 1 of `layer` and needs `span` consecutive
    // positions (ending with the batch's last) held in the layer's rows at once: at most kv_cells
    // (a full layer: positions below n_ctx; a ring: no more than it holds).
    void check_cache(const KvCache& c, int64_t layer, int64_t pos0, int64_t n_tok, int64_t span, const char* op) {
        const bool layer_ok = layer >= 0 && layer < c.n_layer;
        const int64_t cells = layer_ok ? kv_cells(c, layer) : 0;
        // every position lives below n_ctx (a full layer's rows are positions, never a ring)
        if (!layer_ok || pos0 < 0 || cells <= 0 || span > cells || pos0 + n_tok > c.n_ctx)
            fail(ErrorCode::InvalidArgument,
                 std::string(op) + ": layer " + std::to_string(layer) + ", positions " + std::to_string(pos0) + ".." +
                     std::to_string(pos0 + n_tok - 1) + " (" + std::to_string(span) +
                     " positions held at once) do not fit the cache (" + std::to_string(c.n_layer) + " layers, " +
                     std::to_string(cells) + " cells in this layer, n_ctx " + std::to_string(c.n_ctx) + ")");
    }

    // Bytes per row of layer's keys (value = false) or values, after checking that rows
    // row0 .. row0 + n_rows - 1 are rows of the layer.
    size_t kv_rows(const KvCache& c, int64_t layer, bool value, int64_t row0, int64_t n_rows, const char* op) {
        const int64_t cells = layer >= 0 && layer < c.n_layer ? kv_cells(c, layer) : 0;
        if (cells <= 0 || row0 < 0 || n_rows < 0 || row0 + n_rows > cells)
            fail(ErrorCode::InvalidArgument, std::string(op) + ": layer " + std::to_string(layer) + ", rows " +
                                                 std::to_string(row0) + ".." + std::to_string(row0 + n_rows - 1) +
                                                 " are outside the cache (" + std::to_string(c.n_layer) + " layers, " +
                                                 std::to_string(cells) + " rows in this layer)");
        return value ? kv_row_bytes(c.type_v, c.v_width) : kv_row_bytes(c.type_k, c.k_width);
    }

    // Zeroed device memory owned by the backend.
    void* device_alloc(size_t bytes, const char* what) {
        allocations_.reserve(allocations_.size() + 1);
        void* p = nullptr;
        check(cudaMalloc(&p, std::max<size_t>(bytes, 1)), what, bytes);
        allocations_.push_back(p);
        check(cudaMemsetAsync(p, 0, bytes, stream_), "cudaMemsetAsync (zeroing a new buffer)");
        return p;
    }

    // Grows a scratch buffer to at least `bytes` (never shrinks). Outside a capture only.
    void* ensure_scratch(Scratch& s, size_t bytes, const char* what) {
        if (s.bytes >= bytes) return s.p;
        if (capturing_)
            fail(ErrorCode::Internal, std::string("CUDA backend: ") + what +
                                          " would grow during a captured step; this is a bug in ember, please report it");
        if (s.p != nullptr) {
            check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (before growing scratch)");  // still in use?
            cudaFree(s.p);
            s = Scratch{};
        }
        const size_t want = (bytes + (size_t{1} << 21) - 1) & ~((size_t{1} << 21) - 1);  // whole 2 MiB
        check(cudaMalloc(&s.p, want), std::string("cudaMalloc (") + what + ")", want);
        s.bytes = want;
        return s.p;
    }

    void gemm_call(int64_t m, int64_t n, int64_t k, const void* a, cudaDataType_t at, int64_t lda, const void* b,
                   cudaDataType_t bt, int64_t ldb, float* c, int64_t ldc, const std::string& name) {
        if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX)
            fail(ErrorCode::Unsupported, "CUDA matmul: " + name + " is too large for one cuBLAS call");
        const float alpha = 1.0f, beta = 0.0f;
        // column-major view: C[m, n] = A^T * B, A = the weight rows [k, m], B = the tokens [k, n]
        check_blas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(n),
                                static_cast<int>(k), &alpha, a, at, static_cast<int>(lda), b, bt, static_cast<int>(ldb),
                                &beta, c, CUDA_R_32F, static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx (" + name + ")");
    }

    // y[t, :] = w * x[t, :] for a batch of many tokens, through cuBLAS.
    void gemm(const WeightView& w, const float* x, int64_t n_tok, float* y) {
        const int64_t K = w.n_in, N = w.n_out;
        const std::string name(w.name);
        if (w.type == TensorType::F32) {
            gemm_call(N, n_tok, K, w.data, CUDA_R_32F, static_cast<int64_t>(w.row_bytes / 4), x, CUDA_R_32F, K, y, N,
                      name);
            return;
        }
        const bool bf16 = w.type == TensorType::BF16;
        const cudaDataType_t half_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
        void* xh = ensure_scratch(x16_, static_cast<size_t>(n_tok * K) * 2, "activation scratch");
        check(cuda::launch_to_half(x, n_tok * K, xh, bf16, stream_), "fp16 conversion kernel");
        if (w.type == TensorType::F16 || bf16) {
            gemm_call(N, n_tok, K, w.data, half_type, static_cast<int64_t>(w.row_bytes / 2), xh, half_type, K, y, N,
                      name);
            return;
        }
        // quantized: dequantize a chunk of rows to fp16, multiply, next chunk
        const int64_t rows = std::clamp<int64_t>(kWeightScratchElems / std::max<int64_t>(K, 1), 1, N);
        auto* wh = static_cast<__half*>(ensure_scratch(w16_, static_cast<size_t>(rows * K) * 2, "weight scratch"));
        for (int64_t r0 = 0; r0 < N; r0 += rows) {
            const int64_t nr = std::min(rows, N - r0);
            check(cuda::launch_dequant_f16(w.type, static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0) * w.row_bytes,
                                           w.row_bytes, nr, K, wh, stream_),
                  "dequantize kernel (" + name + ")");
            gemm_call(nr, n_tok, K, wh, CUDA_R_16F, K, xh, CUDA_R_16F, K, y + r0, N, name);
        }
    }

    cudaStream_t stream_ = nullptr;
    cublasHandle_t blas_ = nullptr;
    int n_sm_ = 1;
    size_t smem_limit_ = 0;
    bool graphs_ = true;
    bool capturing_ = false;
    cudaGraphExec_t exec_ = nullptr;
    std::vector<void*> allocations_;             // alloc_f32, alloc_kv, partials_: freed with the backend
    std::deque<std::vector<void*>> kv_ptrs_;     // per alloc_kv: [2 * n_layer] K pointers, then V
    float* partials_ = nullptr;                  // [kPartialFloats] split-KV attention partials
    Scratch w16_;                                // dequantized weight rows, fp16 [rows, K]
    Scratch x16_;                                // the activation in fp16 / bf16 [n_tok, K]
};

}  // namespace

GpuInfo gpu_probe() {
    const std::vector<cuda::DeviceInfo> devs = cuda::devices();  // throws Error(Backend) on odd failures
    if (devs.empty())
        throw Error(ErrorCode::Backend, "CUDA: no usable GPU (" + cuda::unavailable_reason() +
                                            "); check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or "
                                            "run on the CPU with n_gpu_layers = 0 (-ngl 0)");
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        throw Error(ErrorCode::Backend, cuda_failure("cudaGetDevice", e));
    }
    size_t free_bytes = 0, total_bytes = 0;
    e = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        throw Error(ErrorCode::Backend, cuda_failure("cudaMemGetInfo", e));
    }
    const cuda::DeviceInfo& d = devs[static_cast<size_t>(std::clamp<int>(dev, 0, static_cast<int>(devs.size()) - 1))];
    GpuInfo info;
    info.name = d.name;
    info.compute_major = d.compute_major;
    info.compute_minor = d.compute_minor;
    info.free_bytes = free_bytes;
    info.total_bytes = total_bytes;
    return info;
}

std::unique_ptr<DeviceWeights> make_gpu_weights() {
    require_device();
    return std::make_unique<CudaWeights>();
}

std::unique_ptr<Backend> make_gpu_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace ember
