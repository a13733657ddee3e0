/* hub.h — Hugging Face hub names and the cache folder huggingface_hub uses,
 * shared by the model resolver (resolve.c) and `embd pull` (src/cli). */
#ifndef EMBD_UTIL_HUB_H
#define EMBD_UTIL_HUB_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s[0..n) is a repository id: NAME or ORG/NAME, each part of
 * [A-Za-z0-9._-], not starting with '.' or '-' and without "..", so that it
 * never reaches outside the folder it is joined to. */
bool embd_hub_repo_id_ok(const char *s, size_t n);

/* Whether s is a git revision as the hub takes it (a branch, a tag, a commit,
 * "refs/pr/1"): [A-Za-z0-9._-/], no empty part, no part starting with '.',
 * at most 200 bytes. */
bool embd_hub_revision_ok(const char *s);

/* Splits a model name "ORG/NAME[@REVISION]": *repo_len is the length of the
 * repository id and *rev the revision after '@' (NULL without one). False
 * when name is not such a name. */
bool embd_hub_name_split(const char *name, size_t *repo_len, const char **rev);

/* The Hugging Face cache folder as huggingface_hub finds it: HF_HUB_CACHE
 * (or the older HUGGINGFACE_HUB_CACHE), else HF_HOME/hub, else
 * XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. A new
 * string (embd_free it), or NULL: no HOME, or out of memory (*oom set). */
char *embd_hub_cache_dir(bool *oom);

#endif
