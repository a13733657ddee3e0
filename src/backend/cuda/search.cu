/* search.cu — exact inner-product scoring for the embedded store on one GPU
 * (struct embd_cuda_searchops in plugin.h).
 *
 *   vecs   (cap, D) fp32 on the device, rows [0, n) valid: the store's
 *          vectors, uploaded once and then appended to
 *   q      (nq, D)  fp32 queries, uploaded per call
 *   scores (nq, n)  fp32 = q . vecs^T, copied back to the host
 *
 * Row-major (n, D) is column-major (D, n) with leading dimension D, so
 * scores^T (n, nq) = vecs_cm^T (n, D) q_cm (D, nq): cublasSgemm(T, N) (or
 * cublasSgemv(T) for one query). The math mode is pedantic: fp32 throughout,
 * never TF32, so a score differs from the CPU's cblas_sgemv only by the
 * order of the D additions. The top-k stays with the caller (the store):
 * scoring is the O(n D) part; selecting k of n is cheap on the host and keeps
 * one ranking rule for both paths.
 *
 * One stream and one cuBLAS handle per index; every call sets the device
 * first (the caller's thread may have another current). Every CUDA and
 * cuBLAS call is checked; a failure returns -1 with the call, file and line
 * in why, and an out-of-memory failure says how many vectors did not fit. A
 * sticky error (the context is gone) marks the index dead: only free is
 * allowed then, and it releases host memory only. */
#include "backend/cuda/search.cuh"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static struct embd_cuda_host host;

void embd_cuda_search_bind(const struct embd_cuda_host *h) {
    host = *h;
}

struct embd_cuda_index {
    int dev;
    int D;
    bool dead;
    cudaStream_t stream;
    cublasHandle_t blas;
    float *vecs; /* (cap, D) device; rows [0, n) hold the store's slots */
    size_t n, cap;
    float *q; /* (qcap, D) device */
    size_t qcap;
    float *scores; /* (scap) device */
    size_t scap;
};

/* Test hook: fail the device allocation after this many more succeed. */
static long fail_after = -1;

static void search_fail_alloc_after(long n) {
    fail_after = n;
}

/* See search.cuh. */
bool embd_cuda_sticky(cudaError_t err) {
    switch (err) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorLaunchTimeout:
    case cudaErrorContextIsDestroyed:
        return true;
    default:
        return false;
    }
}

/* Records a failed CUDA call in why; clears a non-sticky error, marks the
 * index dead on a sticky one. Returns -1. */
static int fail_cuda(struct embd_cuda_index *ix, cudaError_t err, const char *what,
                     const char *file, int line, char *why, size_t cap) {
    if (embd_cuda_sticky(err)) {
        if (ix) ix->dead = true;
    } else {
        (void)cudaGetLastError();
    }
    snprintf(why, cap, "cuda: %s: %s (%s:%d)", what, cudaGetErrorString(err), file, line);
    return -1;
}

static int fail_blas(cublasStatus_t s, const char *what, const char *file, int line, char *why,
                     size_t cap) {
    snprintf(why, cap, "cublas: %s: %s (%s:%d)", what, cublasGetStatusString(s), file, line);
    return -1;
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return fail_cuda(ix, e_, #call, __FILE__, __LINE__, why, cap);      \
    } while (0)
#define CKB(call)                                                                                  \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return fail_blas(s_, #call, __FILE__, __LINE__, why, cap);                             \
    } while (0)

/* *p = `floats` floats on the device, for `rows` vectors (for the message).
 * Returns 0, or -1 with "out of GPU memory for N vectors" or the CUDA error. */
