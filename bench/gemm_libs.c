/* gemm_libs — the CPU matrix products of this project's models, timed in
 * libraries against embd's own kernel: C(T,N) = A(T,K) * W(N,K)^T, the shape
 * of every linear layer (A: activations, T tokens; W: the weight as stored,
 * N outputs by K inputs). Libraries are loaded with dlopen, so this builds
 * and runs without them; one that is missing is skipped with a line.
 *
 *   openblas   libopenblas.so.0: cblas_sgemm. Its kernel set comes from
 *              OPENBLAS_CORETYPE at load time (run the process with and
 *              without it); openblas_get_corename() is printed.
 *   mkl        libmkl_rt.so.3 (PyPI mkl): cblas_sgemm, cblas_sgemm_pack +
 *              cblas_sgemm_compute (W packed once), cblas_gemm_bf16bf16f32
 *              and cblas_gemm_s8u8s32, plain and packed. Threading layer GNU
 *              (libgomp, as embd) unless MKL_THREADING_LAYER is set.
 *              MKL_ENABLE_INSTRUCTIONS is MKL's own; the version string
 *              printed names the instruction set MKL chose.
 *   dnnl       libdnnl.so.2 (Debian 2.x) or .so.3 (PyPI onednn): dnnl_sgemm,
 *              dnnl_gemm_u8s8s32, and with 3.x the matmul primitive in fp32
 *              and bf16 with W reordered once into the layout it asks for.
 *   embd       embd_cpu_gemm_new/_run (src/backend/cpu/cpu.h; W packed once
 *              for the kernel set the backend picks; EMBD_CPU_ISA forces one;
 *              its own OpenMP threads, so no split rows).
 *
 * bf16 and int8 rows take A and W already converted (the conversion is not
 * timed) and count 2*T*N*K operations like fp32; int8 inputs are 0..63, so
 * that u8 and s8 read them alike and the int32 result is checked exactly.
 *
 * Threads (--threads N, default 2), one row per mode:
 *   1t     one thread
 *   lib    the library's own threading with N threads
 *   split  N OpenMP threads, each a 1-thread call on its block of rows
 *          (how embd uses OpenBLAS)
 * A oneDNN built on TBB or SYCL (PyPI's) takes its thread count from the
 * process's CPU affinity: its 1t rows need `taskset -c 0`, and it has no
 * split rows. Its matmul primitive needs a SYCL CPU device: the OpenCL CPU
 * runtime of PyPI's intel-opencl-rt, found through OCL_ICD_VENDORS.
 *
 * Timing: a warm-up call; calls are repeated to fill --ms milliseconds a
 * rep; the rate is the median of --reps reps (min and max printed too).
 * Rows of the output are checked against a double-precision product of a few
 * rows (err: max |difference| / max |reference|).
 *
 * Output: one JSON object a line on stdout: {"info": ...} about a library,
 * {"skip": ...} for what did not run, and a row per measurement: lib, tag,
 * variant, dtype, mode, threads, model, op, T, K, N, gflops (median), min,
 * max, reps, iters, err, load (1-minute load average at its start).
 * bench/gemm_libs.sh runs every library and configuration and writes the
 * table.
 *
 * usage: bench_gemm_libs --lib openblas|mkl|dnnl|embd [--path LIB.so] [--tag TEXT]
 *        [--threads 2] [--modes 1t,lib,split] [--tokens 2048,32]
 *        [--models minilm,bge-base] [--variants a,b] [--reps 7] [--ms 40]
 * Built with the tests (tests/engine/CMakeLists.txt) as bench_gemm_libs. */
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef EMBD_HAVE_CPU_GEMM
#include "backend/cpu/cpu.h"
#endif

/* Letters: T tokens (rows of A and C), K inputs, N outputs. */

typedef struct {
    const char *model, *op;
    int K, N;
} shape;

/* The four linear layers of a BERT layer: hidden H, intermediate I. */
static const shape SHAPES[] = {
    {"minilm", "qkv", 384, 1152},   {"minilm", "out", 384, 384},     /* H 384, I 1536 */
    {"minilm", "up", 384, 1536},    {"minilm", "down", 1536, 384},   /* (also bge-small) */
    {"bge-base", "qkv", 768, 2304}, {"bge-base", "out", 768, 768},   /* H 768, I 3072 */
    {"bge-base", "up", 768, 3072},  {"bge-base", "down", 3072, 768}, /* */
};

typedef struct {
    int T, K, N;
    float *A;         /* (T, K) */
    float *W;         /* (N, K) */
    float *C;         /* (T, N) */
    uint16_t *Ab;     /* (T, K) A in bf16 */
    uint16_t *Wb;     /* (N, K) W in bf16 */
    uint8_t *A8;      /* (T, K) 0..63 */
    uint8_t *W8;      /* (N, K) 0..63 */
    int32_t *C32;     /* (T, N) */
    float *Aq, *Wq;   /* A8 and W8 as floats, for the int8 check */
    void *pack, *aux; /* a variant's packed weights and state */
} problem;

typedef struct variant variant;
struct variant {
    const char *name;  /* e.g. "sgemm_packed" */
    const char *dtype; /* "fp32", "bf16", "int8" */
    bool split_ok;     /* row blocks may run from several threads */
    /* Gets ready for p (packs W) for calls of `rows` rows with the library
     * on `threads` threads; false with why[] to skip. */
    bool (*prepare)(problem *p, int rows, int threads, char *why, size_t n);
    /* C rows [r0, r0 + rows) of p. */
    void (*run)(problem *p, int r0, int rows);
    void (*release)(problem *p);
};

