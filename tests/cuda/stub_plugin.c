/* stub_plugin.c — a stand-in CUDA plugin for testing the loader's choice on
 * machines without CUDA: it exports the plugin entry with the real ABI,
 * reports the CUDA runtime it was "built with" (STUB_RUNTIME, a compile
 * definition), and runs nothing. $EMBD_STUB_DEVICES lists PCI bus ids
 * ("0000:82:00.0,0000:01:00.0"): as many devices, in that CUDA order, with
 * 16 GiB each; unset, it finds no device. The driver version is the fake
 * libcuda's ($EMBD_FAKE_CUDA_DRIVER_VERSION). Built with STUB_NEEDS_DEP, it
 * also calls into a library the loader cannot find, so that loading it fails
 * as a plugin whose cuBLAS is missing does. */
#include "backend/cuda/plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef STUB_RUNTIME
#error "STUB_RUNTIME must be defined (13000, 11080, ...)"
#endif

#ifdef STUB_NEEDS_DEP
int embd_stub_missing_dep(void);
#endif

static const struct embd_cuda_host *host;

static enum embd_status stub_init(embd_backend **out, const struct embd_model *model,
                                  const embd_backend_params *params) {
    (void)model;
    *out = NULL;
    return host->error(EMBD_ERR_BACKEND,
                       "stub CUDA plugin (runtime %d): no GPU here (memory limit %zu bytes, "
                       "fraction %g)",
                       STUB_RUNTIME, params->gpu_mem_limit_bytes, params->gpu_mem_limit_fraction);
}

static void stub_free(embd_backend *be) {
    (void)be;
}

static enum embd_status stub_embed(embd_backend *be, float *out, const embd_batch *batch,
                                   bool normalize) {
    (void)be, (void)out, (void)batch, (void)normalize;
    return host->error(EMBD_ERR_BACKEND, "stub CUDA plugin runs nothing");
}

static const struct embd_backend_ops stub_ops = {
    .name = "cuda", .init = stub_init, .free = stub_free, .embed = stub_embed};

static int stub_driver_version(void) {
    const char *s = getenv("EMBD_FAKE_CUDA_DRIVER_VERSION");
    return s ? atoi(s) : 0;
}

static int stub_runtime_version(void) {
    return STUB_RUNTIME;
}

/* The i-th PCI bus id of $EMBD_STUB_DEVICES into buf; the count when i < 0. */
static int stub_device(int i, char *buf, size_t cap) {
    const char *s = getenv("EMBD_STUB_DEVICES");
    int n = 0;
    while (s && *s) {
        size_t len = strcspn(s, ",");
        if (n == i) snprintf(buf, cap, "%.*s", (int)len, s);
        n++;
        s += len + (s[len] == ',');
    }
    return n;
}

static int stub_device_count(char *why, size_t cap) {
    int n = stub_device(-1, NULL, 0);
    if (n == 0) snprintf(why, cap, "stub CUDA plugin: no device");
    return n ? n : -1;
}

static int stub_device_info(int index, struct embd_cuda_device_info *o, char *why, size_t cap) {
    memset(o, 0, sizeof *o);
    if (index < 0 || index >= stub_device(-1, NULL, 0)) {
        snprintf(why, cap, "device %d: invalid device ordinal", index);
        return -1;
    }
    stub_device(index, o->pci_bus_id, sizeof o->pci_bus_id);
    snprintf(o->name, sizeof o->name, "Stub GPU %d", index);
    o->major = 9;
    o->minor = 0;
    o->total_mem = o->free_mem = (size_t)16 << 30;
    o->multiprocessors = 132;
    return 0;
}

static const struct embd_cuda_plugin stub = {
    .abi = EMBD_CUDA_ABI,
    .ops = &stub_ops,
    .driver_version = stub_driver_version,
    .runtime_version = stub_runtime_version,
    .device_count = stub_device_count,
    .device_info = stub_device_info,
};

__attribute__((visibility("default"))) const struct embd_cuda_plugin *
embd_cuda_plugin_get(int abi, const struct embd_cuda_host *h);
const struct embd_cuda_plugin *embd_cuda_plugin_get(int abi, const struct embd_cuda_host *h) {
#ifdef STUB_NEEDS_DEP
    if (embd_stub_missing_dep() != 42) return NULL;
#endif
    if (abi != EMBD_CUDA_ABI) return NULL;
    host = h;
    return &stub;
}
