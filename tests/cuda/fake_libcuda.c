/* fake_libcuda.c — a stand-in for the NVIDIA driver library (libcuda.so.1):
 * embd's loader finds "a driver" and goes on to the plugin, so that a
 * machine without a GPU can test the plugin's choice and the missing-plugin
 * reason. cuDriverGetVersion reports $EMBD_FAKE_CUDA_DRIVER_VERSION (12040 =
 * CUDA 12.4) and fails (CUDA_ERROR_NOT_INITIALIZED) when it is unset. */
#include <stdlib.h>

int cuDriverGetVersion(int *version);
int cuDriverGetVersion(int *version) {
    const char *s = getenv("EMBD_FAKE_CUDA_DRIVER_VERSION");
    if (!s || !*s) return 3;
    *version = atoi(s);
    return 0;
}
