/* loader.c — the libembd side of the CUDA plugin: finds and dlopens
 * libembd-cuda.so once per process, probes drivers and devices, decides
 * whether a GPU is usable, reads NVML (also with dlopen) for utilisation and
 * temperature, and writes the device report behind `embd doctor`. Nothing
 * here links against CUDA: a machine without it gets reasons, not failures. */
#include "backend/cuda/plugin.h"
#include "model/model.h"
#include "util/util.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLUGIN_NAME "libembd-cuda.so"

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct embd_cuda_plugin *plugin;
static int load_tried;
static char load_why[512];

static const struct embd_cuda_host host = {
    .error = embd_error,
    .malloc = embd_malloc,
    .free = embd_free,
    .batch_check = embd_batch_check,
};

/* libembd-cuda.so in the folder of the object holding this code (libembd.so,
 * or a program linked with the static library). */
static int sibling_path(char *buf, size_t cap) {
    Dl_info info;
    if (!dladdr((void *)&embd_cuda_load, &info) || !info.dli_fname) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return -1;
    int n =
        snprintf(buf, cap, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, PLUGIN_NAME);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static const struct embd_cuda_plugin *try_open(const char *path, char *why, size_t cap) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, cap, "cannot load the CUDA plugin (%s)", e ? e : path);
        return NULL;
    }
    embd_cuda_entry_fn get;
    *(void **)&get = dlsym(h, EMBD_CUDA_ENTRY);
    const struct embd_cuda_plugin *p = get ? get(EMBD_CUDA_ABI, &host) : NULL;
    if (!p || p->abi != EMBD_CUDA_ABI) {
        snprintf(why, cap, "%s is not a compatible embd CUDA plugin (ABI %d wanted)", path,
                 EMBD_CUDA_ABI);
        dlclose(h);
        return NULL;
    }
    return p; /* kept loaded for the life of the process */
}

const struct embd_cuda_plugin *embd_cuda_load(char *why, size_t cap) {
    pthread_mutex_lock(&load_lock);
    if (!load_tried) {
        load_tried = 1;
        const char *env = getenv("EMBD_CUDA_PLUGIN");
        char path[4096];
        if (env && env[0]) {
            plugin = try_open(env, load_why, sizeof load_why);
        } else {
            char why1[512] = "";
            if (sibling_path(path, sizeof path) == 0) plugin = try_open(path, why1, sizeof why1);
            if (!plugin) plugin = try_open(PLUGIN_NAME, load_why, sizeof load_why);
        }
    }
    const struct embd_cuda_plugin *p = plugin;
    if (!p && why) snprintf(why, cap, "%s", load_why);
    pthread_mutex_unlock(&load_lock);
    return p;
}

/* Bytes the device needs for `model` in dt: weights plus one input of the
 * model's maximum length and the workspaces (a coarse lower bound). */
static size_t need_bytes(const struct embd_model *m, enum embd_dtype dt) {
    const embd_hparams *hp = &m->hp;
    const size_t H = (size_t)hp->H, I = (size_t)hp->I, es = dt == EMBD_DTYPE_FP32 ? 4 : 2;
    size_t w = ((size_t)hp->V + (size_t)hp->P + 3) * H * 4 +
               (size_t)hp->L * ((4 * H * H + 2 * I * H + 4 * H + I) * es + 4 * H * 4);
    size_t per_tok = 12 * H + es * (6 * H + I) + 32;
    return w + per_tok * (size_t)hp->max_tokens + ((size_t)32 << 20) + ((size_t)256 << 20);
}

/* Whether the NVIDIA driver library is there: a cheap test that spares a
 * machine without one the cost of loading the plugin and cuBLASLt (~0.2 s). */
static int driver_found;

static void driver_probe(void) {
    /* kept loaded: the CUDA runtime in the plugin loads it anyway */
    driver_found = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL) != NULL;
}

static int driver_present(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, driver_probe);
    return driver_found;
}

/* Writes the message into why (cap bytes) and returns the reason. */
static enum embd_fallback refuse(enum embd_fallback reason, char *why, size_t cap, const char *fmt,
                                 ...) __attribute__((format(printf, 4, 5)));
