/* _embd.c — embd._embd, the CPython extension under the Python package: a
 * thin layer over include/embd.h. It converts Python objects to what the
 * library takes (texts as UTF-8 with their byte lengths), releases the GIL
 * around every engine call and writes vectors straight into a float32
 * buffer the caller owns (a NumPy array): no Python object per number.
 *
 * Engine(path, ...) holds a model, a context and a scheduler: every call
 * from any Python thread goes through the scheduler, so that the texts of
 * concurrent threads are batched together. Errors from the library raise
 * the exception class that embd/_errors.py registers for the status
 * (set_error_classes), with the status and the library's message. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "embd.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(size_t) == 8, "token counts are written as uint64");

/* status -> exception class, from embd/_errors.py; NULL until registered. */
static PyObject *error_classes;

/* Raises the class registered for `status` with (status, message). */
static PyObject *raise_status(enum embd_status status, const char *msg) {
    PyObject *cls = NULL;
    if (error_classes) {
        PyObject *key = PyLong_FromLong((long)status);
        if (!key) return NULL;
        cls = PyDict_GetItemWithError(error_classes, key);
        Py_DECREF(key);
        if (!cls && PyErr_Occurred()) return NULL;
    }
    if (!cls) cls = PyExc_RuntimeError;
    PyObject *args =
        Py_BuildValue("(is)", (int)status, msg && *msg ? msg : embd_status_str(status));
    if (!args) return NULL;
    PyErr_SetObject(cls, args);
    Py_DECREF(args);
    return NULL;
}

/* The library's last error on this thread. Call right after the failing call,
 * before the GIL is taken back by another embd call on this thread. */
static PyObject *raise_last(enum embd_status status) {
    return raise_status(status, embd_last_error());
}

/* ------------------------------------------------------------------------ */
/* Texts                                                                    */
/* ------------------------------------------------------------------------ */

/* n texts as the library takes them; `refs` keeps what ptrs point into
 * alive while the GIL is released (see utf8_of). */
struct texts {
    Py_ssize_t n;
    PyObject **refs;
    const char **ptrs;
    size_t *lens;
};

static void texts_free(struct texts *t) {
    if (t->refs)
        for (Py_ssize_t i = 0; i < t->n; i++)
            Py_XDECREF(t->refs[i]);
    PyMem_Free(t->refs);
    PyMem_Free(t->ptrs);
    PyMem_Free(t->lens);
    memset(t, 0, sizeof *t);
}

/* A clear TypeError for an item that is not a str: input `index` (counted
 * from `base`, the caller's position of the first item). */
static int bad_item(PyObject *item, Py_ssize_t index) {
    if (item == Py_None) {
        PyErr_Format(PyExc_TypeError, "input %zd is None, not str", index);
    } else if (PyBytes_Check(item) || PyByteArray_Check(item)) {
        PyErr_Format(PyExc_TypeError,
                     "input %zd is %s, not str: decode it first (e.g. .decode('utf-8'))", index,
                     Py_TYPE(item)->tp_name);
    } else {
        PyErr_Format(PyExc_TypeError, "input %zd is %s, not str", index, Py_TYPE(item)->tp_name);
    }
    return -1;
}

/* The UTF-8 of str `s` in *p, *len, and in *keep a new reference to what
 * holds it (s itself for an ASCII str, whose characters are their UTF-8;
 * else a bytes copy, so that no UTF-8 copy stays cached in the caller's
 * str: PyUnicode_AsUTF8AndSize would keep one as long as the str lives, 2.5
 * times a CJK text's size); or -1 with a ValueError naming input `index`
 * (the query when index < 0: a lone surrogate cannot be UTF-8: refused,
 * never replaced or dropped). */
static int utf8_of(PyObject *s, Py_ssize_t index, const char **p, size_t *len, PyObject **keep) {
    Py_ssize_t n;
    const char *u;
    *keep = NULL;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) return -1;
#endif
    if (PyUnicode_IS_ASCII(s)) {
        u = PyUnicode_AsUTF8AndSize(s, &n); /* the str's own characters: no copy */
        if (u) {
            Py_INCREF(s);
            *keep = s;
        }
    } else if ((*keep = PyUnicode_AsUTF8String(s))) {
        u = PyBytes_AS_STRING(*keep);
        n = PyBytes_GET_SIZE(*keep);
    } else {
        u = NULL;
    }
    if (!u) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            Py_ssize_t at = -1;
            if (value) PyUnicodeEncodeError_GetStart(value, &at);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            char who[48];
            if (index < 0)
                snprintf(who, sizeof who, "the query");
            else
                snprintf(who, sizeof who, "input %zd", index);
            PyErr_Format(PyExc_ValueError,
                         "%s has a lone surrogate at character %zd: not valid Unicode, "
                         "cannot be embedded (fix the text, or decode its bytes with "
                         "errors='replace')",
                         who, at);
        }
        return -1;
    }
    *p = u;
    *len = (size_t)n;
    return 0;
}

/* Reads a list or tuple of str into t. */
static int texts_from(PyObject *seq, Py_ssize_t base, struct texts *t) {
    memset(t, 0, sizeof *t);
    if (!PyList_Check(seq) && !PyTuple_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "texts must be a list or tuple of str, not %s",
                     Py_TYPE(seq)->tp_name);
        return -1;
    }
    /* A list may change while we read it: take a tuple of its items. */
    PyObject *tup = PySequence_Tuple(seq);
    if (!tup) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(tup);
    t->refs = PyMem_Calloc(n ? (size_t)n : 1, sizeof *t->refs);
    t->ptrs = PyMem_Calloc(n ? (size_t)n : 1, sizeof *t->ptrs);
    t->lens = PyMem_Calloc(n ? (size_t)n : 1, sizeof *t->lens);
    if (!t->refs || !t->ptrs || !t->lens) {
        Py_DECREF(tup);
        texts_free(t);
        PyErr_NoMemory();
        return -1;
    }
    t->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tup, i);
        if (!PyUnicode_Check(item) ||
            utf8_of(item, base + i, &t->ptrs[i], &t->lens[i], &t->refs[i])) {
            if (!PyErr_Occurred()) bad_item(item, base + i);
            Py_DECREF(tup);
            texts_free(t);
            return -1;
        }
    }
    Py_DECREF(tup);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* A scheduler call that Ctrl-C can stop                                    */
/* ------------------------------------------------------------------------ */