typedef struct {
    const char *name;
    bool (*load)(const char *path, char *why, size_t n); /* prints its info lines */
    void (*set_threads)(int n);                          /* the library's own thread count */
    const variant *variants;
    int n_variants;
    int max_lib_threads; /* 0: any; else what its runtime can use (TBB: the affinity) */
    bool no_split;       /* the runtime cannot be called from several threads at 1 each */
} library;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *g_lib = "?", *g_tag = "";

/* A JSON string value: quotes, backslashes and control characters escaped. */
static void put_json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void say(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *key, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("{\"lib\": ");
    put_json_str(g_lib);
    printf(", \"tag\": ");
    put_json_str(g_tag);
    printf(", \"%s\": ", key);
    put_json_str(buf);
    printf("}\n");
    fflush(stdout);
}

static void *sym(void *h, const char *name, bool *ok) {
    void *f = dlsym(h, name);
    if (!f) *ok = false;
    return f;
}

/* dst = the symbol name of h, as dst's type; *ok = false when missing. */
#define LOADSYM(dst, h, name, ok) ((dst) = (__typeof__(dst))sym(h, name, ok))

static void *open_lib(const char *path, char *why, size_t n) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h) snprintf(why, n, "cannot load %s: %s", path, dlerror());
    return h;
}

/* ---------------------------------------------------------------------- */
/* OpenBLAS                                                               */
/* ---------------------------------------------------------------------- */

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, PACKED = 151, B_MATRIX = 162, FIX_OFF = 173 };

typedef void (*sgemm_fn)(int layout, int ta, int tb, int M, int N, int K, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc);

static struct {
    sgemm_fn sgemm;
    void (*set_threads)(int);
    char *(*corename)(void);
    char *(*config)(void);
} ob;

static bool ob_load(const char *path, char *why, size_t n) {
    void *h = open_lib(path ? path : "libopenblas.so.0", why, n);
    if (!h) return false;
    bool ok = true;
    ob.sgemm = (sgemm_fn)sym(h, "cblas_sgemm", &ok);
    ob.set_threads = (void (*)(int))sym(h, "openblas_set_num_threads", &ok);
    ob.corename = (char *(*)(void))sym(h, "openblas_get_corename", &ok);
    ob.config = (char *(*)(void))sym(h, "openblas_get_config", &ok);
    if (!ok) {
        snprintf(why, n, "not OpenBLAS (no cblas_sgemm/openblas_get_corename)");
        return false;
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    say("info", "OpenBLAS %s; core %s; OPENBLAS_CORETYPE %s", ob.config(), ob.corename(),
        ct ? ct : "unset");
    return true;
}

static void ob_threads(int n) {
    ob.set_threads(n);
}

static bool ob_prep(problem *p, int rows, int threads, char *why, size_t n) {
    return true;
}

static void ob_run(problem *p, int r0, int rows) {
    ob.sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, p->N, p->K, 1.0f, p->A + (size_t)r0 * p->K, p->K,
             p->W, p->K, 0.0f, p->C + (size_t)r0 * p->N, p->N);
}

static void no_release(problem *p) {}

static const variant OB_VARIANTS[] = {
    {"sgemm", "fp32", true, ob_prep, ob_run, no_release},
};

/* ---------------------------------------------------------------------- */
/* MKL                                                                    */
/* ---------------------------------------------------------------------- */

typedef size_t (*pack_size_fn)(int id, int M, int N, int K);

static struct {
    sgemm_fn sgemm;
    pack_size_fn s_size, b_size, i_size;
    void (*s_pack)(int layout, int id, int tr, int M, int N, int K, float alpha, const float *src,
                   int ld, float *dst);
    void (*s_compute)(int layout, int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);
    void (*b_gemm)(int layout, int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                   int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc);
    void (*b_pack)(int layout, int id, int tr, int M, int N, int K, const uint16_t *src, int ld,
                   uint16_t *dst);
    void (*b_compute)(int layout, int ta, int tb, int M, int N, int K, float alpha,
                      const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta, float *C,
                      int ldc);
    void (*i_gemm)(int layout, int ta, int tb, int offc, int M, int N, int K, float alpha,
                   const void *A, int lda, char ao, const void *B, int ldb, char bo, float beta,
                   int32_t *C, int ldc, const int32_t *co);
    void (*i_pack)(int layout, int id, int tr, int M, int N, int K, const void *src, int ld,
                   void *dst);
    void (*i_compute)(int layout, int ta, int tb, int offc, int M, int N, int K, float alpha,
                      const void *A, int lda, char ao, const void *B, int ldb, char bo, float beta,
                      int32_t *C, int ldc, const int32_t *co);
    void (*set_threads)(int);
} mkl;

