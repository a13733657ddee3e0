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

static double cosine(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

/* Runs `ops` over sequences [0, n) of the golden set in packed batches of at
 * most `budget` tokens and compares each row with the golden row.
 * Tolerance: sentence-transformers runs the same fp32 maths in PyTorch; only
 * the order of sums and exp/erf implementations differ, which moves the
 * unit-norm outputs by ~1e-6, so cosine >= 0.99999 and |diff| <= 1e-4. */
static void check_backend(const struct embd_backend_ops *ops, const struct embd_model *m,
                          const int32_t *ids, const int32_t *starts, int n, const float *gold,
                          int budget) {
    const int D = m->hp.H;
    embd_backend_params p = {.n_threads = 2, .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = budget};
    embd_backend *be = NULL;
    enum embd_status st = ops->init(&be, m, &p);
    CHECK_MSG(st == EMBD_OK, "%s init: %s", ops->name, embd_last_error());
    if (st != EMBD_OK) return;
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
    double worst = 1.0, maxdiff = 0.0;
    int bad = 0;
    for (int s = 0; s < n && st == EMBD_OK; s++) {
        double c = cosine(out + (size_t)s * D, gold + (size_t)s * D, D);
        if (!(c >= 0.99999)) {
            if (bad++ < 5) fprintf(stderr, "%s: seq %d cosine %.8f\n", ops->name, s, c);
        }
        if (!(c >= worst)) worst = c;
        for (int i = 0; i < D; i++) {
            double d = fabs((double)out[(size_t)s * D + i] - gold[(size_t)s * D + i]);
            if (!(d <= maxdiff)) maxdiff = d;
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d sequences below cosine 0.99999", ops->name, bad, n);
    CHECK_MSG(maxdiff <= 1e-4, "%s: max abs diff %.3g", ops->name, maxdiff);
    printf("%-4s vs sentence-transformers: %d sequences, %d tokens, worst cosine %.9f, max abs "
           "diff %.2g\n",
           ops->name, n, starts[n], worst, maxdiff);
    free(out);
    free(bstart);
    ops->free(be);
}

int main(void) {
    const char *models = getenv("EMBD_TEST_MODELS"), *src = getenv("EMBD_SRC");
    if (!models || !src) TEST_SKIP("EMBD_TEST_MODELS or EMBD_SRC not set");
    /* with EMBD_CPU_ISA (CTest runs one per kernel set): skipped where the
     * CPU lacks the set */
    enum embd_cpu_isa isa;
    char why[160];
    if (!embd_cpu_isa_choose(&isa, why, sizeof why)) TEST_SKIP("%s", why);
    printf("cpu kernel set %s (%s) on %s\n", embd_cpu_isa_name(isa), why,
           embd_cpu_features_get()->model);
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
    if (n > 0 && gold && rows == n && cols == m->hp.H) {
        /* all of them through the fast backend, in one big batch and in small ones */
        check_backend(&embd_backend_cpu_ops, m, ids, starts, n, gold, 16384);
        check_backend(&embd_backend_cpu_ops, m, ids, starts, n < 120 ? n : 120, gold, 300);
        /* the reference is slow (plain loops): the first 24 only */
        check_backend(&embd_backend_ref_ops, m, ids, starts, n < 24 ? n : 24, gold, 16384);
    }
    free(gold);
    free(ids);
    free(starts);
    embd_model_free(m);
    return test_summary("test_backend_golden");
}