/* One call queued with embd_sched_submit*: done (from the scheduler's
 * thread) stores its status and message and wakes the caller. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    enum embd_status status;
    char msg[1024];
    int cancel; /* the call's cancel flag (embd_sched_cancel) */
};

static void waiter_init(struct waiter *w) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &a);
    pthread_condattr_destroy(&a);
}

static void waiter_destroy(struct waiter *w) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static void waiter_done(void *user, enum embd_status status) {
    struct waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    if (status != EMBD_OK) snprintf(w->msg, sizeof w->msg, "%s", embd_last_error());
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits, with the GIL released, for a call submitted with w (its status, and
 * its message in w->msg). Every 50 ms it takes the GIL to run Python's
 * signal handlers: when one raises (KeyboardInterrupt on Ctrl-C), the call is
 * cancelled (its inputs not yet run are dropped: it stops at the scheduler's
 * next round), waited for, and -1 is returned with that exception set; else
 * 0. The buffers the call writes stay in use until it returns. */
static int waiter_wait(struct waiter *w) {
    int raised = 0;
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        pthread_mutex_lock(&w->mu);
        if (!w->done) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_nsec += 50 * 1000 * 1000;
            if (t.tv_nsec >= 1000000000L) {
                t.tv_sec++;
                t.tv_nsec -= 1000000000L;
            }
            while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &t) != ETIMEDOUT) {
            }
        }
        const int done = w->done;
        pthread_mutex_unlock(&w->mu);
        if (done) break;
        if (!raised) {
            PyEval_RestoreThread(ts);
            if (PyErr_CheckSignals() < 0) {
                raised = 1;
                embd_sched_cancel(&w->cancel);
            }
            ts = PyEval_SaveThread();
        }
    }
    PyEval_RestoreThread(ts);
    return raised ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Engine                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD embd_model *model;
    embd_ctx *ctx;                       /* the first of ctxs */
    embd_ctx *ctxs[EMBD_SCHED_MAX_CTX];  /* one per device (or CPU replica), behind sched */
    char labels[EMBD_SCHED_MAX_CTX][24]; /* their names in metrics(): "cuda:1", "cpu:0" */
    int n_ctx;
    embd_sched *sched;
    pid_t pid;  /* the process that made it: after a fork the child may not use it */
    int active; /* calls running with the GIL released (close waits for none) */
    PyObject *path;
} Engine;

/* -1 with an exception when the engine is closed or inherited through fork. */
static int usable(Engine *e) {
    if (!e->sched) {
        raise_status(EMBD_ERR_INVALID_ARG, "the model is closed");
        return -1;
    }
    if (e->pid != getpid()) {
        raise_status(EMBD_ERR_INVALID_ARG,
                     "this model was loaded in another process (before a fork); load it again "
                     "in this process, or start workers with multiprocessing's 'spawn'");
        return -1;
    }
    return 0;
}

static void engine_close_handles(Engine *e) {
    /* After a fork the child has none of the parent's threads: freeing would
     * wait for a worker that is not there. The child's copy is left alone. */
    if (e->pid != getpid()) {
        e->sched = NULL;
        e->ctx = NULL;
        memset(e->ctxs, 0, sizeof e->ctxs);
        e->n_ctx = 0;
        e->model = NULL;
        return;
    }
    if (e->sched) {
        embd_sched *s = e->sched;
        e->sched = NULL;
        PyThreadState *ts = PyEval_SaveThread();
        embd_sched_free(s);
        PyEval_RestoreThread(ts);
    }
    for (int i = 0; i < e->n_ctx; i++)
        embd_ctx_free(e->ctxs[i]);
    memset(e->ctxs, 0, sizeof e->ctxs);
    e->n_ctx = 0;
    embd_model_free(e->model);
    e->ctx = NULL;
    e->model = NULL;
}