static bool mkl_load(const char *path, char *why, size_t n) {
    void *h = open_lib(path ? path : "libmkl_rt.so.3", why, n);
    if (!h) h = open_lib("libmkl_rt.so.2", why, n);
    if (!h) return false;
    bool ok = true;
    int (*layer)(int) = (int (*)(int))sym(h, "MKL_Set_Threading_Layer", &ok);
    void (*version)(char *, int) = (void (*)(char *, int))sym(h, "MKL_Get_Version_String", &ok);
    mkl.set_threads = (void (*)(int))sym(h, "MKL_Set_Num_Threads", &ok);
    mkl.sgemm = (sgemm_fn)sym(h, "cblas_sgemm", &ok);
    if (!ok) {
        snprintf(why, n, "not MKL's runtime library (no MKL_Set_Threading_Layer/cblas_sgemm)");
        return false;
    }
    /* The packed and low-precision entries are optional: older MKLs lack some. */
    bool opt = true;
    mkl.s_size = (pack_size_fn)sym(h, "cblas_sgemm_pack_get_size", &opt);
    LOADSYM(mkl.s_pack, h, "cblas_sgemm_pack", &opt);
    LOADSYM(mkl.s_compute, h, "cblas_sgemm_compute", &opt);
    LOADSYM(mkl.b_gemm, h, "cblas_gemm_bf16bf16f32", &opt);
    mkl.b_size = (pack_size_fn)sym(h, "cblas_gemm_bf16bf16f32_pack_get_size", &opt);
    LOADSYM(mkl.b_pack, h, "cblas_gemm_bf16bf16f32_pack", &opt);
    LOADSYM(mkl.b_compute, h, "cblas_gemm_bf16bf16f32_compute", &opt);
    LOADSYM(mkl.i_gemm, h, "cblas_gemm_s8u8s32", &opt);
    mkl.i_size = (pack_size_fn)sym(h, "cblas_gemm_s8u8s32_pack_get_size", &opt);
    LOADSYM(mkl.i_pack, h, "cblas_gemm_s8u8s32_pack", &opt);
    LOADSYM(mkl.i_compute, h, "cblas_gemm_s8u8s32_compute", &opt);
    /* 0 INTEL (libiomp5), 1 SEQUENTIAL, 2 PGI, 3 GNU (libgomp), 4 TBB. */
    const char *env = getenv("MKL_THREADING_LAYER");
    if (!env) layer(3);
    char v[512] = "";
    version(v, (int)sizeof v);
    const char *ins = getenv("MKL_ENABLE_INSTRUCTIONS");
    say("info", "%s; threading layer %s; MKL_ENABLE_INSTRUCTIONS %s", v, env ? env : "GNU (set)",
        ins ? ins : "unset");
    return true;
}

static void mkl_threads(int n) {
    mkl.set_threads(n);
}

static void mkl_run(problem *p, int r0, int rows) {
    mkl.sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, p->N, p->K, 1.0f, p->A + (size_t)r0 * p->K, p->K,
              p->W, p->K, 0.0f, p->C + (size_t)r0 * p->N, p->N);
}

static bool mkl_prep_plain(problem *p, int rows, int threads, char *why, size_t n) {
    return true;
}

static bool mkl_prep_spack(problem *p, int rows, int threads, char *why, size_t n) {
    if (!mkl.s_size || !mkl.s_pack || !mkl.s_compute) {
        snprintf(why, n, "this MKL has no cblas_sgemm_pack");
        return false;
    }
    size_t bytes = mkl.s_size(B_MATRIX, rows, p->N, p->K);
    p->pack = aligned_alloc(64, (bytes + 63) / 64 * 64);
    mkl.s_pack(ROW_MAJOR, B_MATRIX, TRANS, rows, p->N, p->K, 1.0f, p->W, p->K, p->pack);
    return true;
}

static void mkl_run_spack(problem *p, int r0, int rows) {
    mkl.s_compute(ROW_MAJOR, NO_TRANS, PACKED, rows, p->N, p->K, p->A + (size_t)r0 * p->K, p->K,
                  p->pack, p->K, 0.0f, p->C + (size_t)r0 * p->N, p->N);
}

static void free_pack(problem *p) {
    free(p->pack);
    p->pack = NULL;
}

static bool mkl_prep_b(problem *p, int rows, int threads, char *why, size_t n) {
    if (!mkl.b_gemm) snprintf(why, n, "this MKL has no cblas_gemm_bf16bf16f32");
    return mkl.b_gemm != NULL;
}

static void mkl_run_b(problem *p, int r0, int rows) {
    mkl.b_gemm(ROW_MAJOR, NO_TRANS, TRANS, rows, p->N, p->K, 1.0f, p->Ab + (size_t)r0 * p->K, p->K,
               p->Wb, p->K, 0.0f, p->C + (size_t)r0 * p->N, p->N);
}

static bool mkl_prep_bpack(problem *p, int rows, int threads, char *why, size_t n) {
    if (!mkl.b_size || !mkl.b_pack || !mkl.b_compute) {
        snprintf(why, n, "this MKL has no cblas_gemm_bf16bf16f32_pack");
        return false;
    }
    size_t bytes = mkl.b_size(B_MATRIX, rows, p->N, p->K);
    p->pack = aligned_alloc(64, (bytes + 63) / 64 * 64);
    mkl.b_pack(ROW_MAJOR, B_MATRIX, TRANS, rows, p->N, p->K, p->Wb, p->K, p->pack);
    return true;
}

static void mkl_run_bpack(problem *p, int r0, int rows) {
    mkl.b_compute(ROW_MAJOR, NO_TRANS, PACKED, rows, p->N, p->K, 1.0f, p->Ab + (size_t)r0 * p->K,
                  p->K, p->pack, p->K, 0.0f, p->C + (size_t)r0 * p->N, p->N);
}

static const int32_t ZERO32 = 0;

static bool mkl_prep_i(problem *p, int rows, int threads, char *why, size_t n) {
    if (!mkl.i_gemm) snprintf(why, n, "this MKL has no cblas_gemm_s8u8s32");
    return mkl.i_gemm != NULL;
}

static void mkl_run_i(problem *p, int r0, int rows) {
    mkl.i_gemm(ROW_MAJOR, NO_TRANS, TRANS, FIX_OFF, rows, p->N, p->K, 1.0f,
               p->A8 + (size_t)r0 * p->K, p->K, 0, p->W8, p->K, 0, 0.0f, p->C32 + (size_t)r0 * p->N,
               p->N, &ZERO32);
}

