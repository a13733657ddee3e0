/* loader.c — the libembd side of the CUDA plugins: chooses one of the
 * plugins built beside libembd (libembd-cuda13.so, libembd-cuda11.so) by the
 * driver's CUDA version and dlopens it once per process, probes devices,
 * decides whether a GPU is usable, reads NVML (also with dlopen) for
 * utilisation and temperature, and writes the device report behind `embd
 * doctor`. Nothing here links against CUDA: a machine without it gets
 * reasons, not failures. */
#include "backend/cuda/plugin.h"
#include "model/model.h"
#include "util/log.h"
#include "util/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The plugins, newest first: each runs on a driver whose CUDA version is at
 * least its major version (minor-version compatibility: R580+ for 13.x,
 * R450.80+ for 11.x). */
static const struct {
    const char *file;
    int major;
} plugins[] = {{"libembd-cuda13.so", 13}, {"libembd-cuda11.so", 11}};
#define N_PLUGINS ((int)(sizeof plugins / sizeof plugins[0]))

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct embd_cuda_plugin *plugin;
static int load_tried;
static struct embd_cuda_choice choice;

static const struct embd_cuda_host host = {
    .error = embd_error,
    .malloc = embd_malloc,
    .free = embd_free,
    .batch_check = embd_batch_check,
};

static void version_str(char *buf, size_t cap, int v) {
    if (v <= 0)
        snprintf(buf, cap, "none");
    else
        snprintf(buf, cap, "%d.%d", v / 1000, (v % 1000) / 10);
}