static void Engine_dealloc(Engine *e) {
    engine_close_handles(e);
    Py_XDECREF(e->path);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

/* Engine(path, device=0, device_index=0, dtype=0, threads=0, max_batch_tokens=0,
 *        cache_bytes=0, cache_dir=None, normalize=True, max_seq_length=0,
 *        device_indices=None, replicas=1)
 * device_indices: several GPU ordinals, a context on each behind one
 * scheduler (device must be cuda); replicas: that many contexts of the
 * device (CPU: the threads split among them), behind one scheduler. */
static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"path",      "device",           "device_index",   "dtype",
                            "threads",   "max_batch_tokens", "cache_bytes",    "cache_dir",
                            "normalize", "max_seq_length",   "device_indices", "replicas",
                            NULL};
    const char *path, *cache_dir = NULL;
    int device = 0, device_index = 0, dtype = 0, threads = 0, mbt = 0, normalize = 1, msl = 0;
    int replicas = 1;
    unsigned long long cache_bytes = 0;
    PyObject *indices = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|iiiiiKzpiOi", names, &path, &device,
                                     &device_index, &dtype, &threads, &mbt, &cache_bytes,
                                     &cache_dir, &normalize, &msl, &indices, &replicas))
        return -1;
    int idx[EMBD_SCHED_MAX_CTX], n_ctx = 1;
    idx[0] = device_index;
    if (indices != Py_None) {
        PyObject *seq = PySequence_Fast(indices, "device_indices must be a sequence of ints");
        if (!seq) return -1;
        Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
        if (k < 1 || k > EMBD_SCHED_MAX_CTX) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "device_indices: 1 to %d devices, not %zd",
                         EMBD_SCHED_MAX_CTX, k);
            return -1;
        }
        for (Py_ssize_t i = 0; i < k; i++) {
            long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
            if ((v == -1 && PyErr_Occurred()) || v < 0 || v > 999) {
                Py_DECREF(seq);
                if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    PyErr_SetString(PyExc_ValueError,
                                    "device_indices: GPU ordinals, ints in [0, 999]");
                }
                return -1;
            }
            idx[i] = (int)v;
        }
        n_ctx = (int)k;
        Py_DECREF(seq);
    }
    if (replicas < 1 || replicas > EMBD_SCHED_MAX_CTX || (replicas > 1 && n_ctx > 1)) {
        PyErr_Format(PyExc_ValueError, "replicas must be 1 to %d (and 1 with device_indices)",
                     EMBD_SCHED_MAX_CTX);
        return -1;
    }
    if ((replicas > 1 || n_ctx > 1) && cache_dir) {
        /* LMDB's environment may be open once per process */
        PyErr_SetString(PyExc_ValueError, "a disk cache (cache=DIR) works with one context; use "
                                          "cache='mem' with several devices or replicas");
        return -1;
    }
    if (replicas > 1) {
        for (int i = 1; i < replicas; i++)
            idx[i] = device_index;
        n_ctx = replicas;
        /* the CPU's threads shared out among the replicas, one at least */
        int total = threads > 0 ? threads : embd_cpu_count();
        threads = total / replicas > 0 ? total / replicas : 1;
    }
    if (e->model) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialised");
        return -1;
    }
    struct embd_model_params mp = embd_model_default_params();
    mp.max_seq_length = msl;
    struct embd_ctx_params cp = embd_ctx_default_params();
    cp.device = (enum embd_device)device;
    cp.device_index = device_index;
    cp.dtype = (enum embd_dtype)dtype;
    cp.max_batch_tokens = mbt;
    cp.cache_bytes = (size_t)cache_bytes;
    cp.cache_dir = cache_dir;
    cp.normalize = normalize != 0;
    cp.n_threads = threads;
    enum embd_status s;
    embd_model *model = NULL;
    embd_ctx *ctxs[EMBD_SCHED_MAX_CTX] = {NULL};
    embd_sched *sched = NULL;
    char msg[1024] = "";
    int made = 0;
    PyThreadState *ts = PyEval_SaveThread();
    s = embd_model_load(path, mp, &model);
    for (; s == EMBD_OK && made < n_ctx; made++) {
        cp.device_index = idx[made];
        s = embd_ctx_new(model, cp, &ctxs[made]);
        if (s != EMBD_OK && replicas > 1) /* a GPU's own message names it */
            snprintf(msg, sizeof msg, "replica %d: %s", made, embd_last_error());
    }
    if (s == EMBD_OK)
        s = n_ctx > 1 ? embd_sched_new_multi(ctxs, n_ctx, embd_sched_default_params(), &sched)
                      : embd_sched_new(ctxs[0], embd_sched_default_params(), &sched);
    if (s != EMBD_OK && !msg[0]) snprintf(msg, sizeof msg, "%s", embd_last_error());
    PyEval_RestoreThread(ts);
    if (s != EMBD_OK) {
        for (int i = 0; i < n_ctx; i++)
            embd_ctx_free(ctxs[i]);
        embd_model_free(model);
        raise_status(s, msg);
        return -1;
    }
    e->model = model;
    for (int i = 0; i < n_ctx; i++) {
        e->ctxs[i] = ctxs[i];
        if (replicas > 1 || !strcmp(embd_ctx_backend(ctxs[i]), "cpu"))
            snprintf(e->labels[i], sizeof e->labels[i], "cpu:%d", i);
        else
            snprintf(e->labels[i], sizeof e->labels[i], "cuda:%d", idx[i]);
    }
    e->n_ctx = n_ctx;
    e->ctx = ctxs[0];
    e->sched = sched;
    e->pid = getpid();
    e->path = PyUnicode_FromString(path);
    return e->path ? 0 : -1;
}

/* A writable C-contiguous buffer of `count` items of `itemsize` bytes. */
static int get_out(PyObject *obj, Py_buffer *view, size_t count, Py_ssize_t itemsize,
                   const char *formats, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (view->itemsize != itemsize || !strchr(formats, *f) || f[1] ||
        (size_t)view->len != count * (size_t)itemsize) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous array of %zu items of %s", what,
                     count, itemsize == 4 ? "float32" : "uint64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The result of an embedding or rerank call: the total tokens, or the
 * exception: embd.TooLongError with (status, message, index, tokens) for
 * EMBD_ERR_TOO_LONG (index counted from `base`), else the status's class. */
static PyObject *call_result(enum embd_status s, const char *msg,
                             const struct embd_embed_info *info, Py_ssize_t base) {
    if (s == EMBD_OK) return PyLong_FromSize_t(info->total_tokens);
    if (s != EMBD_ERR_TOO_LONG) return raise_status(s, msg);
    PyObject *key = PyLong_FromLong((long)s), *cls = NULL;
    if (key && error_classes) cls = PyDict_GetItemWithError(error_classes, key);
    Py_XDECREF(key);
    PyObject *a = Py_BuildValue("(isnn)", (int)s, msg, (Py_ssize_t)info->bad_input + base,
                                (Py_ssize_t)info->bad_tokens);
    if (a && !PyErr_Occurred()) PyErr_SetObject(cls ? cls : PyExc_ValueError, a);
    Py_XDECREF(a);
    return NULL;
}

/* After a call submitted with w (*s its submit status, e->active counted
 * for it): waits for it (waiter_wait), puts its status in *s and its
 * message in msg, uncounts it and frees w. Returns -1 when a signal handler
 * raised (the exception is set), else 0. */
static int waiter_finish(Engine *e, struct waiter *w, enum embd_status *s, char *msg, size_t cap) {
    int raised = 0;
    if (*s != EMBD_OK)
        snprintf(msg, cap, "%s", embd_last_error());
    else if (waiter_wait(w))
        raised = -1;
    else if ((*s = w->status) != EMBD_OK)
        snprintf(msg, cap, "%s", w->msg);
    e->active--;
    waiter_destroy(w);
    return raised;
}

/* embed_into(texts, out, normalize=-1, truncate=True, prefix=None, counts=None, base=0,
 *            dimensions=0) -> total tokens. out: float32 (n, D) (D = dimensions when
 * set); counts: uint64 (n) or None. */
static PyObject *Engine_embed_into(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"texts",  "out",  "normalize",  "truncate", "prefix",
                            "counts", "base", "dimensions", NULL};
    PyObject *seq, *out, *counts = Py_None, *prefix_obj = Py_None;
    int normalize = -1, truncate = 1;
    Py_ssize_t base = 0;
    int dims = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|ipOOni", names, &seq, &out, &normalize,
                                     &truncate, &prefix_obj, &counts, &base, &dims))
        return NULL;
    if (usable(e)) return NULL;
    if (normalize < -1 || normalize > 1)
        return PyErr_Format(PyExc_ValueError, "normalize must be -1, 0 or 1");
    const char *prefix = NULL;
    if (prefix_obj != Py_None) {
        Py_ssize_t plen;
        if (!PyUnicode_Check(prefix_obj))
            return PyErr_Format(PyExc_TypeError, "prefix must be str or None, not %s",
                                Py_TYPE(prefix_obj)->tp_name);
        if (!(prefix = PyUnicode_AsUTF8AndSize(prefix_obj, &plen))) return NULL;
        if (strlen(prefix) != (size_t)plen)
            return PyErr_Format(PyExc_ValueError, "prefix must not contain NUL characters");
    }
    struct texts t;
    if (texts_from(seq, base, &t)) return NULL;
    size_t n = (size_t)t.n, dim = dims > 0 ? (size_t)dims : (size_t)embd_model_dim(e->model);
    Py_buffer ov = {0}, cv = {0};
    PyObject *ret = NULL;
    if (get_out(out, &ov, n * dim, 4, "f", "out")) goto done;
    if (counts != Py_None && get_out(counts, &cv, n, 8, "QLK", "counts")) goto done;
    struct embd_embed_opts opts = embd_embed_default_opts();
    opts.normalize = normalize;
    opts.truncate = truncate != 0;
    opts.prefix = prefix;
    opts.dimensions = dims;
    struct embd_embed_info info = {0};
    info.n_tokens = cv.buf ? (size_t *)cv.buf : NULL;
    enum embd_status s = EMBD_OK;
    char msg[1024] = "";
    if (n) {
        struct waiter w;
        waiter_init(&w);
        const struct embd_sched_call call = {.queue_timeout_ms = -1, .cancel = &w.cancel};
        e->active++;
        s = embd_sched_submit(e->sched, t.ptrs, t.lens, n, ov.buf, &call, &opts, &info, waiter_done,
                              &w);
        const int raised = waiter_finish(e, &w, &s, msg, sizeof msg);
        if (raised) goto done; /* KeyboardInterrupt (or what a signal handler raised) */
    }
    ret = call_result(s, msg, &info, base);
