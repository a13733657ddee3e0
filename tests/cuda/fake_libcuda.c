/* fake_libcuda.c — an empty stand-in for the NVIDIA driver library
 * (libcuda.so.1): embd's loader finds "a driver" and goes on to the plugin,
 * so that a machine without a GPU can test the missing-plugin reason. */
int embd_fake_libcuda(void);
int embd_fake_libcuda(void) {
    return 0;
}