static bool mkl_prep_ipack(problem *p, int rows, int threads, char *why, size_t n) {
    if (!mkl.i_size || !mkl.i_pack || !mkl.i_compute) {
        snprintf(why, n, "this MKL has no cblas_gemm_s8u8s32_pack");
        return false;
    }
    size_t bytes = mkl.i_size(B_MATRIX, rows, p->N, p->K);
    p->pack = aligned_alloc(64, (bytes + 63) / 64 * 64);
    mkl.i_pack(ROW_MAJOR, B_MATRIX, TRANS, rows, p->N, p->K, p->W8, p->K, p->pack);
    return true;
}

static void mkl_run_ipack(problem *p, int r0, int rows) {
    mkl.i_compute(ROW_MAJOR, NO_TRANS, PACKED, FIX_OFF, rows, p->N, p->K, 1.0f,
                  p->A8 + (size_t)r0 * p->K, p->K, 0, p->pack, p->K, 0, 0.0f,
                  p->C32 + (size_t)r0 * p->N, p->N, &ZERO32);
}

/* Packed variants are packed for a row count; split calls have T/threads rows
 * (T is a multiple of the thread count here), which prepare is told. */
static const variant MKL_VARIANTS[] = {
    {"sgemm", "fp32", true, mkl_prep_plain, mkl_run, no_release},
    {"sgemm_packed", "fp32", true, mkl_prep_spack, mkl_run_spack, free_pack},
    {"gemm_bf16bf16f32", "bf16", true, mkl_prep_b, mkl_run_b, no_release},
    {"gemm_bf16bf16f32_packed", "bf16", true, mkl_prep_bpack, mkl_run_bpack, free_pack},
    {"gemm_s8u8s32", "int8", true, mkl_prep_i, mkl_run_i, no_release},
    {"gemm_s8u8s32_packed", "int8", true, mkl_prep_ipack, mkl_run_ipack, free_pack},
};

/* ---------------------------------------------------------------------- */
/* oneDNN                                                                 */
/* ---------------------------------------------------------------------- */

typedef struct {
    int major, minor, patch;
    const char *hash;
    unsigned cpu_runtime, gpu_runtime;
} dnnl_version_t;

typedef struct {
    int arg;
    void *memory;
} dnnl_exec_arg;

enum { DNNL_RUNTIME_SEQ = 1, DNNL_RUNTIME_OMP = 2, DNNL_RUNTIME_TBB = 4, DNNL_RUNTIME_SYCL = 512 };
/* oneDNN 3.x values (dnnl_types.h, dnnl_common_types.h). */
enum {
    DNNL_F32 = 3,
    DNNL_BF16 = 2,
    DNNL_TAG_ANY = 1,
    DNNL_TAG_AB = 3,
    DNNL_TAG_BA = 14,
    DNNL_QUERY_WEIGHTS_MD = 131,
    DNNL_ARG_SRC = 1,
    DNNL_ARG_DST = 17,
    DNNL_ARG_WEIGHTS = 33,
};
#define DNNL_MEMORY_ALLOCATE ((void *)(size_t)-1)

typedef int64_t dnnl_dims[12];