done:
    if (ov.obj) PyBuffer_Release(&ov);
    if (cv.obj) PyBuffer_Release(&cv);
    texts_free(&t);
    return ret;
}

/* tokenize_pair(a, b) -> (ids, type_ids): the pair as a cross-encoder sees it. */
static PyObject *Engine_tokenize_pair(Engine *e, PyObject *args) {
    PyObject *ao, *bo;
    if (!PyArg_ParseTuple(args, "UU", &ao, &bo)) return NULL;
    if (usable(e)) return NULL;
    size_t al, bl;
    const char *a, *b;
    PyObject *akeep = NULL, *bkeep = NULL, *ret = NULL, *li = NULL, *lt = NULL;
    int32_t *ids = NULL;
    if (utf8_of(ao, -1, &a, &al, &akeep) || utf8_of(bo, 0, &b, &bl, &bkeep)) goto done;
    size_t cap = (size_t)embd_model_max_tokens(e->model), n = 0;
    if (!(ids = PyMem_Malloc(2 * cap * sizeof *ids))) {
        PyErr_NoMemory();
        goto done;
    }
    enum embd_status s = embd_tokenize_pair(e->model, a, al, b, bl, ids, ids + cap, cap, &n);
    if (s != EMBD_OK) {
        raise_last(s);
        goto done;
    }
    if (!(li = PyList_New((Py_ssize_t)n)) || !(lt = PyList_New((Py_ssize_t)n))) goto done;
    for (size_t i = 0; i < n; i++) {
        PyObject *x = PyLong_FromLong(ids[i]), *y = x ? PyLong_FromLong(ids[cap + i]) : NULL;
        if (!x || !y) {
            Py_XDECREF(x);
            goto done;
        }
        PyList_SET_ITEM(li, (Py_ssize_t)i, x);
        PyList_SET_ITEM(lt, (Py_ssize_t)i, y);
    }
    ret = PyTuple_Pack(2, li, lt);
done:
    Py_XDECREF(li);
    Py_XDECREF(lt);
    Py_XDECREF(akeep);
    Py_XDECREF(bkeep);
    PyMem_Free(ids);
    return ret;
}

/* rerank_into(query, docs, out, raw_scores=False, truncate=True, base=0) -> total tokens.
 * out: float32 (n); each doc scored against query by the cross-encoder. */
static PyObject *Engine_rerank_into(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"query", "docs", "out", "raw_scores", "truncate", "base", NULL};
    PyObject *query_obj, *seq, *out;
    int raw = 0, truncate = 1;
    Py_ssize_t base = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|ppn", names, &query_obj, &seq, &out, &raw,
                                     &truncate, &base))
        return NULL;
    if (usable(e)) return NULL;
    if (!PyUnicode_Check(query_obj))
        return PyErr_Format(PyExc_TypeError, "query must be str, not %s",
                            Py_TYPE(query_obj)->tp_name);
    size_t qlen;
    const char *query;
    PyObject *qkeep;
    if (utf8_of(query_obj, -1, &query, &qlen, &qkeep)) return NULL;
    struct texts t;
    if (texts_from(seq, base, &t)) {
        Py_DECREF(qkeep);
        return NULL;
    }
    size_t n = (size_t)t.n;
    Py_buffer ov = {0};
    PyObject *ret = NULL;
    if (get_out(out, &ov, n, 4, "f", "out")) goto done;
    struct embd_rerank_opts opts = embd_rerank_default_opts();
    opts.raw_scores = raw != 0;
    opts.truncate = truncate != 0;
    struct embd_embed_info info = {0};
    enum embd_status s = EMBD_OK;
    char msg[1024] = "";
    if (n) {
        struct waiter w;
        waiter_init(&w);
        const struct embd_sched_call call = {.queue_timeout_ms = -1, .cancel = &w.cancel};
        e->active++;
        s = embd_sched_submit_rerank(e->sched, query, qlen, t.ptrs, t.lens, n, ov.buf, &call, &opts,
                                     &info, waiter_done, &w);
        const int raised = waiter_finish(e, &w, &s, msg, sizeof msg);
        if (raised) goto done;
    }
    ret = call_result(s, msg, &info, base);
done:
    if (ov.obj) PyBuffer_Release(&ov);
    texts_free(&t);
    Py_DECREF(qkeep);
    return ret;
}

/* One str (input `index` in messages) as UTF-8; *keep as utf8_of's. */
static int one_text(PyObject *obj, Py_ssize_t index, const char **p, size_t *len, PyObject **keep) {
    *keep = NULL;
    if (!PyUnicode_Check(obj)) return bad_item(obj, index);
    return utf8_of(obj, index, p, len, keep);
}

/* tokenize(text, index=0) -> list of ids ([CLS] ... [SEP], truncated as the
 * model); index: the input's place, for messages. */
