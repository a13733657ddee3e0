/* loader.h — internals of the model loader, shared by the src/model sources and the
 * tests in tests/model/: the safetensors reader, the config.json /
 * sentence-transformers parsers and the half-precision conversions. */
#ifndef EMBD_MODEL_LOADER_H
#define EMBD_MODEL_LOADER_H

#include "model/model.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* safetensors                                                              */
/* ------------------------------------------------------------------------ */

#define EMBD_ST_MAX_DIMS 8
#define EMBD_ST_MAX_HEADER (100u << 20) /* the same limit as the reference reader */

enum embd_st_dtype {
    EMBD_ST_F32,
    EMBD_ST_F16,
    EMBD_ST_BF16,
    EMBD_ST_OTHER_KNOWN, /* a dtype of the format that embd does not read (I64, F64, ...) */
    EMBD_ST_UNKNOWN,     /* a dtype string this reader does not know; size not checked */
};

typedef struct {
    char *name;
    enum embd_st_dtype dtype;
    char dtype_name[16];
    int ndim;
    uint64_t shape[EMBD_ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data section, begin <= end <= data_len */
    const uint8_t *data; /* the data section of the file that holds it */
} embd_st_tensor;

/* One file of a sharded checkpoint: its mapping and data section. */
typedef struct embd_st_shard {
    void *map;
    size_t map_len;
    const uint8_t *data;
    size_t data_len;
} embd_st_shard;

typedef struct {
    const uint8_t *data; /* the data section (after the 8-byte length and the header) */
    size_t data_len;
    embd_st_tensor *tensors; /* sorted by name, names unique */
    size_t n_tensors;
    void *map; /* the read-only mapping when opened from a file, else NULL */
    size_t map_len;
    /* a sharded checkpoint (embd_st_open_index): data is NULL, each tensor
     * points into its shard's data; the shards in the index's file order */
    embd_st_shard *shards;
    size_t n_shards;
} embd_safetensors;

/* Parses a safetensors image held in memory (`len` bytes at `buf`, which must
 * outlive `st`). `name` is used in messages ("model.safetensors: ...").
 * Checks the header length, that the header is UTF-8 JSON holding an object,
 * every entry's dtype / shape / data_offsets, byte sizes against shapes
 * (without overflow), offsets against the data section and that no two
 * tensors overlap. Returns EMBD_OK, EMBD_ERR_MODEL_FORMAT or EMBD_ERR_NOMEM;
 * on error `st` is left empty. */
enum embd_status embd_st_parse(embd_safetensors *st, const void *buf, size_t len, const char *name);

/* Maps `path` read-only and parses it as embd_st_parse does. Errors:
 * EMBD_ERR_IO (missing, unreadable, not a regular file), EMBD_ERR_MODEL_FORMAT,
 * EMBD_ERR_NOMEM. */
enum embd_status embd_st_open(embd_safetensors *st, const char *path, const char *name);

/* Opens a sharded checkpoint: the index file `index_name` in `dir`
 * (model.safetensors.index.json: {"weight_map": {tensor: file}}) and every
 * file it names (plain names in `dir`, ending in .safetensors), each parsed
 * as embd_st_open does, into one table. Errors (EMBD_ERR_MODEL_FORMAT unless
 * said): a malformed index, a file name with a path in it, a tensor the index
 * puts in a file that does not hold it, a tensor in two files; EMBD_ERR_IO
 * (a missing file); EMBD_ERR_NOMEM. */
enum embd_status embd_st_open_index(embd_safetensors *st, const char *dir, const char *index_name);

/* Frees the tensor table and unmaps the file (if still owned). Safe on a
 * zeroed struct. */
void embd_st_free(embd_safetensors *st);

/* The tensor called `name`, or NULL. */
const embd_st_tensor *embd_st_find(const embd_safetensors *st, const char *name);

/* Half-precision to fp32, exact for every value (subnormals, inf, NaN). */
float embd_f16_to_f32(uint16_t h);
float embd_bf16_to_f32(uint16_t h);

/* ------------------------------------------------------------------------ */
/* configuration files                                                      */
/* ------------------------------------------------------------------------ */

/* Reads `item` as an integer in [lo, hi] (lo >= 0, hi <= 2^53). Returns false
 * if it is not a JSON number, not finite, not integral or out of range. */
bool embd_json_uint(const cJSON *item, uint64_t lo, uint64_t hi, uint64_t *out);

/* Parses the text of a Hugging Face config.json into hp (V, H, L, NH, I, P,
 * TV, ln_eps; the other fields are left alone). `name` is used in messages.
 * Errors: EMBD_ERR_MODEL_FORMAT (not UTF-8, not JSON, a key missing, not an
 * integer or out of range, NH not dividing H), EMBD_ERR_UNSUPPORTED (a model
 * type, activation or position embedding embd does not run). */
enum embd_status embd_config_parse(embd_hparams *hp, const char *json, size_t len,
                                   const char *name);

/* Parses a sentence-transformers Pooling config (1_Pooling/config.json) into
 * hp->pooling. The dimension, when given, must equal hp->H. Errors:
 * EMBD_ERR_MODEL_FORMAT, EMBD_ERR_UNSUPPORTED (max, mean_sqrt_len,
 * weightedmean, lasttoken, or several modes at once). */
enum embd_status embd_pooling_parse(embd_hparams *hp, const char *json, size_t len,
                                    const char *name);

/* What modules.json says. `*_path` are new strings (embd_free them), NULL
 * when the module is absent; the Transformer path may be "". */
typedef struct {
    bool has_pooling;
    bool normalize;
    char *transformer_path;
    char *pooling_path;
} embd_st_modules;

/* Parses a sentence-transformers modules.json. Supported module types:
 * Transformer (first, once), Pooling (once), Normalize. Errors:
 * EMBD_ERR_MODEL_FORMAT, EMBD_ERR_UNSUPPORTED (any other module type, named),
 * EMBD_ERR_NOMEM. */
enum embd_status embd_modules_parse(embd_st_modules *mods, const char *json, size_t len,
                                    const char *name);
void embd_modules_free(embd_st_modules *mods);

/* Reads max_seq_length from sentence_bert_config.json text into *out (0 when
 * absent or null) and, when lower is not NULL, do_lower_case into *lower
 * (false when absent). Errors: EMBD_ERR_MODEL_FORMAT. */
enum embd_status embd_sbert_config_parse(int *out, bool *lower, const char *json, size_t len,
                                         const char *name);

/* Reads model_max_length from tokenizer_config.json text into *out: 0 when
 * absent, not an integer, or outside [2, max_positions] (tokenizers often
 * store a huge sentinel). Errors: EMBD_ERR_MODEL_FORMAT (not UTF-8 JSON). */
enum embd_status embd_tokenizer_config_parse(int *out, int max_positions, const char *json,
                                             size_t len, const char *name);

/* Copies at most cap-1 bytes of a string taken from a file into buf for an
 * error message: control characters become '?', and a cut never splits a
 * UTF-8 sequence. Returns buf. */
const char *embd_printable(char *buf, size_t cap, const char *s);

/* Parses UTF-8 JSON text of `len` bytes; the caller cJSON_Delete()s *out.
 * Errors: EMBD_ERR_MODEL_FORMAT naming `name`, EMBD_ERR_NOMEM. */
enum embd_status embd_json_parse(cJSON **out, const char *json, size_t len, const char *name);

#endif
