/* test_tok_threads — embd_tokenizer_encode on one shared tokenizer from
 * several threads at once gives the same ids as one thread (run it under
 * ASan/TSan). Uses $EMBD_TEST_MODELS/all-MiniLM-L6-v2/tokenizer.json when
 * present, else a small inline vocabulary. */
#include "tokenizer/tokenizer.h"
#include "util/util.h"
#include "../test.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define N_TEXTS 64
#define N_THREADS 4
#define MAX_TOK 64

static const char *small_json =
    "{\"added_tokens\":[{\"id\":3,\"content\":\"[SEP]\",\"special\":true,\"normalized\":false}],"
    "\"normalizer\":{\"type\":\"BertNormalizer\",\"lowercase\":true},"
    "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
    "\"post_processor\":{\"type\":\"BertProcessing\",\"sep\":[\"[SEP]\",3],\"cls\":[\"[CLS]\",2]},"
    "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,"
    "\"[CLS]\":2,\"[SEP]\":3,\"hello\":4,\"world\":5,\"un\":6,\"##aff\":7,\"##able\":8,\",\":9}}}";

static const embd_tokenizer *g_tok;
static char g_texts[N_TEXTS][400];
static int32_t g_want[N_TEXTS][MAX_TOK];
static size_t g_want_n[N_TEXTS];
static int g_bad;

static void *worker(void *arg) {
    int32_t ids[MAX_TOK];
    for (int r = 0; r < 200; r++) {
        for (int i = 0; i < N_TEXTS; i++) {
            int k = (i + r + (int)(size_t)arg) % N_TEXTS;
            size_t n;
            enum embd_status st = embd_tokenizer_encode(g_tok, g_texts[k], strlen(g_texts[k]),
                                                        MAX_TOK, ids, MAX_TOK, &n, NULL);
            if (st != EMBD_OK || n != g_want_n[k] || memcmp(ids, g_want[k], n * sizeof(*ids)))
                __atomic_add_fetch(&g_bad, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

int main(void) {
    const char *models = getenv("EMBD_TEST_MODELS");
    char *json = NULL, *path = NULL;
    size_t len = 0;
    if (models) path = embd_path_join(models, "all-MiniLM-L6-v2/tokenizer.json");
    if (!path || embd_read_file(path, (size_t)1 << 28, &json, &len) != EMBD_OK) {
        json = embd_strdup(small_json);
        len = strlen(json);
    }
    embd_free(path);
    embd_tokenizer *tok = NULL;
    CHECK_EQ_INT(embd_tokenizer_load(&tok, json, len), EMBD_OK);
    embd_free(json);
    if (!tok) return test_summary("test_tok_threads");
    g_tok = tok;
    const char *parts[] = {"Hello",         ", ",    "unaffable ", "W\xc3\x96RLD ",
                           "\xe4\xb8\xad ", "[SEP]", "\xff",       "caf\xc3\xa9 ",
                           "e\xcc\x81",     "  ",    "xyzzy "};
    unsigned seed = 1;
    for (int i = 0; i < N_TEXTS; i++) {
        g_texts[i][0] = 0;
        int words = 1 + i * 3;
        for (int w = 0; w < words && strlen(g_texts[i]) < 380; w++) {
            seed = seed * 1103515245u + 12345u;
            strcat(g_texts[i], parts[(seed >> 16) % (sizeof(parts) / sizeof(parts[0]))]);
        }
        CHECK_EQ_INT(embd_tokenizer_encode(tok, g_texts[i], strlen(g_texts[i]), MAX_TOK, g_want[i],
                                           MAX_TOK, &g_want_n[i], NULL),
                     EMBD_OK);
    }
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        pthread_create(&th[t], NULL, worker, (void *)(size_t)t);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    CHECK_EQ_INT(g_bad, 0);
    embd_tokenizer_free(tok);
    return test_summary("test_tok_threads");
}