static int dev_alloc(struct embd_cuda_index *ix, float **p, size_t floats, size_t rows, char *why,
                     size_t cap) {
    *p = NULL;
    cudaError_t e;
    if (fail_after == 0) {
        fail_after = -1;
        e = cudaErrorMemoryAllocation;
    } else {
        if (fail_after > 0) fail_after--;
        e = cudaMalloc((void **)p, floats * sizeof(float));
    }
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        *p = NULL;
        snprintf(why, cap, "out of GPU memory for %zu vectors of dim %d (%zu MiB) on cuda:%d", rows,
                 ix->D, (floats * sizeof(float)) >> 20, ix->dev);
        return -1;
    }
    if (e != cudaSuccess) {
        *p = NULL;
        return fail_cuda(ix, e, "cudaMalloc", __FILE__, __LINE__, why, cap);
    }
    return 0;
}

static void search_free(struct embd_cuda_index *ix) {
    if (!ix) return;
    if (!ix->dead) { /* a dead context has nothing left to free */
        if (cudaSetDevice(ix->dev) == cudaSuccess) {
            if (ix->stream) cudaStreamSynchronize(ix->stream);
            if (ix->vecs) cudaFree(ix->vecs);
            if (ix->q) cudaFree(ix->q);
            if (ix->scores) cudaFree(ix->scores);
            if (ix->blas) cublasDestroy(ix->blas);
            if (ix->stream) cudaStreamDestroy(ix->stream);
        }
        (void)cudaGetLastError(); /* leave no stale error behind */
    }
    host.free(ix);
}

static int create_inner(struct embd_cuda_index *ix, size_t rows, char *why, size_t cap) {
    int count = 0;
    CK(cudaGetDeviceCount(&count));
    if (ix->dev < 0 || ix->dev >= count) {
        snprintf(why, cap, "no CUDA device %d (%d found)", ix->dev, count);
        return -1;
    }
    CK(cudaSetDevice(ix->dev));
    CK(cudaStreamCreateWithFlags(&ix->stream, cudaStreamNonBlocking));
    CKB(cublasCreate(&ix->blas));
    CKB(cublasSetStream(ix->blas, ix->stream));
    CKB(cublasSetMathMode(ix->blas, CUBLAS_PEDANTIC_MATH));
    ix->cap = rows ? rows : 1;
    return dev_alloc(ix, &ix->vecs, ix->cap * (size_t)ix->D, ix->cap, why, cap);
}

static int search_create(struct embd_cuda_index **out, int dev, int D, size_t rows, char *why,
                         size_t cap) {
    if (!out || D < 1 || rows > (size_t)INT_MAX) {
        snprintf(why, cap, "cuda search: bad arguments (dim %d, %zu rows)", D, rows);
        return -1;
    }
    *out = NULL;
    struct embd_cuda_index *ix = (struct embd_cuda_index *)host.malloc(sizeof *ix);
    if (!ix) {
        snprintf(why, cap, "cuda search: out of host memory");
        return -1;
    }
    memset(ix, 0, sizeof *ix);
    ix->dev = dev;
    ix->D = D;
    if (create_inner(ix, rows, why, cap) != 0) {
        search_free(ix);
        return -1;
    }
    *out = ix;
    return 0;
}

static int search_append(struct embd_cuda_index *ix, const float *vecs, size_t n, char *why,
                         size_t cap) {
    if (!ix || (n && !vecs) || ix->dead) {
        snprintf(why, cap, "cuda search: %s",
                 ix && ix->dead ? "the GPU failed earlier" : "NULL argument");
        return -1;
    }
    if (n == 0) return 0;
    const size_t D = (size_t)ix->D, need = ix->n + n;
    if (n > (size_t)INT_MAX || need > (size_t)INT_MAX) { /* cuBLAS sizes are int */
        snprintf(why, cap, "cuda search: %zu vectors are more than cuBLAS takes", need);
        return -1;
    }
    CK(cudaSetDevice(ix->dev));
    if (need > ix->cap) {
        size_t grown = ix->cap + ix->cap / 2;
        size_t c = need > grown ? need : grown;
        if (c > (size_t)INT_MAX) c = need;
        float *nv = NULL;
        if (dev_alloc(ix, &nv, c * D, c, why, cap) != 0) return -1;
        if (ix->n) {
            cudaError_t e = cudaMemcpyAsync(nv, ix->vecs, ix->n * D * sizeof(float),
                                            cudaMemcpyDeviceToDevice, ix->stream);
            if (e == cudaSuccess) e = cudaStreamSynchronize(ix->stream);
            if (e != cudaSuccess) {
                cudaFree(nv);
                return fail_cuda(ix, e, "copying the vectors to a larger buffer", __FILE__,
                                 __LINE__, why, cap);
            }
        }
        CK(cudaFree(ix->vecs));
        ix->vecs = nv;
        ix->cap = c;
    }
    CK(cudaMemcpyAsync(ix->vecs + ix->n * D, vecs, n * D * sizeof(float), cudaMemcpyHostToDevice,
                       ix->stream));
    CK(cudaStreamSynchronize(ix->stream)); /* vecs is the caller's memory */
    ix->n = need;
    return 0;
}