static PyObject *Engine_tokenize(Engine *e, PyObject *args) {
    PyObject *arg, *keep;
    Py_ssize_t index = 0;
    if (!PyArg_ParseTuple(args, "O|n", &arg, &index)) return NULL;
    const char *p = NULL;
    size_t len = 0;
    if (usable(e) || one_text(arg, index, &p, &len, &keep)) return NULL;
    size_t cap = (size_t)embd_model_max_tokens(e->model), n = 0;
    int32_t *ids = PyMem_Malloc(cap * sizeof *ids);
    if (!ids) {
        Py_DECREF(keep);
        return PyErr_NoMemory();
    }
    enum embd_status s;
    char msg[1024] = "";
    e->active++;
    PyThreadState *ts = PyEval_SaveThread();
    s = embd_tokenize(e->model, p, len, ids, cap, &n);
    if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", embd_last_error());
    PyEval_RestoreThread(ts);
    e->active--;
    Py_DECREF(keep);
    PyObject *list = NULL;
    if (s != EMBD_OK) {
        raise_status(s, msg);
    } else if ((list = PyList_New((Py_ssize_t)n))) {
        for (size_t i = 0; i < n; i++) {
            PyObject *v = PyLong_FromLong(ids[i]);
            if (!v) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, v);
        }
    }
    PyMem_Free(ids);
    return list;
}

/* count_tokens(text, index=0) -> ids without truncation ([CLS] and [SEP]
 * included); index as tokenize's. */
static PyObject *Engine_count_tokens(Engine *e, PyObject *args) {
    PyObject *arg, *keep;
    Py_ssize_t index = 0;
    if (!PyArg_ParseTuple(args, "O|n", &arg, &index)) return NULL;
    const char *p = NULL;
    size_t len = 0, n = 0;
    if (usable(e) || one_text(arg, index, &p, &len, &keep)) return NULL;
    enum embd_status s;
    char msg[1024] = "";
    e->active++;
    PyThreadState *ts = PyEval_SaveThread();
    s = embd_count_tokens(e->model, p, len, &n);
    if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", embd_last_error());
    PyEval_RestoreThread(ts);
    e->active--;
    Py_DECREF(keep);
    if (s != EMBD_OK) return raise_status(s, msg);
    return PyLong_FromSize_t(n);
}

/* tokenize_offsets(text, add_special_tokens=True) -> (ids, offsets): the ids
 * as tokenize gives them (or without [CLS]/[SEP]) and each token's
 * (start, stop) in characters of text ((0, 0) for [CLS] and [SEP]), as
 * Hugging Face's Encoding.offsets. */
static PyObject *Engine_tokenize_offsets(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"text", "add_special_tokens", NULL};
    PyObject *obj, *keep;
    int special = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", names, &obj, &special)) return NULL;
    const char *p = NULL;
    size_t len = 0;
    if (usable(e) || one_text(obj, 0, &p, &len, &keep)) return NULL;
    size_t cap = (size_t)embd_model_max_tokens(e->model), n = 0;
    int32_t *ids = PyMem_Malloc(cap * sizeof *ids);
    size_t *starts = PyMem_Malloc(2 * cap * sizeof *starts), *stops = starts ? starts + cap : NULL;
    PyObject *ret = NULL, *li = NULL, *lo = NULL;
    if (!ids || !starts) {
        PyErr_NoMemory();
        goto done;
    }
    enum embd_status s;
    char msg[1024] = "";
    e->active++;
    PyThreadState *ts = PyEval_SaveThread();
    s = embd_tokenize_offsets(e->model, p, len, special != 0, true, ids, starts, stops, NULL, cap,
                              &n);
    if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", embd_last_error());
    PyEval_RestoreThread(ts);
    e->active--;
    if (s != EMBD_OK) {
        raise_status(s, msg);
        goto done;
    }
    if (!(li = PyList_New((Py_ssize_t)n)) || !(lo = PyList_New((Py_ssize_t)n))) goto done;
    /* bytes to characters: a cursor over the UTF-8, restarted if an offset
     * goes back (they do not, but for [CLS]/[SEP] at 0) */
    size_t bpos = 0, cpos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t ch[2];
        for (int k = 0; k < 2; k++) {
            size_t want = k ? stops[i] : starts[i];
            if (want < bpos) bpos = cpos = 0;
            for (; bpos < want && bpos < len; bpos++)
                if (((unsigned char)p[bpos] & 0xC0) != 0x80) cpos++;
            ch[k] = cpos;
        }
        PyObject *x = PyLong_FromLong(ids[i]),
                 *y = x ? Py_BuildValue("(nn)", (Py_ssize_t)ch[0], (Py_ssize_t)ch[1]) : NULL;
        if (!x || !y) {
            Py_XDECREF(x);
            goto done;
        }
        PyList_SET_ITEM(li, (Py_ssize_t)i, x);
        PyList_SET_ITEM(lo, (Py_ssize_t)i, y);
    }
    ret = PyTuple_Pack(2, li, lo);
done:
    Py_XDECREF(li);
    Py_XDECREF(lo);
    PyMem_Free(ids);
    PyMem_Free(starts);
    Py_DECREF(keep);
    return ret;
}

/* decode(ids, skip_special_tokens=True) -> str, as Hugging Face's
 * tokenizer.decode. */
static PyObject *Engine_decode(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"ids", "skip_special_tokens", NULL};
    PyObject *obj;
    int skip = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", names, &obj, &skip)) return NULL;
    if (usable(e)) return NULL;
    if (PyUnicode_Check(obj) || PyBytes_Check(obj))
        return PyErr_Format(PyExc_TypeError, "ids must be a sequence of int, not %s",
                            Py_TYPE(obj)->tp_name);
    PyObject *seq = PySequence_Fast(obj, "ids must be a sequence of int");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int32_t *ids = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *ids);
    char small[4096], *buf = small;
    PyObject *ret = NULL;
    if (!ids) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
        if (PyBool_Check(it) || !PyIndex_Check(it)) {
            PyErr_Format(PyExc_TypeError, "ids[%zd] must be an int, not %s", i,
                         Py_TYPE(it)->tp_name);
            goto done;
        }
        PyObject *v = PyNumber_Index(it);
        long long x = v ? PyLong_AsLongLong(v) : -1;
        Py_XDECREF(v);
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_OverflowError)) goto done;
        const int over = PyErr_Occurred() != NULL;
        if (over || x < INT32_MIN || x > INT32_MAX) {
            char m[128];
            PyErr_Clear();
            if (over)
                snprintf(m, sizeof m, "decode: the id at position %zd is not a token", i);
            else
                snprintf(m, sizeof m, "decode: id %lld at position %zd is not a token", x, i);
            raise_status(EMBD_ERR_INVALID_ARG, m);
            goto done;
        }
        ids[i] = (int32_t)x;
    }
    size_t len = 0;
    enum embd_status s;
    char msg[1024] = "";
    e->active++;
    PyThreadState *ts = PyEval_SaveThread();
    s = embd_detokenize(e->model, ids, (size_t)n, skip != 0, buf, sizeof small, &len);
    if (s == EMBD_ERR_BUFFER_TOO_SMALL && (buf = PyMem_RawMalloc(len + 1)) != NULL)
        s = embd_detokenize(e->model, ids, (size_t)n, skip != 0, buf, len + 1, &len);
    if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", buf ? embd_last_error() : "out of memory");
    PyEval_RestoreThread(ts);
    e->active--;
    if (!buf) {
        buf = small;
        PyErr_NoMemory();
        goto done;
    }
    if (s != EMBD_OK) {
        raise_status(s, msg);
        goto done;
    }
    ret = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)len, "strict");
