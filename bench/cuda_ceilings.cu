/* cuda_ceilings.cu — the ceilings of the card embd runs on (issue 24: measure
 * first). Prints JSON lines:
 *  - the cuBLASLt fp16 and bf16 peak on a large square product (8192^3);
 *  - each linear layer's product of all-MiniLM-L6-v2 / bge-small (H 384,
 *    I 1536) and bge-base (H 768, I 3072) at 16,384 tokens, as embd calls it
 *    (cuBLASLt, fp32 accumulation, column-major y^T = W x^T), with the
 *    heuristic's first choice (what embd runs) against the best of its
 *    first 8, in TFLOP/s;
 *  - the bandwidth of a device-to-device copy, and of embd's own
 *    memory-bound kernels (add + LayerNorm, GELU) on the same sizes, in GB/s.
 * Each time is the median of several runs after a warm-up. Usage:
 * bench_cuda_ceilings [--quick]. Exits 77 without a usable GPU. */
#include "backend/cuda/kernels.cuh"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "cuda_ceilings: %s: %s (line %d)\n", #x, cudaGetErrorString(e_),      \
                    __LINE__);                                                                     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CKB(x)                                                                                     \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "cuda_ceilings: %s: status %d (line %d)\n", #x, (int)s_, __LINE__);   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static cudaStream_t stream;
static cublasLtHandle_t lt;
static void *ws;
static const size_t WS = (size_t)32 << 20;
static int reps = 9;

/* Median milliseconds of fn over reps runs, after one warm-up. */
template <typename F> static double median_ms(F fn) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    fn();
    CK(cudaStreamSynchronize(stream));
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(a, stream));
        fn();
        CK(cudaEventRecord(b, stream));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/* y (R, O) = x (R, K) W^T in ty, as embd's lt_linear lays it out; prints the
 * heuristic's first algorithm and the best of up to 8. */
static void gemm(const char *model, const char *what, cudaDataType_t ty, const char *tname, int R,
                 int K, int O) {
    const size_t es = 2;
    void *W, *x, *y;
    CK(cudaMalloc(&W, (size_t)K * O * es));
    CK(cudaMalloc(&x, (size_t)K * R * es));
    CK(cudaMalloc(&y, (size_t)O * R * es));
    CK(cudaMemsetAsync(W, 0, (size_t)K * O * es, stream));
    CK(cudaMemsetAsync(x, 0, (size_t)K * R * es, stream));
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulPreference_t pref;
    const cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    CKB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
    CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
    CKB(cublasLtMatrixLayoutCreate(&la, ty, (uint64_t)K, (uint64_t)O, (int64_t)K));
    CKB(cublasLtMatrixLayoutCreate(&lb, ty, (uint64_t)K, (uint64_t)R, (int64_t)K));
    CKB(cublasLtMatrixLayoutCreate(&lc, ty, (uint64_t)O, (uint64_t)R, (int64_t)O));
    CKB(cublasLtMatmulPreferenceCreate(&pref));
    CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &WS,
                                             sizeof WS));
    cublasLtMatmulHeuristicResult_t res[8];
    int n = 0;
    CKB(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 8, res, &n));
    const float alpha = 1.0f, beta = 0.0f;
    const double flop = 2.0 * R * (double)K * O;
    double first = 0, best = 0;
    int best_i = -1;
    for (int i = 0; i < n; i++) {
        double ms = median_ms([&] {
            cublasLtMatmul(lt, op, &alpha, W, la, x, lb, &beta, y, lc, y, lc, &res[i].algo, ws,
                           WS, stream);
        });
        if (cudaGetLastError() != cudaSuccess) continue;
        const double tf = flop / (ms * 1e-3) * 1e-12;
        if (i == 0) first = tf;
        if (tf > best) best = tf, best_i = i;
    }
    printf("{\"gemm\":\"%s %s\",\"dtype\":\"%s\",\"rows\":%d,\"k\":%d,\"n\":%d,\"algos\":%d,"
           "\"heuristic_tflops\":%.1f,\"best_of_8_tflops\":%.1f,\"best_index\":%d}\n",
           model, what, tname, R, K, O, n, first, best, best_i);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatmulDescDestroy(op);
    CK(cudaFree(W));
    CK(cudaFree(x));
    CK(cudaFree(y));
}

