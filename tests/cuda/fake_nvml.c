/* fake_nvml.c — a stand-in for NVML (libnvidia-ml.so.1) over the stub
 * plugin's devices: it numbers the GPUs in PCI bus order, as NVML does, and
 * reports each one's utilisation as its bus number (0000:82:00.0: 82%) and
 * its temperature as 40 + its NVML index, so a test sees which device a
 * reading came from. Its device list is $EMBD_STUB_DEVICES, sorted. */
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned int gpu, memory;
} fake_utilization;

static char ids[8][32];
static int n_ids;

int nvmlInit_v2(void);
int nvmlInit_v2(void) {
    const char *s = getenv("EMBD_STUB_DEVICES");
    n_ids = 0;
    while (s && *s && n_ids < 8) {
        size_t len = strcspn(s, ",");
        if (len >= sizeof ids[0]) return 1;
        memcpy(ids[n_ids], s, len);
        ids[n_ids][len] = '\0';
        n_ids++;
        s += len + (s[len] == ',');
    }
    for (int i = 1; i < n_ids; i++) /* NVML's order: by PCI bus id */
        for (int j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
            char t[32];
            memcpy(t, ids[j], sizeof t);
            memcpy(ids[j], ids[j - 1], sizeof t);
            memcpy(ids[j - 1], t, sizeof t);
        }
    return 0;
}

/* A handle is the NVML index + 1. */
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **dev);
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **dev) {
    if (index >= (unsigned)n_ids) return 2;
    *dev = (void *)(size_t)(index + 1);
    return 0;
}

int nvmlDeviceGetHandleByPciBusId_v2(const char *bus, void **dev);
int nvmlDeviceGetHandleByPciBusId_v2(const char *bus, void **dev) {
    for (int i = 0; i < n_ids; i++)
        if (!strcmp(ids[i], bus)) {
            *dev = (void *)(size_t)(i + 1);
            return 0;
        }
    return 6; /* NVML_ERROR_NOT_FOUND */
}

int nvmlDeviceGetUtilizationRates(void *dev, fake_utilization *u);
int nvmlDeviceGetUtilizationRates(void *dev, fake_utilization *u) {
    size_t i = (size_t)dev - 1;
    if (i >= (size_t)n_ids) return 2;
    u->gpu = (unsigned)strtoul(ids[i] + 5, NULL, 10); /* the bus number, read as decimal */
    u->memory = 0;
    return 0;
}

int nvmlDeviceGetTemperature(void *dev, int sensor, unsigned int *t);
int nvmlDeviceGetTemperature(void *dev, int sensor, unsigned int *t) {
    size_t i = (size_t)dev - 1;
    if (sensor != 0 || i >= (size_t)n_ids) return 2;
    *t = 40 + (unsigned)i;
    return 0;
}