done:
    if (buf != small) PyMem_RawFree(buf);
    PyMem_Free(ids);
    Py_DECREF(seq);
    return ret;
}

static PyObject *Engine_metrics(Engine *e, PyObject *unused) {
    if (usable(e)) return NULL;
    const char *labels[EMBD_SCHED_MAX_CTX];
    for (int i = 0; i < e->n_ctx; i++)
        labels[i] = e->labels[i];
    /* several contexts: every sample labelled device="..." */
    size_t need = embd_metrics_render_devices(e->ctxs, labels, e->n_ctx, NULL, 0) + 4096;
    char *buf = PyMem_Malloc(need + 1);
    if (!buf) return PyErr_NoMemory();
    size_t got = embd_metrics_render_devices(e->ctxs, labels, e->n_ctx, buf, need + 1);
    PyObject *r = PyUnicode_FromStringAndSize(buf, (Py_ssize_t)(got < need ? got : need));
    PyMem_Free(buf);
    return r;
}

static PyObject *Engine_stats(Engine *e, PyObject *unused) {
    if (usable(e)) return NULL;
    struct embd_ctx_stats st = {0}; /* summed over the contexts */
    for (int i = 0; i < e->n_ctx; i++) {
        struct embd_ctx_stats one;
        embd_ctx_get_stats(e->ctxs[i], &one);
        st.inputs += one.inputs;
        st.tokens += one.tokens;
        st.batches += one.batches;
        st.tokenize_sec += one.tokenize_sec;
        st.forward_sec += one.forward_sec;
        st.cache_hits += one.cache_hits;
        st.cache_misses += one.cache_misses;
        st.cache_evictions += one.cache_evictions;
    }
    return Py_BuildValue("{sKsKsKsdsdsKsKsK}", "inputs", (unsigned long long)st.inputs, "tokens",
                         (unsigned long long)st.tokens, "batches", (unsigned long long)st.batches,
                         "tokenize_sec", st.tokenize_sec, "forward_sec", st.forward_sec,
                         "cache_hits", (unsigned long long)st.cache_hits, "cache_misses",
                         (unsigned long long)st.cache_misses, "cache_evictions",
                         (unsigned long long)st.cache_evictions);
}

/* info() -> dict of what the engine runs: dim, max_tokens, vocab_size,
 * pooling, normalizes, fingerprint, device, dtype, fallback, fallback_message,
 * max_batch_tokens, reranker. */
static PyObject *Engine_info(Engine *e, PyObject *unused) {
    if (usable(e)) return NULL;
    const char *why = "";
    enum embd_fallback fb = embd_ctx_fallback(e->ctx, &why);
    return Py_BuildValue(
        "{sisisisssOsKsssssssssisOsi}", "dim", embd_model_dim(e->model), "max_tokens",
        embd_model_max_tokens(e->model), "vocab_size", embd_model_vocab_size(e->model), "pooling",
        embd_model_pooling(e->model), "normalizes",
        embd_model_normalizes(e->model) ? Py_True : Py_False, "fingerprint",
        (unsigned long long)embd_model_fingerprint(e->model), "device", embd_ctx_backend(e->ctx),
        "dtype", embd_dtype_str(embd_ctx_dtype(e->ctx)), "fallback", embd_fallback_str(fb),
        "fallback_message", why ? why : "", "max_batch_tokens", embd_ctx_max_batch_tokens(e->ctx),
        "reranker", embd_model_is_reranker(e->model) ? Py_True : Py_False, "contexts", e->n_ctx);
}