static enum embd_fallback refuse(enum embd_fallback reason, char *why, size_t cap, const char *fmt,
                                 ...) {
    va_list ap;
    va_start(ap, fmt);
    if (why && cap) vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return reason;
}

enum embd_fallback embd_cuda_check(const struct embd_model *model, int index, enum embd_dtype dt,
                                   char *why, size_t cap) {
    char r[512];
    if (!driver_present())
        return refuse(EMBD_FALLBACK_NO_DRIVER, why, cap,
                      "no NVIDIA driver (libcuda.so.1 not found)");
    const struct embd_cuda_plugin *p = embd_cuda_load(r, sizeof r);
    if (!p) return refuse(EMBD_FALLBACK_NO_PLUGIN, why, cap, "%s", r);
    if (p->driver_version() == 0)
        return refuse(EMBD_FALLBACK_NO_DRIVER, why, cap, "no NVIDIA driver found");
    int n = p->device_count(r, sizeof r);
    if (n < 0) return refuse(EMBD_FALLBACK_NO_DEVICE, why, cap, "no usable CUDA device: %s", r);
    if (n == 0) return refuse(EMBD_FALLBACK_NO_DEVICE, why, cap, "no CUDA device");
    if (index < 0 || index >= n)
        return refuse(EMBD_FALLBACK_NO_DEVICE, why, cap, "no CUDA device %d (%d found)", index, n);
    struct embd_cuda_device_info d;
    if (p->device_info(index, &d, r, sizeof r) != 0)
        return refuse(EMBD_FALLBACK_GPU_UNUSABLE, why, cap, "%s", r);
    int cc = d.major * 10 + d.minor;
    if (cc < 75)
        return refuse(EMBD_FALLBACK_COMPUTE_CAPABILITY, why, cap,
                      "%s has compute capability %d.%d; embd needs 7.5 or newer", d.name, d.major,
                      d.minor);
    if (dt == EMBD_DTYPE_BF16 && cc < 80)
        return refuse(EMBD_FALLBACK_COMPUTE_CAPABILITY, why, cap,
                      "%s has compute capability %d.%d; bf16 needs 8.0 or newer", d.name, d.major,
                      d.minor);
    if (model) {
        size_t need = need_bytes(model, dt == EMBD_DTYPE_AUTO ? EMBD_DTYPE_FP16 : dt);
        if (d.free_mem < need)
            return refuse(EMBD_FALLBACK_GPU_MEMORY, why, cap,
                          "%s has %zu MiB free; the model needs about %zu MiB", d.name,
                          d.free_mem >> 20, need >> 20);
    }
    return refuse(EMBD_FALLBACK_NONE, why, cap, "%s (compute capability %d.%d, %zu MiB free)",
                  d.name, d.major, d.minor, d.free_mem >> 20);
}