/* Makes the device buffer *p hold at least `floats` floats (exactly that
 * many when it grows). */
static int ensure(struct embd_cuda_index *ix, float **p, size_t *have, size_t floats, size_t rows,
                  char *why, size_t cap) {
    if (*have >= floats) return 0;
    if (*p) CK(cudaFree(*p));
    *p = NULL;
    *have = 0;
    if (dev_alloc(ix, p, floats, rows, why, cap) != 0) return -1;
    *have = floats;
    return 0;
}

static int search_score(struct embd_cuda_index *ix, float *scores, const float *queries, size_t nq,
                        char *why, size_t cap) {
    if (!ix || (nq && (!scores || !queries)) || ix->dead) {
        snprintf(why, cap, "cuda search: %s",
                 ix && ix->dead ? "the GPU failed earlier" : "NULL argument");
        return -1;
    }
    if (nq == 0 || ix->n == 0) return 0;
    const size_t D = (size_t)ix->D, n = ix->n;
    if (nq > (size_t)INT_MAX || nq > SIZE_MAX / sizeof(float) / ix->cap) {
        snprintf(why, cap, "cuda search: %zu queries of %zu vectors are too many at once", nq, n);
        return -1;
    }
    CK(cudaSetDevice(ix->dev));
    if (ensure(ix, &ix->q, &ix->qcap, nq * D, nq, why, cap)) return -1;
    /* room for nq x cap scores: regrown only when the matrix grows */
    if (ensure(ix, &ix->scores, &ix->scap, nq * ix->cap, n, why, cap)) return -1;
    CK(cudaMemcpyAsync(ix->q, queries, nq * D * sizeof(float), cudaMemcpyHostToDevice, ix->stream));
    const float one = 1.0f, zero = 0.0f;
    /* in blocks of rows whose matrix stays under 2^31 elements (cuBLAS's
     * int sizes): scores^T rows [r0, r0 + m) come from vecs rows [r0, r0 + m) */
    const size_t block = (size_t)INT_MAX / D;
    for (size_t r0 = 0; r0 < n; r0 += block) {
        const int m = (int)(n - r0 < block ? n - r0 : block);
        const float *A = ix->vecs + r0 * D;
        if (nq == 1)
            CKB(cublasSgemv(ix->blas, CUBLAS_OP_T, ix->D, m, &one, A, ix->D, ix->q, 1, &zero,
                            ix->scores + r0, 1));
        else
            CKB(cublasSgemm(ix->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, (int)nq, ix->D, &one, A, ix->D,
                            ix->q, ix->D, &zero, ix->scores + r0, (int)n));
    }
    CK(cudaMemcpyAsync(scores, ix->scores, nq * n * sizeof(float), cudaMemcpyDeviceToHost,
                       ix->stream));
    CK(cudaStreamSynchronize(ix->stream));
    return 0;
}

static size_t search_rows(const struct embd_cuda_index *ix) {
    return ix ? ix->n : 0;
}

const struct embd_cuda_searchops embd_cuda_search_ops = {
    search_create, search_append, search_score, search_rows, search_free, search_fail_alloc_after,
};