static PyObject *Engine_close(Engine *e, PyObject *unused) {
    if (e->active)
        return raise_status(EMBD_ERR_BUSY, "the model is in use by another thread; close it "
                                           "when its calls have returned");
    engine_close_handles(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_get_closed(Engine *e, void *unused) {
    return PyBool_FromLong(e->sched == NULL);
}

static PyObject *Engine_get_forked(Engine *e, void *unused) {
    return PyBool_FromLong(e->sched != NULL && e->pid != getpid());
}

static PyObject *Engine_get_path(Engine *e, void *unused) {
    if (!e->path) Py_RETURN_NONE;
    Py_INCREF(e->path);
    return e->path;
}

static PyMethodDef Engine_methods[] = {
    {"embed_into", (PyCFunction)(void (*)(void))Engine_embed_into, METH_VARARGS | METH_KEYWORDS,
     "embed_into(texts, out, normalize=-1, truncate=True, prefix=None, counts=None, base=0)"},
    {"rerank_into", (PyCFunction)(void (*)(void))Engine_rerank_into, METH_VARARGS | METH_KEYWORDS,
     "rerank_into(query, docs, out, raw_scores=False, truncate=True, base=0) -> tokens"},
    {"tokenize", (PyCFunction)Engine_tokenize, METH_VARARGS,
     "tokenize(text, index=0) -> list of ids"},
    {"tokenize_pair", (PyCFunction)Engine_tokenize_pair, METH_VARARGS,
     "tokenize_pair(a, b) -> (ids, type_ids)"},
    {"count_tokens", (PyCFunction)Engine_count_tokens, METH_VARARGS,
     "count_tokens(text, index=0) -> int"},
    {"tokenize_offsets", (PyCFunction)(void (*)(void))Engine_tokenize_offsets,
     METH_VARARGS | METH_KEYWORDS,
     "tokenize_offsets(text, add_special_tokens=True) -> (ids, offsets in characters)"},
    {"decode", (PyCFunction)(void (*)(void))Engine_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(ids, skip_special_tokens=True) -> str"},
    {"metrics", (PyCFunction)Engine_metrics, METH_NOARGS, "Prometheus text"},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "counters since the engine was made"},
    {"info", (PyCFunction)Engine_info, METH_NOARGS, "what the engine runs"},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "frees the engine now"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"closed", (getter)Engine_get_closed, NULL, "closed", NULL},
    {"forked", (getter)Engine_get_forked, NULL, "inherited through fork", NULL},
    {"path", (getter)Engine_get_path, NULL, "the model path or name as given", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "embd._embd.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A model, a context and a scheduler (internal; see embd.Model)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

/* ------------------------------------------------------------------------ */
/* Store                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD embd_vstore *vs;
    Engine *engine; /* the model the store is for */
    pid_t pid;
    int dim;
} Store;

static int store_usable(Store *st) {
    if (!st->vs) {
        raise_status(EMBD_ERR_INVALID_ARG, "the store is closed");
        return -1;
    }
    if (st->pid != getpid()) {
        raise_status(EMBD_ERR_INVALID_ARG, "this store was opened in another process (before a "
                                           "fork); open it again in this process");
        return -1;
    }
    return 0;
}

static void store_close_handle(Store *st) {
    if (st->vs && st->pid == getpid()) {
        embd_vstore *vs = st->vs;
        st->vs = NULL;
        PyThreadState *ts = PyEval_SaveThread();
        embd_vstore_close(vs);
        PyEval_RestoreThread(ts);
    }
    st->vs = NULL;
}

static void Store_dealloc(Store *st) {
    store_close_handle(st);
    Py_XDECREF(st->engine);
    Py_TYPE(st)->tp_free((PyObject *)st);
}

/* Store(engine, location, writable=True) */
static int Store_init(Store *st, PyObject *args, PyObject *kw) {
    static char *names[] = {"engine", "location", "writable", NULL};
    PyObject *eng;
    const char *location;
    int writable = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!s|p", names, &EngineType, &eng, &location,
                                     &writable))
        return -1;
    Engine *e = (Engine *)eng;
    if (usable(e)) return -1;
    if (st->vs) {
        PyErr_SetString(PyExc_RuntimeError, "Store is already initialised");
        return -1;
    }
    embd_vstore *vs = NULL;
    char msg[1024] = "";
    PyThreadState *ts = PyEval_SaveThread();
    enum embd_status s = embd_vstore_open_model(location, e->model, writable != 0, &vs);
    if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", embd_last_error());
    PyEval_RestoreThread(ts);
    if (s != EMBD_OK) {
        raise_status(s, msg);
        return -1;
    }
    st->vs = vs;
    st->pid = getpid();
    st->dim = embd_model_dim(e->model);
    Py_INCREF(eng);
    Py_XSETREF(st->engine, e);
    return 0;
}

/* add(ids, texts, vecs) -> replaced. vecs: float32 (n, D). */
static PyObject *Store_add(Store *st, PyObject *args) {
    PyObject *ids_obj, *texts_obj, *vecs;
    if (!PyArg_ParseTuple(args, "OOO", &ids_obj, &texts_obj, &vecs)) return NULL;
    if (store_usable(st)) return NULL;
    struct texts ids, texts;
    if (texts_from(ids_obj, 0, &ids)) return NULL;
    if (texts_from(texts_obj, 0, &texts)) {
        texts_free(&ids);
        return NULL;
    }
    PyObject *ret = NULL;
    Py_buffer vv = {0};
    if (ids.n != texts.n) {
        PyErr_Format(PyExc_ValueError, "%zd ids but %zd texts", ids.n, texts.n);
        goto done;
    }
    size_t n = (size_t)ids.n, replaced = 0;
    if (get_out(vecs, &vv, n * (size_t)st->dim, 4, "f", "vectors")) goto done;
    char msg[1024] = "";
    enum embd_status s = EMBD_OK;
    if (n) {
        PyThreadState *ts = PyEval_SaveThread();
        s = embd_vstore_add(st->vs, ids.ptrs, ids.lens, texts.ptrs, texts.lens, vv.buf, n,
                            &replaced);
        if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", embd_last_error());
        PyEval_RestoreThread(ts);
    }
    ret = s == EMBD_OK ? PyLong_FromSize_t(replaced) : raise_status(s, msg);
done:
    if (vv.obj) PyBuffer_Release(&vv);
    texts_free(&ids);
    texts_free(&texts);
    return ret;
}

/* search(query, k, exact=False) -> [(id, score, text), ...], best first. */
static PyObject *Store_search(Store *st, PyObject *args) {
    PyObject *q;
    Py_ssize_t k;
    int exact = 0;
    if (!PyArg_ParseTuple(args, "On|p", &q, &k, &exact)) return NULL;
    if (store_usable(st)) return NULL;
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be at least 1, not %zd", k);
    Py_buffer qv = {0};
    /* the query is read, not written; a read-only array is fine */
    if (PyObject_GetBuffer(q, &qv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)) return NULL;
    const char *f = qv.format ? qv.format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (qv.itemsize != 4 || *f != 'f' || f[1] || qv.len != (Py_ssize_t)st->dim * 4) {
        PyBuffer_Release(&qv);
        return PyErr_Format(PyExc_ValueError, "the query must be a float32 vector of %d", st->dim);
    }
    if (k > 1024) { /* no more hits than records: k = 10**9 must not allocate 10**9 */
        size_t count = 0;
        PyThreadState *ts = PyEval_SaveThread();
        const enum embd_status cs = embd_vstore_count(st->vs, &count);
        PyEval_RestoreThread(ts);
        if (cs == EMBD_OK && count < (size_t)k) k = count ? (Py_ssize_t)count : 1;
    }
    struct embd_search_hit *hits = PyMem_Calloc((size_t)k, sizeof *hits);
    if (!hits) {
        PyBuffer_Release(&qv);
        return PyErr_NoMemory();
    }
    size_t n = 0;
    char msg[1024] = "";
    PyThreadState *ts = PyEval_SaveThread();
    enum embd_status s = embd_vstore_search_hits(st->vs, qv.buf, (size_t)k, exact != 0, hits, &n);
    if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", embd_last_error());
    PyEval_RestoreThread(ts);
    PyBuffer_Release(&qv);
    PyObject *list = NULL;
    if (s != EMBD_OK) {
        raise_status(s, msg);
    } else if ((list = PyList_New((Py_ssize_t)n))) {
        for (size_t i = 0; i < n; i++) {
            PyObject *t = Py_BuildValue(
                "(N d N)", PyUnicode_DecodeUTF8(hits[i].id, (Py_ssize_t)hits[i].id_len, "replace"),
                (double)hits[i].score,
                PyUnicode_DecodeUTF8(hits[i].text, (Py_ssize_t)hits[i].text_len, "replace"));
            if (!t) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, t);
        }
    }
    PyMem_Free(hits);
    return list;
}

