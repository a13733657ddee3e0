/* timing.cuh — EMBD_CUDA_TIMING=1: where the GPU's time goes, per phase.
 *
 * Off (the default), nothing below runs but one branch per pass. On, every
 * forward pass records a CUDA event before its first operation and after
 * each one (the upload, embeddings + LayerNorm, and per layer the QKV GEMM,
 * attention, the output GEMM, add + LayerNorm, the FFN GEMMs, GELU, add +
 * LayerNorm; then pooling and the download), reads the elapsed times once
 * the pass has synchronised, and adds them up per phase with the useful
 * FLOPs (GEMMs, attention) or bytes moved (the memory-bound kernels) of the
 * pass. The host side is timed too: packing the batch, enqueueing, waiting
 * for the stream, copying the result out, and the GPU's idle time between
 * one pass's end and the next one's start. At exit one JSON object goes to
 * stderr: {"embd_cuda_timing": {...}} with ms, share of the GPU time, and
 * TFLOP/s or GB/s per phase (scripts/gpu-check reads it). Events are
 * created per backend on first use and destroyed with it. */
#ifndef EMBD_CUDA_TIMING_CUH
#define EMBD_CUDA_TIMING_CUH

#include <cuda_runtime.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum tm_phase {
    TM_H2D,
    TM_EMBED_LN,
    TM_QKV,
    TM_ATTN,
    TM_O,
    TM_ADD_LN1,
    TM_FFN_IN,
    TM_GELU,
    TM_FFN_OUT,
    TM_ADD_LN2,
    TM_POOL,
    TM_D2H,
    TM_N
};

static const char *const tm_names[TM_N] = {
    "upload",       "embeddings_layernorm", "qkv_gemm",    "attention",
    "out_gemm",     "add_layernorm_1",      "ffn_in_gemm", "gelu",
    "ffn_out_gemm", "add_layernorm_2",      "pooling",     "download"};

/* Process-wide sums (every backend adds in), under tm_mu. */
static struct {
    int on; /* -1: not read yet */
    double ms[TM_N], flop[TM_N], bytes[TM_N];
    double pack_ms, enqueue_ms, wait_ms, copy_ms, idle_ms;
    long long passes, tokens, seqs;
} tm = {-1, {0}, {0}, {0}, 0, 0, 0, 0, 0, 0, 0, 0};
static pthread_mutex_t tm_mu = PTHREAD_MUTEX_INITIALIZER;

static double tm_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void tm_report(void) {
    double gpu = 0;
    for (int k = 0; k < TM_N; k++)
        gpu += tm.ms[k];
    fprintf(stderr,
            "{\"embd_cuda_timing\":{\"passes\":%lld,\"sequences\":%lld,\"tokens\":%lld,"
            "\"gpu_ms\":%.3f,\"gpu_idle_between_passes_ms\":%.3f,\"host\":{\"pack_ms\":%.3f,"
            "\"enqueue_ms\":%.3f,\"wait_ms\":%.3f,\"copy_out_ms\":%.3f},\"phases\":[",
            tm.passes, tm.seqs, tm.tokens, gpu, tm.idle_ms, tm.pack_ms, tm.enqueue_ms, tm.wait_ms,
            tm.copy_ms);
    for (int k = 0; k < TM_N; k++) {
        const double s = tm.ms[k] * 1e-3;
        fprintf(stderr, "%s{\"phase\":\"%s\",\"ms\":%.3f,\"share\":%.4f", k ? "," : "", tm_names[k],
                tm.ms[k], gpu > 0 ? tm.ms[k] / gpu : 0.0);
        if (tm.flop[k] > 0 && s > 0) fprintf(stderr, ",\"tflops\":%.2f", tm.flop[k] / s * 1e-12);
        if (tm.bytes[k] > 0 && s > 0) fprintf(stderr, ",\"gbs\":%.1f", tm.bytes[k] / s * 1e-9);
        fputc('}', stderr);
    }
    fputs("]}}\n", stderr);
}

