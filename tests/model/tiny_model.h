/* tiny_model.h — writes a tiny, valid BERT model directory (config.json,
 * model.safetensors, tokenizer.json, sentence-transformers files) for the
 * loader tests, and builds safetensors images that tests then corrupt.
 *
 * Default shapes: V = 32, H = 8, L = 2, NH = 2, I = 16, P = 16, TV = 2.
 * Every weight value is (1 + m/128) * 2^e with e in [-6, 1] (or 0), so it is
 * exact in fp32, fp16 and bf16 alike. */
#ifndef EMBD_TINY_MODEL_H
#define EMBD_TINY_MODEL_H

#include "embd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int V, H, L, NH, I, P, TV;
} tiny_cfg;

tiny_cfg tiny_default_cfg(void);

/* One header entry, kept as JSON text so that tests can corrupt any field. */
typedef struct {
    char name[128];
    char dtype[32];
    char shape[128];   /* e.g. "[32,8]" */
    char offsets[128]; /* e.g. "[0,1024]" */
} tt_entry;

typedef struct {
    tt_entry *e;
    size_t n;
    uint8_t *data; /* the data section */
    size_t data_len;
    float **values; /* [n]: the fp32 values of entry i (NULL for position_ids) */
    size_t *counts; /* [n]: element counts */
} tt_file;

/* Builds every tensor of the model for cfg in `dtype` ("F32", "F16" or
 * "BF16"), names prefixed by `prefix` ("" or "bert."), plus an I64
 * embeddings.position_ids when `position_ids`. Values depend on `seed`. */
tt_file tt_build(const tiny_cfg *cfg, const char *dtype, const char *prefix, bool position_ids,
                 uint32_t seed);
void tt_free(tt_file *f);

/* Appends an entry with raw JSON fields and `nbytes` of data at the end of
 * the data section (offsets filled in). */
void tt_add_raw(tt_file *f, const char *name, const char *dtype, const char *shape,
                const void *bytes, size_t nbytes);

/* The index of the entry named `name`, or -1. */
int tt_find(const tt_file *f, const char *name);

/* The header JSON text (malloc'd). */
char *tt_header(const tt_file *f);

/* Serialises to a malloc'd image: 8-byte length, header (padded with
 * spaces so that the data section starts at a multiple of 8, plus `misalign`
 * extra spaces), data. */
uint8_t *tt_image(const tt_file *f, size_t misalign, size_t *len);

/* Writes `len` bytes to path. Returns 0 on success. */
int write_bytes(const char *path, const void *buf, size_t len);
int write_text(const char *path, const char *text);

/* Writes a full model directory in `dir` (created if needed): config.json,
 * tokenizer.json, modules.json (mean pooling + Normalize), 1_Pooling,
 * and model.safetensors from `f`. */
int tiny_write_dir(const char *dir, const tiny_cfg *cfg, const tt_file *f);

/* Writes the default tiny model (F32 weights from `seed`) in `dir` and loads
 * it; NULL, with a line on stderr, on failure. */
embd_model *tiny_model_load(const char *dir, uint32_t seed);

/* config.json text for cfg with `extra` JSON members (may be "") appended. */
char *tiny_config_json(const tiny_cfg *cfg, const char *extra);

/* The tiny tokenizer.json (32 ids: [PAD] [UNK] [CLS] [SEP] [MASK] a..z ##s). */
extern const char tiny_tokenizer_json[];

/* A fresh temporary directory (malloc'd path) under $TMPDIR, /dev/shm or
 * /tmp; rm_rf removes a tree. */
char *make_temp_dir(void);
void rm_rf(const char *path);
char *path_cat(const char *dir, const char *name);

#endif
