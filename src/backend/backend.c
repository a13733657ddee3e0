/* backend.c — what every backend shares: checking a packed batch. */
#include "backend/backend.h"

#include "model/model.h"
#include "util/util.h"

#include <stddef.h>

/* Checks that a packed batch fits the model: n >= 1, seq_start[0] == 0,
 * seq_start[n] == T, every length in [1, P] (which also rejects a
 * non-monotone seq_start), every id in [0, V). The message names the first
 * bad sequence or token index. */
enum embd_status embd_batch_check(const embd_batch *batch, const struct embd_model *model) {
    if (!batch || !model) return embd_error(EMBD_ERR_INVALID_ARG, "batch: NULL batch or model");
    if (batch->n_seq < 1)
        return embd_error(EMBD_ERR_INVALID_ARG, "batch: %d sequences (need >= 1)", batch->n_seq);
    if (!batch->ids || !batch->seq_start)
        return embd_error(EMBD_ERR_INVALID_ARG, "batch: NULL ids or seq_start");
    const int n = batch->n_seq, T = batch->n_tok;
    const int P = model->hp.P, V = model->hp.V;
    if (batch->seq_start[0] != 0)
        return embd_error(EMBD_ERR_INVALID_ARG, "batch: seq_start[0] = %d (must be 0)",
                          batch->seq_start[0]);
    if (batch->seq_start[n] != T)
        return embd_error(EMBD_ERR_INVALID_ARG, "batch: seq_start[%d] = %d but n_tok = %d", n,
                          batch->seq_start[n], T);
    for (int s = 0; s < n; s++) {
        /* in int64 so that a wild seq_start cannot overflow the subtraction */
        int64_t len = (int64_t)batch->seq_start[s + 1] - batch->seq_start[s];
        if (len < 1)
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "batch: sequence %d has length %lld (seq_start must increase)", s,
                              (long long)len);
        if (len > P)
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "batch: sequence %d has %lld tokens, more than the model's %d "
                              "positions",
                              s, (long long)len, P);
    }
    for (int t = 0; t < T; t++) {
        int32_t id = batch->ids[t];
        if (id < 0 || id >= V)
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "batch: token %d has id %d, outside the vocabulary [0, %d)", t,
                              (int)id, V);
        if (batch->type_ids && (batch->type_ids[t] < 0 || batch->type_ids[t] >= model->hp.TV))
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "batch: token %d has type id %d, outside [0, %d)", t,
                              (int)batch->type_ids[t], model->hp.TV);
    }
    return EMBD_OK;
}
