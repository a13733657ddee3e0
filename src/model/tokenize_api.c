/* tokenize_api.c — the public tokenizer calls a server's /tokenize and
 * /decode need: offsets, token strings and decoding (thin wrappers over
 * src/tokenizer with the model's truncation length). */
#include "model/model.h"
#include "util/util.h"

#include <limits.h>

enum embd_status embd_tokenize_offsets(const embd_model *model, const char *text, size_t len,
                                       bool add_special_tokens, bool truncate, int32_t *ids,
                                       size_t *starts, size_t *stops, uint8_t *special, size_t cap,
                                       size_t *n_ids) {
    if (n_ids) *n_ids = 0;
    if (!model || !n_ids || (!text && len) || (!ids && cap))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_tokenize_offsets: NULL argument");
    return embd_tokenizer_encode_offsets(
        model->tok, text ? text : "", len, truncate ? model->hp.max_tokens : INT_MAX,
        add_special_tokens, ids, starts, stops, special, cap, n_ids, NULL);
}

const char *embd_model_token(const embd_model *model, int32_t id) {
    return model ? embd_tokenizer_id_to_token(model->tok, id) : NULL;
}

bool embd_model_token_shows_text(const embd_model *model, int32_t id) {
    return model && embd_tokenizer_token_shows_text(model->tok, id);
}

enum embd_status embd_detokenize(const embd_model *model, const int32_t *ids, size_t n,
                                 bool skip_special_tokens, char *buf, size_t cap, size_t *len) {
    if (len) *len = 0;
    if (!model || !len || (!ids && n) || (!buf && cap))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_detokenize: NULL argument");
    return embd_tokenizer_decode(model->tok, ids, n, skip_special_tokens, buf, cap, len);
}