int embd_cuda_usable(const struct embd_model *model, int index, enum embd_dtype dt, char *why,
                     size_t cap) {
    return embd_cuda_check(model, index, dt, why, cap) == EMBD_FALLBACK_NONE ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* NVML, loaded with dlopen; only the few functions embd reads.              */
/* ------------------------------------------------------------------------ */

typedef struct nvmlDevice_st *nvml_device;
typedef struct {
    unsigned int gpu, memory;
} nvml_utilization;

static struct {
    int tried, ok;
    int (*init)(void);
    int (*by_index)(unsigned int, nvml_device *);
    int (*utilization)(nvml_device, nvml_utilization *);
    int (*temperature)(nvml_device, int, unsigned int *);
} nvml;
static pthread_mutex_t nvml_lock = PTHREAD_MUTEX_INITIALIZER;

static int nvml_open(void) {
    pthread_mutex_lock(&nvml_lock);
    if (!nvml.tried) {
        nvml.tried = 1;
        void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
        if (h) {
            *(void **)&nvml.init = dlsym(h, "nvmlInit_v2");
            *(void **)&nvml.by_index = dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
            *(void **)&nvml.utilization = dlsym(h, "nvmlDeviceGetUtilizationRates");
            *(void **)&nvml.temperature = dlsym(h, "nvmlDeviceGetTemperature");
            nvml.ok = nvml.init && nvml.by_index && nvml.utilization && nvml.temperature &&
                      nvml.init() == 0;
        }
    }
    int ok = nvml.ok;
    pthread_mutex_unlock(&nvml_lock);
    return ok;
}

int embd_gpu_monitor(int index, struct embd_gpu_info *out) {
    if (!out) return -1;
    memset(out, 0, sizeof *out);
    out->utilization = -1;
    out->temperature_c = -1;
    char why[512];
    const struct embd_cuda_plugin *p = embd_cuda_load(why, sizeof why);
    if (!p) return -1;
    struct embd_cuda_device_info d;
    if (p->device_info(index, &d, why, sizeof why) != 0) return -1;
    snprintf(out->name, sizeof out->name, "%s", d.name);
    out->total_bytes = d.total_mem;
    out->free_bytes = d.free_mem;
    /* NVML orders devices by PCI bus like CUDA_DEVICE_ORDER=PCI_BUS_ID; close
     * enough for the usual case of CUDA_VISIBLE_DEVICES unset. */
    if (nvml_open()) {
        nvml_device dev;
        nvml_utilization u;
        unsigned int t;
        if (nvml.by_index((unsigned)index, &dev) == 0) {
            if (nvml.utilization(dev, &u) == 0) out->utilization = (int)u.gpu;
            if (nvml.temperature(dev, 0 /* NVML_TEMPERATURE_GPU */, &t) == 0)
                out->temperature_c = (int)t;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The report behind `embd doctor`.                                         */
/* ------------------------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t cap, len; /* len may exceed cap: the size that was needed */
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->len < b->cap ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n;
}

static void version_str(char *buf, size_t cap, int v) {
    if (v <= 0)
        snprintf(buf, cap, "none");
    else
        snprintf(buf, cap, "%d.%d", v / 1000, (v % 1000) / 10);
}

size_t embd_device_report(char *buf, size_t cap) {
    struct sbuf b = {buf, buf ? cap : 0, 0};
    if (b.cap) buf[0] = '\0';
    char why[512];
    const struct embd_cuda_plugin *p = embd_cuda_load(why, sizeof why);
    if (!p) {
        sb_printf(&b, "cuda plugin: not loaded: %s\n", why);
    } else {
        char dv[32], rv[32];
        version_str(dv, sizeof dv, p->driver_version());
        version_str(rv, sizeof rv, p->runtime_version());
        sb_printf(&b, "cuda plugin: loaded; driver CUDA %s, runtime %s\n", dv, rv);
        int n = p->device_count(why, sizeof why);
        if (n < 0)
            sb_printf(&b, "cuda devices: none (%s)\n", why);
        else
            sb_printf(&b, "cuda devices: %d\n", n);
        for (int i = 0; i < n; i++) {
            struct embd_gpu_info g;
            if (embd_gpu_monitor(i, &g) != 0) {
                sb_printf(&b, "  cuda:%d: cannot be read\n", i);
                continue;
            }
            struct embd_cuda_device_info d;
            if (p->device_info(i, &d, why, sizeof why) != 0) continue;
            sb_printf(&b,
                      "  cuda:%d: %s, compute capability %d.%d, %d SMs, memory %zu MiB total, "
                      "%zu MiB free",
                      i, d.name, d.major, d.minor, d.multiprocessors, d.total_mem >> 20,
                      d.free_mem >> 20);
            if (g.utilization >= 0) sb_printf(&b, ", utilisation %d%%", g.utilization);
            if (g.temperature_c >= 0) sb_printf(&b, ", %d C", g.temperature_c);
            sb_printf(&b, "\n");
        }
    }
    enum embd_fallback r = embd_cuda_check(NULL, 0, EMBD_DTYPE_FP16, why, sizeof why);
    if (r == EMBD_FALLBACK_NONE) {
        sb_printf(&b, "device auto -> cuda:0: %s\n", why);
        if (p && p->search)
            sb_printf(&b, "store search: on the GPU when the model runs there (exact fp32 scores "
                          "by cuBLAS, top-k on the CPU)\n");
    } else {
        sb_printf(&b, "device auto -> cpu (%s): %s\n", embd_fallback_str(r), why);
        sb_printf(&b, "store search: on the CPU (BLAS)\n");
    }
    return b.len;
}