static struct {
    int (*sgemm)(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
    int (*u8s8)(char ta, char tb, char offc, int64_t M, int64_t N, int64_t K, float alpha,
                const uint8_t *A, int64_t lda, uint8_t ao, const int8_t *B, int64_t ldb, int8_t bo,
                float beta, int32_t *C, int64_t ldc, const int32_t *co);
    /* 3.x primitive API (all handles opaque pointers). */
    int (*engine_create)(void **eng, int kind, size_t index);
    int (*stream_create)(void **s, void *eng, unsigned flags);
    int (*stream_wait)(void *s);
    int (*md_create)(void **md, int ndims, const dnnl_dims dims, int dt, int tag);
    int (*md_destroy)(void *md);
    int (*matmul_pd)(void **pd, void *eng, const void *src, const void *w, const void *bias,
                     const void *dst, const void *attr);
    int (*reorder_pd)(void **pd, const void *src_md, void *src_eng, const void *dst_md,
                      void *dst_eng, const void *attr);
    const void *(*query_md)(const void *pd, int what, int index);
    int (*prim_create)(void **prim, const void *pd);
    int (*prim_execute)(const void *prim, void *stream, int nargs, const dnnl_exec_arg *args);
    int (*prim_destroy)(void *prim);
    int (*pd_destroy)(void *pd);
    int (*mem_create)(void **mem, const void *md, void *eng, void *handle);
    int (*mem_destroy)(void *mem);
    void *eng, *stream;
    bool have_matmul;
    unsigned runtime;
} dnnl;

static const char *dnnl_isa_name(int isa) {
    switch (isa) {
    case 0x7:
        return "avx2";
    case 0xf:
        return "avx2_vnni";
    case 0x27:
        return "avx512_core";
    case 0x67:
        return "avx512_core_vnni";
    case 0xe7:
        return "avx512_core_bf16";
    default:
        return "other (see dnnl_types.h)";
    }
}

static int affinity_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

static bool dnnl_load(const char *path, char *why, size_t n) {
    void *h = open_lib(path ? path : "libdnnl.so.3", why, n);
    if (!h && !path) h = open_lib("libdnnl.so.2", why, n);
    if (!h) return false;
    bool ok = true;
    const dnnl_version_t *(*version)(void) =
        (const dnnl_version_t *(*)(void))sym(h, "dnnl_version", &ok);
    int (*eff_isa)(void) = (int (*)(void))sym(h, "dnnl_get_effective_cpu_isa", &ok);
    LOADSYM(dnnl.sgemm, h, "dnnl_sgemm", &ok);
    *(void **)&dnnl.u8s8 = sym(h, "dnnl_gemm_u8s8s32", &ok);
    if (!ok) {
        snprintf(why, n, "not oneDNN (no dnnl_version/dnnl_sgemm)");
        return false;
    }
    const dnnl_version_t *v = version();
    dnnl.runtime = v->cpu_runtime;
    const char *rt = v->cpu_runtime == DNNL_RUNTIME_OMP    ? "OpenMP"
                     : v->cpu_runtime == DNNL_RUNTIME_TBB  ? "TBB"
                     : v->cpu_runtime == DNNL_RUNTIME_SEQ  ? "sequential"
                     : v->cpu_runtime == DNNL_RUNTIME_SYCL ? "SYCL (threads: TBB)"
                                                           : "other";
    int isa = eff_isa();
    say("info", "oneDNN %d.%d.%d (%s); CPU runtime %s; ISA %s (0x%x)", v->major, v->minor, v->patch,
        v->hash ? v->hash : "", rt, dnnl_isa_name(isa), isa);
    if (v->major >= 3) {
        bool m = true;
        LOADSYM(dnnl.engine_create, h, "dnnl_engine_create", &m);
        LOADSYM(dnnl.stream_create, h, "dnnl_stream_create", &m);
        LOADSYM(dnnl.stream_wait, h, "dnnl_stream_wait", &m);
        LOADSYM(dnnl.md_create, h, "dnnl_memory_desc_create_with_tag", &m);
        LOADSYM(dnnl.md_destroy, h, "dnnl_memory_desc_destroy", &m);
        LOADSYM(dnnl.matmul_pd, h, "dnnl_matmul_primitive_desc_create", &m);
        LOADSYM(dnnl.reorder_pd, h, "dnnl_reorder_primitive_desc_create", &m);
        LOADSYM(dnnl.query_md, h, "dnnl_primitive_desc_query_md", &m);
        LOADSYM(dnnl.prim_create, h, "dnnl_primitive_create", &m);
        LOADSYM(dnnl.prim_execute, h, "dnnl_primitive_execute", &m);
        LOADSYM(dnnl.prim_destroy, h, "dnnl_primitive_destroy", &m);
        LOADSYM(dnnl.pd_destroy, h, "dnnl_primitive_desc_destroy", &m);
        LOADSYM(dnnl.mem_create, h, "dnnl_memory_create", &m);
        LOADSYM(dnnl.mem_destroy, h, "dnnl_memory_destroy", &m);
        dnnl.have_matmul = m && dnnl.engine_create(&dnnl.eng, 1, 0) == 0 &&
                           dnnl.stream_create(&dnnl.stream, dnnl.eng, 1) == 0;
    }
    if (!dnnl.have_matmul && v->major < 3)
        say("skip", "matmul primitive: only wired in for oneDNN 3.x (its C API changed)");
    else if (!dnnl.have_matmul)
        say("skip", "matmul primitive: no CPU engine (a SYCL build needs a SYCL CPU device)");
    return true;
}

static void dnnl_threads(int n) {
    omp_set_num_threads(n); /* an OpenMP oneDNN; TBB takes the affinity */
}

static bool dnnl_prep_plain(problem *p, int rows, int threads, char *why, size_t n) {
    return true;
}

static void dnnl_run_s(problem *p, int r0, int rows) {
    dnnl.sgemm('N', 'T', rows, p->N, p->K, 1.0f, p->A + (size_t)r0 * p->K, p->K, p->W, p->K, 0.0f,
               p->C + (size_t)r0 * p->N, p->N);
}

static void dnnl_run_i(problem *p, int r0, int rows) {
    dnnl.u8s8('N', 'T', 'F', rows, p->N, p->K, 1.0f, p->A8 + (size_t)r0 * p->K, p->K, 0,
              (const int8_t *)p->W8, p->K, 0, 0.0f, p->C32 + (size_t)r0 * p->N, p->N, &ZERO32);
}

/* The matmul primitive for T rows: src (T,K) ab, weights (K,N) as W is
 * stored (ba), reordered once into the layout the primitive asks for
 * ("any"), dst (T,N) ab fp32. */
typedef struct {
    void *prim, *src, *w, *dst;
    int dt;
} dnnl_mm;

static bool dnnl_prep_mm(problem *p, int rows, int threads, int dt, char *why, size_t n) {
    if (!dnnl.have_matmul) {
        snprintf(why, n, "matmul primitive: no oneDNN 3.x CPU engine");
        return false;
    }
    dnnl_mm *m = calloc(1, sizeof *m);
    void *src_md = NULL, *w_user_md = NULL, *w_any_md = NULL, *dst_md = NULL, *pd = NULL;
    void *rpd = NULL, *rprim = NULL, *w_user = NULL;
    dnnl_dims ds = {rows, p->K}, dw = {p->K, p->N}, dd = {rows, p->N};
    bool ok = dnnl.md_create(&src_md, 2, ds, dt, DNNL_TAG_AB) == 0 &&
              dnnl.md_create(&w_user_md, 2, dw, dt, DNNL_TAG_BA) == 0 &&
              dnnl.md_create(&w_any_md, 2, dw, dt, DNNL_TAG_ANY) == 0 &&
              dnnl.md_create(&dst_md, 2, dd, DNNL_F32, DNNL_TAG_AB) == 0 &&
              dnnl.matmul_pd(&pd, dnnl.eng, src_md, w_any_md, NULL, dst_md, NULL) == 0 &&
              dnnl.prim_create(&m->prim, pd) == 0;
    if (ok) {
        const void *w_md = dnnl.query_md(pd, DNNL_QUERY_WEIGHTS_MD, 0);
        void *wsrc = dt == DNNL_BF16 ? (void *)p->Wb : (void *)p->W;
        ok = dnnl.mem_create(&w_user, w_user_md, dnnl.eng, wsrc) == 0 &&
             dnnl.mem_create(&m->w, w_md, dnnl.eng, DNNL_MEMORY_ALLOCATE) == 0 &&
             dnnl.reorder_pd(&rpd, w_user_md, dnnl.eng, w_md, dnnl.eng, NULL) == 0 &&
             dnnl.prim_create(&rprim, rpd) == 0;
        if (ok) {
            dnnl_exec_arg args[2] = {{DNNL_ARG_SRC, w_user}, {DNNL_ARG_DST, m->w}};
            ok = dnnl.prim_execute(rprim, dnnl.stream, 2, args) == 0 &&
                 dnnl.stream_wait(dnnl.stream) == 0;
        }
    }
    if (ok) {
        void *asrc = dt == DNNL_BF16 ? (void *)p->Ab : (void *)p->A;
        ok = dnnl.mem_create(&m->src, src_md, dnnl.eng, asrc) == 0 &&
             dnnl.mem_create(&m->dst, dst_md, dnnl.eng, p->C) == 0;
    }
    if (rprim) dnnl.prim_destroy(rprim);
    if (rpd) dnnl.pd_destroy(rpd);
    if (w_user) dnnl.mem_destroy(w_user);
    if (pd) dnnl.pd_destroy(pd);
    void *mds[] = {src_md, w_user_md, w_any_md, dst_md};
    for (int i = 0; i < 4; i++)
        if (mds[i]) dnnl.md_destroy(mds[i]);
    p->aux = m;
    if (!ok) snprintf(why, n, "oneDNN refused the matmul (a call returned an error)");
    return ok;
}

static bool dnnl_prep_mm_f32(problem *p, int rows, int threads, char *why, size_t n) {
    return dnnl_prep_mm(p, rows, threads, DNNL_F32, why, n);
}

static bool dnnl_prep_mm_bf16(problem *p, int rows, int threads, char *why, size_t n) {
    return dnnl_prep_mm(p, rows, threads, DNNL_BF16, why, n);
}

static void dnnl_run_mm(problem *p, int r0, int rows) {
    dnnl_mm *m = p->aux;
    dnnl_exec_arg args[3] = {
        {DNNL_ARG_SRC, m->src}, {DNNL_ARG_WEIGHTS, m->w}, {DNNL_ARG_DST, m->dst}};
    dnnl.prim_execute(m->prim, dnnl.stream, 3, args);
    dnnl.stream_wait(dnnl.stream);
}

static void dnnl_release_mm(problem *p) {
    dnnl_mm *m = p->aux;
    if (!m) return;
    void *mems[] = {m->src, m->w, m->dst};
    for (int i = 0; i < 3; i++)
        if (mems[i]) dnnl.mem_destroy(mems[i]);
    if (m->prim) dnnl.prim_destroy(m->prim);
    free(m);
    p->aux = NULL;
}

static const variant DNNL_VARIANTS[] = {
    {"sgemm", "fp32", true, dnnl_prep_plain, dnnl_run_s, no_release},
    {"matmul", "fp32", false, dnnl_prep_mm_f32, dnnl_run_mm, dnnl_release_mm},
    {"matmul", "bf16", false, dnnl_prep_mm_bf16, dnnl_run_mm, dnnl_release_mm},
    {"gemm_u8s8s32", "int8", true, dnnl_prep_plain, dnnl_run_i, no_release},
};

/* ---------------------------------------------------------------------- */
/* embd's own kernel                                                      */
/* ---------------------------------------------------------------------- */

#ifdef EMBD_HAVE_CPU_GEMM
static bool embd_load(const char *path, char *why, size_t n) {
    const char *isa = getenv("EMBD_CPU_ISA");
    say("info", "embd_cpu_gemm; EMBD_CPU_ISA %s", isa ? isa : "unset (the backend's choice)");
    return true;
}

static void embd_threads(int n) {}

static bool embd_prep(problem *p, int rows, int threads, char *why, size_t n) {
    static bool told;
    p->aux = embd_cpu_gemm_new(p->W, p->N, p->K, threads);
    if (!p->aux) {
        snprintf(why, n, "embd_cpu_gemm_new failed (a bad EMBD_CPU_ISA for this CPU?)");
        return false;
    }
    if (!told) say("info", "embd kernel set: %s", embd_cpu_gemm_isa(p->aux));
    told = true;
    return true;
}

static void embd_run(problem *p, int r0, int rows) {
    embd_cpu_gemm_run(p->aux, p->C + (size_t)r0 * p->N, p->A + (size_t)r0 * p->K, rows, NULL);
}

static void embd_release(problem *p) {
    if (p->aux) embd_cpu_gemm_free(p->aux);
    p->aux = NULL;
}

static const variant EMBD_VARIANTS[] = {
    {"embd_cpu_gemm", "fp32", false, embd_prep, embd_run, embd_release},
};
#else
/* Built against a cpu.h without embd_cpu_gemm (tests/engine/CMakeLists.txt
 * defines EMBD_HAVE_CPU_GEMM when it declares embd_cpu_gemm_new). */
static bool embd_load(const char *path, char *why, size_t n) {
    snprintf(why, n, "embd_cpu_gemm_new is not in src/backend/cpu/cpu.h yet (built without it)");
    return false;
}

static void embd_threads(int n) {}

static const variant EMBD_VARIANTS[] = {
    {"embd_cpu_gemm", "fp32", false, NULL, NULL, NULL},
};
#endif

/* ---------------------------------------------------------------------- */
/* Problems, checks, timing                                               */
/* ---------------------------------------------------------------------- */

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1); /* round to nearest even (no NaNs here) */
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static void *xalloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "gemm_libs: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static problem problem_new(int T, int K, int N) {
    problem p = {.T = T, .K = K, .N = N};
    size_t a = (size_t)T * K, w = (size_t)N * K, c = (size_t)T * N;
    p.A = xalloc(a * 4), p.W = xalloc(w * 4), p.C = xalloc(c * 4);
    p.Ab = xalloc(a * 2), p.Wb = xalloc(w * 2), p.A8 = xalloc(a), p.W8 = xalloc(w);
    p.C32 = xalloc(c * 4), p.Aq = xalloc(a * 4), p.Wq = xalloc(w * 4);
    for (size_t i = 0; i < a; i++) {
        p.A[i] = (float)(rng_next() % 2001) / 1000.0f - 1.0f;
        p.Ab[i] = to_bf16(p.A[i]);
        p.A8[i] = (uint8_t)(rng_next() % 64);
        p.Aq[i] = p.A8[i];
    }
    float s = 1.0f / sqrtf((float)K);
    for (size_t i = 0; i < w; i++) {
        p.W[i] = ((float)(rng_next() % 2001) / 1000.0f - 1.0f) * s;
        p.Wb[i] = to_bf16(p.W[i]);
        p.W8[i] = (uint8_t)(rng_next() % 64);
        p.Wq[i] = p.W8[i];
    }
    return p;
}

