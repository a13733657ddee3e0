/* fuzz.c — helpers shared by the fuzz targets (see fuzz.h). */
#include "fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char temp_dir[4096];

static void remove_temp_dir(void) {
    if (!temp_dir[0]) return;
    DIR *d = opendir(temp_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[8192];
            snprintf(p, sizeof p, "%s/%s", temp_dir, e->d_name);
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                /* one level of subdirectories is all the targets make */
                DIR *sd = opendir(p);
                struct dirent *se;
                while (sd && (se = readdir(sd))) {
                    if (!strcmp(se->d_name, ".") || !strcmp(se->d_name, "..")) continue;
                    char q[12288];
                    snprintf(q, sizeof q, "%s/%s", p, se->d_name);
                    unlink(q);
                }
                if (sd) closedir(sd);
                rmdir(p);
            } else {
                unlink(p);
            }
        }
        closedir(d);
    }
    rmdir(temp_dir);
}

const char *fuzz_temp_dir(void) {
    if (temp_dir[0]) return temp_dir;
    const char *bases[] = {getenv("TMPDIR"), "/dev/shm", "/tmp"};
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
        if (!bases[i] || !bases[i][0] || access(bases[i], W_OK)) continue;
        snprintf(temp_dir, sizeof temp_dir, "%s/embd-fuzz-XXXXXX", bases[i]);
        if (mkdtemp(temp_dir)) {
            atexit(remove_temp_dir);
            return temp_dir;
        }
    }
    fprintf(stderr, "embd: fuzz: cannot make a temporary directory\n");
    exit(1);
}

void fuzz_write(const char *dir, const char *name, const void *buf, size_t len) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const uint8_t *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w, len -= (size_t)w;
    }
    close(fd);
}

void fuzz_unlink(const char *dir, const char *name) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

uint8_t fuzz_u8(fuzz_in *in) {
    if (!in->left) return 0;
    in->left--;
    return *in->p++;
}

uint16_t fuzz_u16(fuzz_in *in) {
    uint16_t lo = fuzz_u8(in);
    return (uint16_t)(lo | (uint16_t)fuzz_u8(in) << 8);
}

uint32_t fuzz_u32(fuzz_in *in) {
    uint32_t lo = fuzz_u16(in);
    return lo | (uint32_t)fuzz_u16(in) << 16;
}

const uint8_t *fuzz_bytes(fuzz_in *in, size_t n, size_t *got) {
    if (n > in->left) n = in->left;
    const uint8_t *p = in->p;
    in->p += n;
    in->left -= n;
    *got = n;
    return p;
}
