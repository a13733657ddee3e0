/* test_backend_golden.c — the CPU backends on the real all-MiniLM-L6-v2
 * against sentence-transformers' stored outputs (tests/fixtures/golden), fed
 * the very token ids sentence-transformers used, so that only the backend is
 * under test. Skips (77) without $EMBD_TEST_MODELS/all-MiniLM-L6-v2 or the
 * fixtures ($EMBD_SRC). */
#include "backend/backend.h"
#include "backend/cpu/isa.h"
#include "model/model.h"
#include "golden_ids.h"
#include "test.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAXSEQ = 1024, MAXTOK = 1 << 17 };

/* Reads a float32 little-endian .npy of shape (rows, cols); returns data or NULL. */
static float *read_npy(const char *path, int *rows, int *cols) {
    char *buf = NULL;
    size_t len = 0;
    if (embd_read_file(path, 1 << 28, &buf, &len) != EMBD_OK) return NULL;
    float *out = NULL;
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) goto done;
    /* version 1: 2-byte header length at 8; version 2/3: 4 bytes */
    size_t off, hl;
    if (buf[6] == 1) {
        hl = (size_t)(unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
        off = 10;
    } else {
        hl = (size_t)(unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8 |
             (size_t)(unsigned char)buf[10] << 16 | (size_t)(unsigned char)buf[11] << 24;
        off = 12;
    }
    if (off + hl > len) goto done;
    char *hdr = buf + off;
    if (!strstr(hdr, "'<f4'") || strstr(hdr, "'fortran_order': True")) goto done;
    char *sh = strstr(hdr, "'shape': (");
    if (!sh || sscanf(sh, "'shape': (%d, %d)", rows, cols) != 2) goto done;
    size_t bytes = (size_t)*rows * (size_t)*cols * sizeof(float);
    if (off + hl + bytes > len) goto done;
    out = malloc(bytes);
    if (out) memcpy(out, buf + off + hl, bytes);
done:
    embd_free(buf);
    return out;
}

/* Runs `ops` in `dtype` over sequences [0, n) of the golden set in packed
 * batches of at most `budget` tokens, compares each row with the golden row,
 * and returns the outputs (n, D) (NULL on failure; the caller frees).
 * Tolerance in fp32: sentence-transformers runs the same maths in PyTorch;
 * only the order of sums and exp/erf implementations differ, which moves the
 * unit-norm outputs by ~1e-6, so cosine >= 0.99999 and |diff| <= 1e-4. In
 * bf16 and int8 (the bar): cosine >= 0.999 and >= 0.99. */
static float *check_backend(const struct embd_backend_ops *ops, const struct embd_model *m,
                            enum embd_dtype dtype, const int32_t *ids, const int32_t *starts, int n,
                            const float *gold, int budget) {
    const int D = m->hp.H;
    const double min_cos = dtype == EMBD_DTYPE_BF16   ? 0.999
                           : dtype == EMBD_DTYPE_INT8 ? 0.99
                                                      : 0.99999;
    const double max_diff = dtype == EMBD_DTYPE_FP32 ? 1e-4 : 1.0;
    embd_backend_params p = {.n_threads = 2, .dtype = dtype, .max_batch_tokens = budget};
    embd_backend *be = NULL;
    enum embd_status st = ops->init(&be, m, &p);
    CHECK_MSG(st == EMBD_OK, "%s init: %s", ops->name, embd_last_error());
    if (st != EMBD_OK) return NULL;
    float *out = malloc((size_t)n * D * sizeof(float));
    int32_t *bstart = malloc((size_t)(n + 1) * sizeof(int32_t));
    for (int s = 0; s < n;) {
        int k = 0;
        bstart[0] = 0;
        while (s + k < n && (k == 0 || starts[s + k + 1] - starts[s] <= budget)) {
            bstart[k + 1] = starts[s + k + 1] - starts[s];
            k++;
        }
        embd_batch b = {
            .n_seq = k, .n_tok = bstart[k], .ids = ids + starts[s], .seq_start = bstart};
        st = ops->embed(be, out + (size_t)s * D, &b, true);
        CHECK_MSG(st == EMBD_OK, "%s embed: %s", ops->name, embd_last_error());
        if (st != EMBD_OK) break;
        s += k;
    }
    double worst = 1.0, maxdiff = 0.0, sum = 0.0;
    int bad = 0;
    for (int s = 0; s < n && st == EMBD_OK; s++) {
        double c = test_cosine(out + (size_t)s * D, gold + (size_t)s * D, D);
        sum += c;
        if (!(c >= min_cos)) {
            if (bad++ < 5) fprintf(stderr, "%s: seq %d cosine %.8f\n", ops->name, s, c);
        }
        if (!(c >= worst)) worst = c;
        for (int i = 0; i < D; i++) {
            double d = fabs((double)out[(size_t)s * D + i] - gold[(size_t)s * D + i]);
            if (!(d <= maxdiff)) maxdiff = d;
        }
    }
    CHECK_MSG(bad == 0, "%s %s: %d of %d sequences below cosine %g", ops->name,
              embd_dtype_str(dtype), bad, n, min_cos);
    CHECK_MSG(maxdiff <= max_diff, "%s: max abs diff %.3g", ops->name, maxdiff);
    printf("%-4s %-4s vs sentence-transformers: %d sequences, %d tokens, batches <= %d tokens, "
           "worst cosine %.9f, mean %.9f, max abs diff %.2g\n",
           ops->name, embd_dtype_str(dtype), n, starts[n], budget, worst, sum / n, maxdiff);
    free(bstart);
    ops->free(be);
    if (st != EMBD_OK) {
        free(out);
        return NULL;
    }
    return out;
}

/* The same rows from two runs with different batches are the same bits: a
 * text's vector does not depend on what it is batched with. */
static void check_same_bits(const char *what, const float *a, const float *b, int n, int D) {
    if (!a || !b) return;
    int diff = 0;
    for (int s = 0; s < n; s++)
        if (memcmp(a + (size_t)s * D, b + (size_t)s * D, (size_t)D * sizeof(float)) != 0) diff++;
    CHECK_MSG(diff == 0, "%s: %d of %d rows differ between batch sizes", what, diff, n);
}

/* bf16 and int8 refused, with a reason, where they cannot run: on a CPU
 * without the instructions, with EMBD_CPU_ISA=baseline, and bf16 (and int8
 * on a CPU without AVX-VNNI) with EMBD_CPU_ISA=avx2, where int8 runs on
 * AVX-VNNI's kernels when the CPU has them. */
static void check_refused(const struct embd_model *m) {
    const enum embd_dtype dts[2] = {EMBD_DTYPE_BF16, EMBD_DTYPE_INT8};
    for (int i = 0; i < 2; i++) {
        char why[160];
        const bool can = dts[i] == EMBD_DTYPE_BF16 ? embd_cpu_can_bf16(why, sizeof why)
                                                   : embd_cpu_can_int8(why, sizeof why);
        embd_backend_params p = {.n_threads = 1, .dtype = dts[i], .max_batch_tokens = 64};
        embd_backend *be = NULL;
        const embd_cpu_features *f = embd_cpu_features_get();
        const bool avx2 = embd_cpu_isa_best() >= EMBD_CPU_ISA_AVX2;
        setenv("EMBD_CPU_ISA", "baseline", 1);
        enum embd_status st = embd_backend_cpu_ops.init(&be, m, &p);
        CHECK_MSG(st == EMBD_ERR_UNSUPPORTED && !be, "%s with EMBD_CPU_ISA=baseline: status %d",
                  embd_dtype_str(dts[i]), (int)st);
        const char *e = embd_last_error();
        CHECK_MSG(strstr(e, embd_dtype_str(dts[i])) != NULL, "message without the dtype: %s", e);
        printf("refused as it should be: %s\n", e);
        if (avx2) {
            setenv("EMBD_CPU_ISA", "avx2", 1);
            st = embd_backend_cpu_ops.init(&be, m, &p);
            if (dts[i] == EMBD_DTYPE_INT8 && f->avx_vnni) {
                CHECK_MSG(st == EMBD_OK && be, "int8 with EMBD_CPU_ISA=avx2 and AVX-VNNI: %s",
                          embd_last_error());
                if (be) embd_backend_cpu_ops.free(be);
                be = NULL;
                printf("int8 runs on the avx2 kernel set with AVX-VNNI\n");
            } else {
                CHECK_MSG(st == EMBD_ERR_UNSUPPORTED && !be, "%s with EMBD_CPU_ISA=avx2: status %d",
                          embd_dtype_str(dts[i]), (int)st);
                printf("refused as it should be: %s\n", embd_last_error());
            }
        }
        unsetenv("EMBD_CPU_ISA");
        if (!can) {
            st = embd_backend_cpu_ops.init(&be, m, &p);
            CHECK_MSG(st == EMBD_ERR_UNSUPPORTED && !be, "%s on a CPU without it: status %d",
                      embd_dtype_str(dts[i]), (int)st);
            e = embd_last_error();
            CHECK_MSG(strstr(e, why) != NULL, "message without the reason (%s): %s", why, e);
            printf("refused on this CPU as it should be: %s\n", e);
        }
        /* fp16 is a GPU type */
        p.dtype = EMBD_DTYPE_FP16;
        st = embd_backend_cpu_ops.init(&be, m, &p);
        CHECK_MSG(st == EMBD_ERR_UNSUPPORTED && !be, "fp16 on the CPU: status %d", (int)st);
    }
}

/* argv[1]: fp32 (the default; the kernel set from EMBD_CPU_ISA), bf16 or
 * int8 (skipped where the CPU lacks the instructions), or refused (bf16 and
 * int8 refused where they cannot run). */
int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fp32";
    enum embd_dtype dtype = EMBD_DTYPE_FP32;
    if (!strcmp(mode, "bf16"))
        dtype = EMBD_DTYPE_BF16;
    else if (!strcmp(mode, "int8"))
        dtype = EMBD_DTYPE_INT8;
    else if (strcmp(mode, "fp32") && strcmp(mode, "refused")) {
        fprintf(stderr, "usage: test_backend_golden [fp32|bf16|int8|refused]\n");
        return 2;
    }
    const char *models = getenv("EMBD_TEST_MODELS"), *src = getenv("EMBD_SRC");
    if (!models || !src) TEST_SKIP("EMBD_TEST_MODELS or EMBD_SRC not set");
    /* with EMBD_CPU_ISA (CTest runs one per kernel set): skipped where the
     * CPU lacks the set */
    enum embd_cpu_isa isa;
    char why[160];
    if (!embd_cpu_isa_choose(&isa, why, sizeof why)) TEST_SKIP("%s", why);
    if (dtype == EMBD_DTYPE_BF16 && !embd_cpu_can_bf16(why, sizeof why)) TEST_SKIP("%s", why);
    if (dtype == EMBD_DTYPE_INT8 && !embd_cpu_can_int8(why, sizeof why)) TEST_SKIP("%s", why);
    int fam = -1; /* enum embd_lowp_kernels of bf16 / int8 */
    if (dtype != EMBD_DTYPE_FP32)
        embd_cpu_lowp_kernels(dtype == EMBD_DTYPE_INT8, isa, &fam, why, sizeof why);
    const char *amx_env = getenv("EMBD_CPU_AMX");
    if (amx_env && !strcmp(amx_env, "0") && dtype != EMBD_DTYPE_FP32) {
        /* the 512-bit kernels on a CPU with AMX: elsewhere the plain run ran them */
        const embd_cpu_features *f = embd_cpu_features_get();
        const bool amx = (dtype == EMBD_DTYPE_INT8 ? f->amx_int8 : f->amx_bf16) &&
                         isa == EMBD_CPU_ISA_AVX512 && embd_cpu_amx_ready(NULL, 0);
        if (!amx) TEST_SKIP("no AMX here: the plain %s test runs the same kernels", mode);
    }
    static const char *const fams[3] = {"AVX-VNNI 256-bit kernels", "512-bit kernels", "AMX tiles"};
    printf("cpu kernel set %s, %s%s%s, on %s\n", embd_cpu_isa_name(isa), mode,
           fam >= 0 ? " on the " : "", fam >= 0 ? fams[fam] : "", embd_cpu_features_get()->model);
    char dir[4096], ids_path[4096], npy_path[4096];
    snprintf(dir, sizeof dir, "%s/all-MiniLM-L6-v2", models);
    snprintf(ids_path, sizeof ids_path, "%s/tests/fixtures/golden/all-MiniLM-L6-v2/ids.jsonl", src);
    snprintf(npy_path, sizeof npy_path, "%s/tests/fixtures/golden/all-MiniLM-L6-v2/embeddings.npy",
             src);
    struct stat sb;
    if (stat(dir, &sb) != 0) TEST_SKIP("%s missing", dir);
    if (stat(ids_path, &sb) != 0 || stat(npy_path, &sb) != 0) TEST_SKIP("golden fixtures missing");

    embd_model *m = NULL;
    if (embd_model_load(dir, embd_model_default_params(), &m) != EMBD_OK) {
        fprintf(stderr, "load %s: %s\n", dir, embd_last_error());
        return 1;
    }
    int32_t *ids = malloc(MAXTOK * sizeof(int32_t)),
            *starts = malloc((MAXSEQ + 1) * sizeof(int32_t));
    int n = golden_read_ids(ids_path, ids, starts, MAXSEQ, MAXTOK), rows = 0, cols = 0;
    float *gold = read_npy(npy_path, &rows, &cols);
    CHECK_MSG(n > 0 && gold && rows == n && cols == m->hp.H, "fixtures: n=%d rows=%d cols=%d", n,
              rows, cols);
    if (n > 0 && gold && rows == n && cols == m->hp.H && !strcmp(mode, "refused")) {
        check_refused(m);
    } else if (n > 0 && gold && rows == n && cols == m->hp.H) {
        /* all of them through the fast backend, in one big batch and in
         * small ones: the same bits */
        const int few = n < 120 ? n : 120;
        float *big = check_backend(&embd_backend_cpu_ops, m, dtype, ids, starts, n, gold, 16384);
        float *small = check_backend(&embd_backend_cpu_ops, m, dtype, ids, starts, few, gold, 300);
        check_same_bits(mode, big, small, few, m->hp.H);
        free(big);
        free(small);
        /* the reference is slow (plain loops, fp32 only): the first 24 only */
        if (dtype == EMBD_DTYPE_FP32)
            free(check_backend(&embd_backend_ref_ops, m, dtype, ids, starts, n < 24 ? n : 24, gold,
                               16384));
    }
    free(gold);
    free(ids);
    free(starts);
    embd_model_free(m);
    return test_summary("test_backend_golden");
}