static void problem_free(problem *p) {
    void *b[] = {p->A, p->W, p->C, p->Ab, p->Wb, p->A8, p->W8, p->C32, p->Aq, p->Wq};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++)
        free(b[i]);
}

/* max |C - ref| / max |ref| over a few rows (the first, a middle one, the
 * last), the reference in double from the inputs the variant saw (fp32: A
 * and W; bf16: A and W rounded to bf16, so that only the accumulation
 * differs; int8: the integers, exact). */
static double check(const problem *p, const char *dtype) {
    int rows[3] = {0, p->T / 2, p->T - 1};
    double worst = 0, top = 0;
    for (int ri = 0; ri < 3; ri++) {
        int t = rows[ri];
        for (int j = 0; j < p->N; j++) {
            double ref = 0, got;
            for (int k = 0; k < p->K; k++) {
                size_t ia = (size_t)t * p->K + k, iw = (size_t)j * p->K + k;
                if (!strcmp(dtype, "bf16"))
                    ref += (double)from_bf16(p->Ab[ia]) * from_bf16(p->Wb[iw]);
                else if (!strcmp(dtype, "int8"))
                    ref += (double)p->Aq[ia] * p->Wq[iw];
                else
                    ref += (double)p->A[ia] * p->W[iw];
            }
            if (!strcmp(dtype, "int8"))
                got = p->C32[(size_t)t * p->N + j];
            else
                got = p->C[(size_t)t * p->N + j];
            if (!(fabs(got - ref) <= worst)) worst = isnan(got) ? INFINITY : fabs(got - ref);
            if (fabs(ref) > top) top = fabs(ref);
        }
    }
    return top > 0 ? worst / top : worst;
}