/* Whether EMBD_CUDA_TIMING is on (read once; the report is registered then). */
static bool tm_enabled(void) {
    pthread_mutex_lock(&tm_mu);
    if (tm.on < 0) {
        const char *e = getenv("EMBD_CUDA_TIMING");
        tm.on = e && *e && strcmp(e, "0") != 0;
        if (tm.on) atexit(tm_report);
    }
    const bool on = tm.on > 0;
    pthread_mutex_unlock(&tm_mu);
    return on;
}

/* One backend's events: a pass records at most 4 + 8 L of them. */
struct tm_pass {
    cudaEvent_t *ev;
    int n_ev, cap;
    int kind[512];
    double flop[TM_N], bytes[TM_N];
    cudaEvent_t last_end; /* the previous pass's last event, for the idle time */
    bool have_last;
    double t_pack, t_enqueue; /* host ms */
};

static bool tm_begin(struct tm_pass *p, int L, cudaStream_t s) {
    const int need = 4 + 8 * L + 2;
    if (need > (int)(sizeof p->kind / sizeof p->kind[0])) return false;
    if (p->cap < need) {
        cudaEvent_t *ev = (cudaEvent_t *)realloc(p->ev, (size_t)need * sizeof *ev);
        if (!ev) return false;
        p->ev = ev;
        for (int i = p->cap; i < need; i++)
            if (cudaEventCreate(&p->ev[i]) != cudaSuccess) {
                p->cap = i;
                return false;
            }
        p->cap = need;
        if (!p->have_last && cudaEventCreate(&p->last_end) != cudaSuccess) return false;
    }
    memset(p->flop, 0, sizeof p->flop);
    memset(p->bytes, 0, sizeof p->bytes);
    p->n_ev = 0;
    cudaEventRecord(p->ev[p->n_ev++], s);
    return true;
}

/* After an operation of kind k: one more event; k's work in flop or bytes. */
static void tm_mark(struct tm_pass *p, cudaStream_t s, int k, double flop, double bytes) {
    if (p->n_ev >= p->cap) return;
    p->kind[p->n_ev - 1] = k;
    p->flop[k] += flop;
    p->bytes[k] += bytes;
    cudaEventRecord(p->ev[p->n_ev++], s);
}

/* Once the stream has synchronised: the pass's times into the sums. */
static void tm_end(struct tm_pass *p, cudaStream_t s, int n_seq, int n_tok, double wait_ms,
                   double copy_ms) {
    double ms[TM_N] = {0}, idle = 0;
    for (int i = 0; i + 1 < p->n_ev; i++) {
        float e = 0;
        if (cudaEventElapsedTime(&e, p->ev[i], p->ev[i + 1]) == cudaSuccess) ms[p->kind[i]] += e;
    }
    if (p->have_last) {
        float e = 0;
        if (cudaEventElapsedTime(&e, p->last_end, p->ev[0]) == cudaSuccess && e > 0) idle = e;
    }
    (void)cudaGetLastError();
    if (p->n_ev > 0) {
        cudaEventRecord(p->last_end, s); /* the stream is done: now is the pass's end */
        cudaEventSynchronize(p->last_end);
        p->have_last = true;
    }
    pthread_mutex_lock(&tm_mu);
    for (int k = 0; k < TM_N; k++) {
        tm.ms[k] += ms[k];
        tm.flop[k] += p->flop[k];
        tm.bytes[k] += p->bytes[k];
    }
    tm.idle_ms += idle;
    tm.pack_ms += p->t_pack;
    tm.enqueue_ms += p->t_enqueue;
    tm.wait_ms += wait_ms;
    tm.copy_ms += copy_ms;
    tm.passes++;
    tm.seqs += n_seq;
    tm.tokens += n_tok;
    pthread_mutex_unlock(&tm_mu);
}

static void tm_free(struct tm_pass *p) {
    for (int i = 0; i < p->cap; i++)
        cudaEventDestroy(p->ev[i]);
    if (p->cap) cudaEventDestroy(p->last_end);
    free(p->ev);
    memset(p, 0, sizeof *p);
}

#endif
