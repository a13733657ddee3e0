/* golden_ids.h — reads tests/fixtures/golden/<model>/ids.jsonl (one
 * {"ids":[...]} per line, the token ids sentence-transformers fed the model)
 * into a packed batch, for the backend tests that run those ids directly. */
#ifndef EMBD_TEST_GOLDEN_IDS_H
#define EMBD_TEST_GOLDEN_IDS_H

#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fills ids (at most maxtok) back to back and starts (at most maxseq + 1
 * offsets); returns the number of sequences read, or -1 if the file cannot be read. */
static inline int golden_read_ids(const char *path, int32_t *ids, int32_t *starts, int maxseq,
                                  int maxtok) {
    char *buf = NULL;
    size_t len = 0;
    if (embd_read_file(path, 1 << 26, &buf, &len) != EMBD_OK) return -1;
    int n = 0, t = 0;
    starts[0] = 0;
    for (char *line = buf; *line && n < maxseq;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *r = strchr(line, '[');
        while (r && *r && *r != ']' && t < maxtok) {
            r++;
            char *end;
            long v = strtol(r, &end, 10);
            if (end == r) break;
            ids[t++] = (int32_t)v;
            r = end;
        }
        if (r && t > starts[n]) starts[++n] = t;
        if (!nl) break;
        line = nl + 1;
    }
    embd_free(buf);
    return n;
}

#endif