enum mode { MODE_1T, MODE_LIB, MODE_SPLIT };
static const char *MODE_NAME[] = {"1t", "lib", "split"};

static void call(const variant *v, problem *p, enum mode m, int nt) {
    if (m == MODE_SPLIT) {
#pragma omp parallel num_threads(nt)
        {
            int i = omp_get_thread_num(), n = omp_get_num_threads();
            int r0 = (int)((long)p->T * i / n), r1 = (int)((long)p->T * (i + 1) / n);
            if (r1 > r0) v->run(p, r0, r1 - r0);
        }
    } else {
        v->run(p, 0, p->T);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int threads, reps;
    double ms;
} opts;

static void measure(const library *lib, const variant *v, const shape *s, problem *p, enum mode m,
                    const opts *o) {
    int nt = m == MODE_1T ? 1 : o->threads;
    char why[256] = "";
    if (m == MODE_SPLIT && (!v->split_ok || lib->no_split)) return; /* said once in main */
    if (lib->max_lib_threads && m != MODE_SPLIT && lib->max_lib_threads != nt) return;
    if (m == MODE_SPLIT && p->T % nt) {
        say("skip", "%s %s split %s %s T=%d: T is not a multiple of the threads", v->name, v->dtype,
            s->model, s->op, p->T);
        return;
    }
    lib->set_threads(m == MODE_LIB ? nt : 1);
    int rows = m == MODE_SPLIT ? p->T / nt : p->T;
    if (!v->prepare(p, rows, m == MODE_LIB ? nt : 1, why, sizeof why)) {
        say("skip", "%s %s %s %s %s T=%d: %s", v->name, v->dtype, MODE_NAME[m], s->model, s->op,
            p->T, why);
        v->release(p);
        return;
    }
    memset(p->C, 0xff, (size_t)p->T * p->N * 4); /* NaN: a row not written fails the check */
    memset(p->C32, 0x7f, (size_t)p->T * p->N * 4);
    double load[1] = {0};
    getloadavg(load, 1);
    double t0 = now_s();
    call(v, p, m, nt);
    double first = now_s() - t0;
    double err = check(p, v->dtype);
    t0 = now_s();
    call(v, p, m, nt);
    double one = now_s() - t0;
    if (first < one) one = first;
    int iters = (int)(o->ms * 1e-3 / (one > 1e-7 ? one : 1e-7)) + 1;
    double *rate = malloc(sizeof(double) * (size_t)o->reps);
    double flop = 2.0 * p->T * p->N * p->K;
    for (int r = 0; r < o->reps; r++) {
        t0 = now_s();
        for (int i = 0; i < iters; i++)
            call(v, p, m, nt);
        rate[r] = flop * iters / (now_s() - t0) * 1e-9;
    }
    qsort(rate, (size_t)o->reps, sizeof *rate, cmp_double);
    double med =
        o->reps % 2 ? rate[o->reps / 2] : 0.5 * (rate[o->reps / 2 - 1] + rate[o->reps / 2]);
    printf("{\"lib\": ");
    put_json_str(g_lib);
    printf(", \"tag\": ");
    put_json_str(g_tag);
    printf(", \"variant\": \"%s\", \"dtype\": \"%s\", \"mode\": \"%s\", \"threads\": %d, "
           "\"model\": \"%s\", \"op\": \"%s\", \"T\": %d, \"K\": %d, \"N\": %d, "
           "\"gflops\": %.2f, \"min\": %.2f, \"max\": %.2f, \"reps\": %d, \"iters\": %d, "
           "\"err\": %.3g, \"load\": %.2f}\n",
           v->name, v->dtype, MODE_NAME[m], nt, s->model, s->op, p->T, p->K, p->N, med, rate[0],
           rate[o->reps - 1], o->reps, iters, isinf(err) ? 1e300 : err, load[0]);
    fflush(stdout);
    free(rate);
    v->release(p);
}

static bool listed(const char *list, const char *name) {
    if (!list) return true;
    size_t n = strlen(name);
    for (const char *q = list; (q = strstr(q, name)); q += n)
        if ((q == list || q[-1] == ',') && (q[n] == ',' || q[n] == 0)) return true;
    return false;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_gemm_libs --lib openblas|mkl|dnnl|embd [--path LIB.so] "
                    "[--tag TEXT]\n       [--threads 2] [--modes 1t,lib,split] "
                    "[--tokens 2048,32] [--models minilm,bge-base]\n       [--variants a,b] "
                    "[--reps 7] [--ms 40]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *lib_name = NULL, *path = NULL, *modes = "1t,lib,split", *tokens = "2048,32";
    const char *models = NULL, *variants = NULL;
    opts o = {.threads = 2, .reps = 7, .ms = 40};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        i++;
        if (!strcmp(a, "--lib"))
            lib_name = v;
        else if (!strcmp(a, "--path"))
            path = v;
        else if (!strcmp(a, "--tag"))
            g_tag = v;
        else if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--modes"))
            modes = v;
        else if (!strcmp(a, "--tokens"))
            tokens = v;
        else if (!strcmp(a, "--models"))
            models = v;
        else if (!strcmp(a, "--variants"))
            variants = v;
        else if (!strcmp(a, "--reps"))
            o.reps = atoi(v);
        else if (!strcmp(a, "--ms"))
            o.ms = atof(v);
        else
            return usage();
    }
    if (!lib_name || o.threads < 1 || o.reps < 1 || o.ms <= 0) return usage();
    static const library LIBS[] = {
        {"openblas", ob_load, ob_threads, OB_VARIANTS, 1, 0, false},
        {"mkl", mkl_load, mkl_threads, MKL_VARIANTS, 6, 0, false},
        {"dnnl", dnnl_load, dnnl_threads, DNNL_VARIANTS, 4, 0, false},
        {"embd", embd_load, embd_threads, EMBD_VARIANTS, 1, 0, true},
    };
    library lib = {0};
    for (size_t i = 0; i < sizeof LIBS / sizeof *LIBS; i++)
        if (!strcmp(LIBS[i].name, lib_name)) lib = LIBS[i];
    if (!lib.name) return usage();
    g_lib = lib.name;
    char why[512] = "";
    if (!lib.load(path, why, sizeof why)) {
        say("skip", "%s", why);
        return 0;
    }
    if (lib.load == dnnl_load && dnnl.runtime != DNNL_RUNTIME_OMP &&
        dnnl.runtime != DNNL_RUNTIME_SEQ) {
        lib.max_lib_threads = affinity_cpus();
        lib.no_split = true;
    }
    for (int vi = 0; vi < lib.n_variants; vi++) {
        const variant *v = &lib.variants[vi];
        if (listed(modes, "split") && o.threads > 1 && (!v->split_ok || lib.no_split))
            say("skip", "%s %s split: not called from several threads at once", v->name, v->dtype);
    }
    if (lib.max_lib_threads)
        say("skip", "%s rows only: the runtime takes its threads from the CPU affinity (%d)",
            lib.max_lib_threads == 1 ? "1t" : "lib", lib.max_lib_threads);
    char tok[64];
    snprintf(tok, sizeof tok, "%s", tokens);
    for (char *save = NULL, *t = strtok_r(tok, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int T = atoi(t);
        if (T < 1) return usage();
        for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
            const shape *s = &SHAPES[si];
            if (!listed(models, s->model)) continue;
            problem p = problem_new(T, s->K, s->N);
            for (int vi = 0; vi < lib.n_variants; vi++) {
                const variant *v = &lib.variants[vi];
                char full[64];
                snprintf(full, sizeof full, "%s_%s", v->name, v->dtype);
                if (!listed(variants, v->name) && !listed(variants, full)) continue;
                for (int m = MODE_1T; m <= MODE_SPLIT; m++)
                    if (listed(modes, MODE_NAME[m]) && !(m == MODE_SPLIT && o.threads < 2))
                        measure(&lib, v, s, &p, (enum mode)m, &o);
            }
            problem_free(&p);
        }
    }
    return 0;
}
