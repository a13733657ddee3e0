/* stub_dep.c — the library the broken stub plugin needs and the loader
 * cannot find (stub_plugin.c, STUB_NEEDS_DEP): it stands for a missing
 * libcublasLt. */
int embd_stub_missing_dep(void);
int embd_stub_missing_dep(void) {
    return 42;
}