template <typename T> static void memory_bound(const char *tname, int R, int H, int I) {
    const size_t es = sizeof(T);
    float *x, *g, *b;
    T *add, *xo, *f;
    CK(cudaMalloc(&x, (size_t)R * H * 4));
    CK(cudaMalloc(&g, (size_t)H * 4));
    CK(cudaMalloc(&b, (size_t)H * 4));
    CK(cudaMalloc(&add, (size_t)R * H * es));
    CK(cudaMalloc(&xo, (size_t)R * H * es));
    CK(cudaMalloc(&f, (size_t)R * I * es));
    CK(cudaMemsetAsync(x, 0, (size_t)R * H * 4, stream));
    CK(cudaMemsetAsync(g, 0, (size_t)H * 4, stream));
    CK(cudaMemsetAsync(b, 0, (size_t)H * 4, stream));
    CK(cudaMemsetAsync(add, 0, (size_t)R * H * es, stream));
    CK(cudaMemsetAsync(f, 0, (size_t)R * I * es, stream));
    double ms = median_ms([&] {
        k_add_ln<T><<<R, LN_THREADS, H * sizeof(float), stream>>>(x, add, g, b, xo, H, 1e-12f);
    });
    CK(cudaGetLastError());
    const double ln_bytes = (double)R * H * (8.0 + 2.0 * es);
    printf("{\"kernel\":\"add_layernorm\",\"dtype\":\"%s\",\"rows\":%d,\"h\":%d,\"gbs\":%.0f}\n",
           tname, R, H, ln_bytes / (ms * 1e-3) * 1e-9);
    const size_t n = (size_t)R * I;
    ms = median_ms([&] { k_gelu<T><<<1024, 256, 0, stream>>>(f, n); });
    CK(cudaGetLastError());
    printf("{\"kernel\":\"gelu\",\"dtype\":\"%s\",\"elements\":%zu,\"gbs\":%.0f}\n", tname, n,
           (double)n * 2.0 * es / (ms * 1e-3) * 1e-9);
    CK(cudaFree(x));
    CK(cudaFree(g));
    CK(cudaFree(b));
    CK(cudaFree(add));
    CK(cudaFree(xo));
    CK(cudaFree(f));
}

int main(int argc, char **argv) {
    const bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    if (quick) reps = 3;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("{\"device\":\"%s\",\"cc\":\"%d.%d\",\"sms\":%d}\n", p.name, p.major, p.minor,
           p.multiProcessorCount);
    CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CKB(cublasLtCreate(&lt));
    CK(cudaMalloc(&ws, WS));
    const int big = quick ? 4096 : 8192;
    gemm("peak", "square", CUDA_R_16F, "fp16", big, big, big);
    if (p.major >= 8) gemm("peak", "square", CUDA_R_16BF, "bf16", big, big, big);
    const int R = 16384;
    const struct {
        const char *name;
        int H, I;
    } models[] = {{"minilm/bge-small", 384, 1536}, {"bge-base", 768, 3072}};
    for (const auto &m : models) {
        gemm(m.name, "qkv", CUDA_R_16F, "fp16", R, m.H, 3 * m.H);
        gemm(m.name, "out", CUDA_R_16F, "fp16", R, m.H, m.H);
        gemm(m.name, "ffn_in", CUDA_R_16F, "fp16", R, m.H, m.I);
        gemm(m.name, "ffn_out", CUDA_R_16F, "fp16", R, m.I, m.H);
    }
    /* the copy: read + write of 256 MiB */
    const size_t bytes = (size_t)256 << 20;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    double ms = median_ms([&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream); });
    printf("{\"copy\":\"device to device\",\"bytes\":%zu,\"gbs\":%.0f}\n", bytes,
           2.0 * bytes / (ms * 1e-3) * 1e-9);
    CK(cudaFree(a));
    CK(cudaFree(b));
    for (const auto &m : models) {
        memory_bound<__half>("fp16", R, m.H, m.I);
        if (p.major >= 8) memory_bound<__nv_bfloat16>("bf16", R, m.H, m.I);
    }
    CK(cudaFree(ws));
    cublasLtDestroy(lt);
    CK(cudaStreamDestroy(stream));
    return 0;
}