static PyObject *Store_count(Store *st, PyObject *unused) {
    if (store_usable(st)) return NULL;
    size_t n = 0;
    enum embd_status s = embd_vstore_count(st->vs, &n);
    if (s != EMBD_OK) return raise_last(s);
    return PyLong_FromSize_t(n);
}

/* flush or finish, with the GIL released */
static PyObject *store_call(Store *st, enum embd_status (*fn)(embd_vstore *)) {
    if (store_usable(st)) return NULL;
    char msg[1024] = "";
    PyThreadState *ts = PyEval_SaveThread();
    enum embd_status s = fn(st->vs);
    if (s != EMBD_OK) snprintf(msg, sizeof msg, "%s", embd_last_error());
    PyEval_RestoreThread(ts);
    if (s != EMBD_OK) return raise_status(s, msg);
    Py_RETURN_NONE;
}

static PyObject *Store_flush(Store *st, PyObject *unused) {
    return store_call(st, embd_vstore_flush);
}

static PyObject *Store_finish(Store *st, PyObject *unused) {
    return store_call(st, embd_vstore_finish);
}

static PyObject *Store_close(Store *st, PyObject *unused) {
    store_close_handle(st);
    Py_RETURN_NONE;
}

static PyObject *Store_get_kind(Store *st, void *unused) {
    if (!st->vs) Py_RETURN_NONE;
    return PyUnicode_FromString(embd_vstore_kind(st->vs));
}

static PyMethodDef Store_methods[] = {
    {"add", (PyCFunction)Store_add, METH_VARARGS, "add(ids, texts, vectors) -> replaced"},
    {"search", (PyCFunction)Store_search, METH_VARARGS, "search(query, k, exact=False)"},
    {"count", (PyCFunction)Store_count, METH_NOARGS, "live records"},
    {"flush", (PyCFunction)Store_flush, METH_NOARGS, "make the records durable"},
    {"finish", (PyCFunction)Store_finish, METH_NOARGS, "after a bulk load: build indexes"},
    {"close", (PyCFunction)Store_close, METH_NOARGS, "close the store now"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Store_getset[] = {
    {"kind", (getter)Store_get_kind, NULL, "'embedded' or 'postgresql'", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "embd._embd.Store",
    .tp_basicsize = sizeof(Store),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A vector store (internal; see embd.Store)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Store_init,
    .tp_dealloc = (destructor)Store_dealloc,
    .tp_methods = Store_methods,
    .tp_getset = Store_getset,
};

/* ------------------------------------------------------------------------ */
/* Module functions                                                         */
/* ------------------------------------------------------------------------ */

/* resolve(name, cache_dir=None) -> the model's directory. */
static PyObject *mod_resolve(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"name", "cache_dir", NULL};
    const char *name, *cache_dir = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|z", names, &name, &cache_dir)) return NULL;
    size_t need = 0;
    enum embd_status s = embd_model_resolve(name, cache_dir, NULL, 0, &need);
    if (s != EMBD_ERR_BUFFER_TOO_SMALL) return raise_last(s);
    char *buf = PyMem_Malloc(need);
    if (!buf) return PyErr_NoMemory();
    s = embd_model_resolve(name, cache_dir, buf, need, &need);
    PyObject *r = s == EMBD_OK ? PyUnicode_DecodeFSDefault(buf) : raise_last(s);
    PyMem_Free(buf);
    return r;
}

static PyObject *mod_set_error_classes(PyObject *self, PyObject *dict) {
    if (!PyDict_Check(dict)) return PyErr_Format(PyExc_TypeError, "a dict");
    Py_INCREF(dict);
    Py_XSETREF(error_classes, dict);
    Py_RETURN_NONE;
}

static PyObject *mod_status_str(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred()) return NULL;
    return PyUnicode_FromString(embd_status_str((enum embd_status)s));
}

static PyObject *mod_cpu_count(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyLong_FromLong(embd_cpu_count());
}

static PyObject *mod_system_info(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(embd_system_info());
}

static PyObject *mod_device_report(PyObject *self, PyObject *unused) {
    size_t need = embd_device_report(NULL, 0);
    char *buf = PyMem_Malloc(need + 1);
    if (!buf) return PyErr_NoMemory();
    size_t got = embd_device_report(buf, need + 1);
    PyObject *r = PyUnicode_FromStringAndSize(buf, (Py_ssize_t)(got < need ? got : need));
    PyMem_Free(buf);
    return r;
}

static PyObject *mod_log_configure(PyObject *self, PyObject *args) {
    const char *level = NULL, *format = NULL;
    if (!PyArg_ParseTuple(args, "zz", &level, &format)) return NULL;
    enum embd_status s = embd_log_configure(level, format);
    if (s != EMBD_OK) return raise_last(s);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"resolve", (PyCFunction)(void (*)(void))mod_resolve, METH_VARARGS | METH_KEYWORDS,
     "resolve(name, cache_dir=None) -> model directory"},
    {"set_error_classes", mod_set_error_classes, METH_O, "status -> exception class"},
    {"status_str", mod_status_str, METH_O, "embd_status_str"},
    {"system_info", mod_system_info, METH_NOARGS, "embd_system_info"},
    {"cpu_count", mod_cpu_count, METH_NOARGS, "embd_cpu_count"},
    {"device_report", mod_device_report, METH_NOARGS, "embd_device_report"},
    {"log_configure", mod_log_configure, METH_VARARGS, "log_configure(level, format)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "embd._embd", "The embd engine (internal; see the embd package)", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__embd(void);
PyMODINIT_FUNC PyInit__embd(void) {
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&StoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    Py_INCREF(&StoreType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddObject(m, "Store", (PyObject *)&StoreType) < 0 ||
        PyModule_AddStringConstant(m, "VERSION", EMBD_VERSION) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(&StoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
