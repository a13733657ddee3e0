/* fuzz_safetensors.c — embd_st_parse on an arbitrary safetensors image.
 * Every tensor of an image that parses must lie inside the data section
 * (ASan sees a read of its first and last byte), have a byte size that
 * matches its shape and dtype, not overlap another, and be found by name. */
#include "fuzz.h"
#include "model/loader.h"
#include "util/util.h"

#include <string.h>

static size_t dtype_size(enum embd_st_dtype d) {
    return d == EMBD_ST_F32 ? 4 : d == EMBD_ST_F16 || d == EMBD_ST_BF16 ? 2 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    embd_safetensors st;
    enum embd_status s = embd_st_parse(&st, data, size, "model.safetensors");
    if (s != EMBD_OK) {
        FUZZ_CHECK(s == EMBD_ERR_MODEL_FORMAT || s == EMBD_ERR_NOMEM);
        FUZZ_CHECK(st.tensors == NULL && st.n_tensors == 0);
        FUZZ_CHECK(embd_last_error()[0] != '\0');
        embd_st_free(&st);
        return 0;
    }
    FUZZ_CHECK(st.data >= data && st.data + st.data_len == data + size);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < st.n_tensors; i++) {
        const embd_st_tensor *t = &st.tensors[i];
        FUZZ_CHECK(t->name != NULL);
        FUZZ_CHECK(t->begin <= t->end && t->end <= st.data_len);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= EMBD_ST_MAX_DIMS);
        if (i) FUZZ_CHECK(strcmp(st.tensors[i - 1].name, t->name) < 0);
        FUZZ_CHECK(embd_st_find(&st, t->name) == t);
        size_t es = dtype_size(t->dtype);
        if (es) {
            uint64_t count = 1;
            for (int d = 0; d < t->ndim; d++)
                count *= t->shape[d]; /* bounded: the parser checked the byte size */
            FUZZ_CHECK(count * es == t->end - t->begin);
            if (t->end > t->begin) {
                sink ^= st.data[t->begin];
                sink ^= st.data[t->end - 1];
            }
            if (t->dtype == EMBD_ST_F16 && t->end - t->begin >= 2) {
                uint16_t h;
                memcpy(&h, st.data + t->begin, 2);
                float f = embd_f16_to_f32(h);
                (void)f;
            }
        }
        for (size_t j = 0; j < i; j++) {
            const embd_st_tensor *u = &st.tensors[j];
            if (t->begin == t->end || u->begin == u->end) continue;
            FUZZ_CHECK(t->end <= u->begin || u->end <= t->begin);
        }
    }
    (void)sink;
    embd_st_free(&st);
    return 0;
}