/* snprintf into a fixed buffer, cutting what does not fit (on purpose). */
static void put_printf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void put_printf(char *buf, size_t cap, const char *fmt, ...) {
    if (!cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

/* Appends to a fixed buffer, cutting what does not fit. */
static void cat_printf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cat_printf(char *buf, size_t cap, const char *fmt, ...) {
    size_t len = strnlen(buf, cap);
    if (len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

/* The folder of the object holding this code (libembd.so, or a program
 * linked with the static library), into buf. */
static int own_folder(char *buf, size_t cap) {
    Dl_info info;
    if (!dladdr((void *)&embd_cuda_load, &info) || !info.dli_fname) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return -1;
    int n = snprintf(buf, cap, "%.*s", (int)(slash - info.dli_fname), info.dli_fname);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static const struct embd_cuda_plugin *try_open(const char *path, char *why, size_t cap) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, cap, "cannot load %s (%s)", path, e ? e : "unknown error");
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

/* "12.4", "12040" or "12" as CUDA encodes versions (12040); -1 if neither. */
static int parse_cuda_version(const char *s) {
    char *end;
    errno = 0;
    long major = strtol(s, &end, 10);
    if (end == s || errno || major < 0) return -1;
    if (*end == '\0')
        return major >= 1000 ? (major <= 1000000 ? (int)major : -1) : (int)major * 1000;
    if (*end != '.' || major > 1000) return -1;
    const char *m = end + 1;
    long minor = strtol(m, &end, 10);
    if (end == m || *end || errno || minor < 0 || minor > 99) return -1;
    return (int)(major * 1000 + minor * 10);
}

/* The CUDA version the NVIDIA driver supports: $EMBD_CUDA_DRIVER_VERSION
 * when set (to see what a machine with another driver would load), else
 * cuDriverGetVersion from libcuda.so.1 (no cuInit needed). 0 when there is
 * no driver or it cannot tell; the source goes into src. */
static int driver_cuda_version(char *src, size_t cap) {
    const char *env = getenv("EMBD_CUDA_DRIVER_VERSION");
    if (env && *env) {
        int v = parse_cuda_version(env);
        if (v > 0) {
            snprintf(src, cap, "EMBD_CUDA_DRIVER_VERSION");
            return v;
        }
        embd_log(EMBD_LOG_WARN, "device",
                 "EMBD_CUDA_DRIVER_VERSION=\"%s\" ignored: not a CUDA version like 12.4", env);
    }
    snprintf(src, cap, "the driver");
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!h) {
        snprintf(src, cap, "no NVIDIA driver (libcuda.so.1 not found)");
        return 0;
    }
    int (*get)(int *);
    *(void **)&get = dlsym(h, "cuDriverGetVersion");
    int v = 0;
    if (!get || get(&v) != 0 || v <= 0) {
        snprintf(src, cap, "the driver (libcuda.so.1) does not tell its CUDA version");
        v = 0;
    }
    /* kept loaded: the CUDA runtime in the plugin loads it anyway */
    return v > 0 ? v : 0;
}

/* Tries `file` in $EMBD_CUDA_PLUGIN_DIR, else next to libembd and then in
 * the loader's search path. */
static const struct embd_cuda_plugin *open_named(const char *file, char *path, size_t pcap,
                                                 char *why, size_t cap) {
    const char *dir = getenv("EMBD_CUDA_PLUGIN_DIR");
    char own[4096];
    const struct embd_cuda_plugin *p = NULL;
    if (dir && *dir) {
        snprintf(path, pcap, "%s/%s", dir, file);
        return try_open(path, why, cap);
    }
    if (own_folder(own, sizeof own) == 0) {
        put_printf(path, pcap, "%s/%s", own, file);
        p = try_open(path, why, cap);
        if (p) return p;
        /* the file there exists but fails: that reason is the one to tell */
        FILE *f = fopen(path, "rb");
        if (f) {
            fclose(f);
            return NULL;
        }
    }
    snprintf(path, pcap, "%s", file);
    return try_open(path, why, cap);
}

static void choose(void) {
    struct embd_cuda_choice *c = &choice;
    char src[64], dv[16], why[1024];
    const char *env = getenv("EMBD_CUDA_PLUGIN");
    c->driver_version = driver_cuda_version(src, sizeof src);
    version_str(dv, sizeof dv, c->driver_version);
    if (env && env[0]) {
        snprintf(c->path, sizeof c->path, "%s", env);
        plugin = try_open(env, why, sizeof why);
        snprintf(c->why, sizeof c->why, "%s", plugin ? "EMBD_CUDA_PLUGIN names it" : why);
    } else {
        if (c->driver_version > 0)
            snprintf(c->why, sizeof c->why, "%s supports CUDA %s", src, dv);
        else
            snprintf(c->why, sizeof c->why, "%s: newest first", src);
        char path[4096];
        for (int i = 0; i < N_PLUGINS && !plugin; i++) {
            if (c->driver_version > 0 && c->driver_version < plugins[i].major * 1000) {
                cat_printf(c->why, sizeof c->why, "; %s needs %d.0 or newer", plugins[i].file,
                           plugins[i].major);
                continue;
            }
            plugin = open_named(plugins[i].file, path, sizeof path, why, sizeof why);
            if (plugin)
                snprintf(c->path, sizeof c->path, "%s", path);
            else
                cat_printf(c->why, sizeof c->why, "; %s", why);
        }
    }
    if (plugin) {
        const char *slash = strrchr(c->path, '/');
        put_printf(c->plugin, sizeof c->plugin, "%s", slash ? slash + 1 : c->path);
        c->runtime_version = plugin->runtime_version();
        char rv[16];
        version_str(rv, sizeof rv, c->runtime_version);
        embd_log(EMBD_LOG_INFO, "device", "cuda plugin %s (CUDA runtime %s): %s", c->plugin, rv,
                 c->why);
    } else if (!(env && env[0]) && c->driver_version > 0 && c->driver_version < 11000) {
        snprintf(c->why, sizeof c->why,
                 "%s supports CUDA %s; embd's CUDA plugins need 11.0 or newer (an NVIDIA driver "
                 "R450.80 or later)",
                 src, dv);
    }
    c->loaded = plugin != NULL;
}

const struct embd_cuda_plugin *embd_cuda_load(char *why, size_t cap) {
    pthread_mutex_lock(&load_lock);
    if (!load_tried) {
        load_tried = 1;
        choose();
    }
    const struct embd_cuda_plugin *p = plugin;
    if (!p && why) put_printf(why, cap, "no CUDA plugin loads: %s", choice.why);
    pthread_mutex_unlock(&load_lock);
    return p;
}

int embd_cuda_plugin_choice(struct embd_cuda_choice *out) {
    pthread_mutex_lock(&load_lock);
    int tried = load_tried;
    if (out) {
        if (tried)
            *out = choice;
        else
            memset(out, 0, sizeof *out);
    }
    pthread_mutex_unlock(&load_lock);
    return tried ? 0 : -1;
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

int embd_gpu_limit_parse(const char *s, struct embd_gpu_limit *out, char *why, size_t cap) {
    memset(out, 0, sizeof *out);
    if (!s || !*s || !strcmp(s, "0")) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    int ok = end != s && !errno && v > 0.0 && v < 1e18;
    if (ok && strchr(s, '.') && !*end) {
        ok = v <= 1.0;
        out->fraction = v;
    } else if (ok) {
        double mul = 1.0;
        if (*end == 'k' || *end == 'K')
            mul = 1024.0, end++;
        else if (*end == 'm' || *end == 'M')
            mul = 1048576.0, end++;
        else if (*end == 'g' || *end == 'G')
            mul = 1073741824.0, end++;
        ok = !*end && v * mul >= 1.0;
        out->bytes = ok ? (size_t)(v * mul) : 0;
    }
    if (ok) return 0;
    memset(out, 0, sizeof *out);
    snprintf(why, cap,
             "the GPU memory limit must be bytes with an optional K, M or G (\"512M\") or a "
             "fraction of the device's memory like 0.5, not \"%s\"",
             s);
    return -1;
}

enum embd_fallback embd_cuda_check(const struct embd_model *model, int index, enum embd_dtype dt,
                                   const struct embd_gpu_limit *limit, char *why, size_t cap) {
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
        size_t lim = !limit         ? 0
                     : limit->bytes ? limit->bytes
                                    : (size_t)(limit->fraction * (double)d.total_mem);
        if (lim && lim < need)
            return refuse(EMBD_FALLBACK_GPU_MEMORY, why, cap,
                          "%s: the GPU memory limit (%zu MiB) is below the about %zu MiB the "
                          "model needs",
                          d.name, lim >> 20, need >> 20);
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
    return embd_cuda_check(model, index, dt, NULL, why, cap) == EMBD_FALLBACK_NONE ? 0 : -1;
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
    int (*by_bus_id)(const char *, nvml_device *);
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
            *(void **)&nvml.by_bus_id = dlsym(h, "nvmlDeviceGetHandleByPciBusId_v2");
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
    memcpy(out->pci_bus_id, d.pci_bus_id, sizeof out->pci_bus_id);
    out->pci_bus_id[sizeof out->pci_bus_id - 1] = '\0';
    out->total_bytes = d.total_mem;
    out->free_bytes = d.free_mem;
    /* NVML numbers every GPU of the machine, ignoring CUDA_VISIBLE_DEVICES
     * and CUDA's own order: the device is found by its PCI bus id, and by
     * index only where the plugin cannot tell the bus id. */
    if (nvml_open()) {
        nvml_device dev;
        nvml_utilization u;
        unsigned int t;
        int found = d.pci_bus_id[0] ? nvml.by_bus_id && nvml.by_bus_id(d.pci_bus_id, &dev) == 0
                                    : nvml.by_index((unsigned)index, &dev) == 0;
        if (found) {
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

size_t embd_device_report(char *buf, size_t cap) {
    struct sbuf b = {buf, buf ? cap : 0, 0};
    if (b.cap) buf[0] = '\0';
    char why[512];
    const struct embd_cuda_plugin *p = embd_cuda_load(why, sizeof why);
    struct embd_cuda_choice c;
    embd_cuda_plugin_choice(&c);
    if (!p) {
        sb_printf(&b, "cuda plugin: none loaded: %s\n", c.why);
    } else {
        char dv[32], rv[32];
        version_str(dv, sizeof dv, p->driver_version());
        version_str(rv, sizeof rv, c.runtime_version);
        sb_printf(&b, "cuda plugin: %s (CUDA runtime %s) from %s\n", c.plugin, rv, c.path);
        sb_printf(&b, "cuda plugin chosen: %s\n", c.why);
        sb_printf(&b, "cuda driver: CUDA %s\n", dv);
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
            if (g.pci_bus_id[0]) sb_printf(&b, ", PCI %s", g.pci_bus_id);
            if (g.utilization >= 0) sb_printf(&b, ", utilisation %d%%", g.utilization);
            if (g.temperature_c >= 0) sb_printf(&b, ", %d C", g.temperature_c);
            sb_printf(&b, "\n");
        }
    }
    enum embd_fallback r = embd_cuda_check(NULL, 0, EMBD_DTYPE_FP16, NULL, why, sizeof why);
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
