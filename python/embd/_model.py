"""embd.Model: the native API over one engine (model + context + scheduler)."""
import json
import os
import threading

import numpy as np

from . import _embd
from ._errors import InvalidArgumentError

_DEVICES = {"auto": 0, "cpu": 1, "cuda": 2}
_DTYPES = {"auto": 0, "fp32": 1, "fp16": 2, "bf16": 3, "int8": 4}
_MEM_CACHE = 64 << 20


def _parse_device(device):
    """'auto', 'cpu', 'cuda', 'cuda:N' or 'cuda:N,M,...' -> (device, index,
    indices: None, or the GPU ordinals of several, each a context behind one
    scheduler; a GPU named twice gets two)."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a str ('auto', 'cpu', 'cuda', 'cuda:N', 'cuda:N,M'), "
                        f"not {type(device).__name__}")
    name, _, index = device.partition(":")
    parts = index.split(",") if index else []
    if (name not in _DEVICES or (parts and name != "cuda")
            or not all(p.isdigit() and len(p) <= 3 for p in parts) or len(parts) > 64):
        raise ValueError(f"device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or "
                         f"'cuda:N,M,...' (at most 64)")
    ids = [int(p) for p in parts]
    return _DEVICES[name], (ids[0] if ids else 0), (ids if len(ids) > 1 else None)


def _parse_cache(cache):
    """cache= -> (bytes of the in-memory cache, directory of the disk cache or None)."""
    if cache is None or cache is False or cache == "off":
        return 0, None
    if cache is True or cache == "mem":
        return _MEM_CACHE, None
    if isinstance(cache, bool):
        raise AssertionError("unreachable")
    if isinstance(cache, int):
        if cache < 0:
            raise ValueError("cache must be 'mem', 'off', None, a size in bytes >= 0 or a directory")
        return cache, None
    if isinstance(cache, (str, os.PathLike)):
        return _MEM_CACHE, os.fspath(cache)
    raise TypeError(f"cache must be 'mem', 'off', None, a size in bytes or a directory, not "
                    f"{type(cache).__name__}")


def _as_texts(texts):
    """A list or tuple of the caller's items (checked one by one in C)."""
    if isinstance(texts, (list, tuple)):
        return texts
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise TypeError(f"texts must be str or an iterable of str, not {type(texts).__name__}: "
                        "decode it first")
    if isinstance(texts, dict):
        raise TypeError("texts must be str or an iterable of str, not dict")
    try:
        return list(texts)
    except TypeError:
        raise TypeError(f"texts must be str or an iterable of str, not "
                        f"{type(texts).__name__}") from None


def read_prompts(model_dir):
    """The prompts a sentence-transformers model declares
    (config_sentence_transformers.json "prompts", e.g. {"query": "query: "}), or {}."""
    path = os.path.join(model_dir, "config_sentence_transformers.json")
    try:
        with open(path, encoding="utf-8") as f:
            prompts = json.load(f).get("prompts") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in prompts.items() if isinstance(k, str) and isinstance(v, str)}


class Model:
    """An embedding model on the embd engine.

    Model(path_or_name, device="auto", dtype="auto", threads=None, cache="mem", *,
          cache_dir=None, max_batch_tokens=0, max_seq_length=0, normalize=True,
          replicas=1)

    path_or_name: a Hugging Face model directory, or a name (ORG/NAME) found in
    the Hugging Face cache or under cache_dir (embd_model_resolve). device:
    'auto' (a usable GPU, else the CPU with one log line saying why), 'cpu',
    'cuda' or 'cuda:N' (an error when no usable GPU), or 'cuda:N,M,...': a
    context on each GPU behind one scheduler, which hands each batch to the
    least busy (a GPU named twice gets two contexts; with several, a disk
    cache is refused). dtype: 'auto' (fp32 on
    the CPU, fp16 on a GPU), 'fp32', 'fp16' (GPU), 'bf16' (GPU, or a CPU with
    AVX512_BF16), 'int8' (a CPU with AVX512_VNNI or AVX-VNNI). threads: CPU threads
    (None: every CPU the process may use, embd.cpu_count()). cache: the
    embedding cache: 'mem' (64 MiB in memory), 'off' or None, a size in
    bytes, or a directory (an LMDB disk cache shared by processes, plus 64
    MiB in memory). replicas: that many contexts of the
    model on the device behind one scheduler (on the CPU the threads are
    shared out among them, one at least each; each holds its own packed
    weights): batches run side by side, which pays on a CPU shared with
    other work, where one many-thread context waits on its slowest thread.

    One Model may be used by many threads at once: their texts are batched
    together by the engine's scheduler, and the GIL is released while the
    engine works. After os.fork() the child reloads the model on first use.
    """

    def __init__(self, path_or_name, device="auto", dtype="auto", threads=None, cache="mem", *,
                 cache_dir=None, max_batch_tokens=0, max_seq_length=0, normalize=True,
                 replicas=1):
        if not isinstance(path_or_name, (str, os.PathLike)):
            raise TypeError(f"path_or_name must be str or a path, not {type(path_or_name).__name__}")
        dev, index, indices = _parse_device(device)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r}: use 'auto', 'fp32', 'fp16', 'bf16' or 'int8'")
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise ValueError(f"threads must be None or an int >= 0, not {threads!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be an int >= 1, not {replicas!r}")
        if replicas > 1 and indices:
            raise ValueError("replicas > 1 does not go with several devices (device='cuda:N,M')")
        cache_bytes, disk = _parse_cache(cache)
        self.name = os.fspath(path_or_name)
        self.path = _embd.resolve(self.name, None if cache_dir is None else os.fspath(cache_dir))
        self._args = dict(device=dev, device_index=index, dtype=_DTYPES[dtype],
                          threads=threads or 0, max_batch_tokens=int(max_batch_tokens),
                          cache_bytes=cache_bytes, cache_dir=disk, normalize=bool(normalize),
                          max_seq_length=int(max_seq_length), device_indices=indices,
                          replicas=replicas)
        self.replicas = replicas
        self._lock = threading.Lock()
        self._eng = _embd.Engine(self.path, **self._args)
        self._info = self._eng.info()
        self.prompts = read_prompts(self.path)

    # -- the engine, reloaded in a forked child --------------------------------
    def _engine(self):
        eng = self._eng
        if eng.forked:
            with self._lock:
                if self._eng.forked:
                    self._eng = _embd.Engine(self.path, **self._args)
                eng = self._eng
        return eng

    # -- embedding -------------------------------------------------------------
    def embed(self, texts, *, normalize=None, truncate=True, prefix=None, return_tokens=False,
              prompt_name=None, dimensions=None):
        """Embeds texts: a str gives a (D,) float32 array, a list (or any
        iterable) of str an (n, D) one, in order. normalize: None as the model
        (L2 when it ends in a Normalize module), True or False. truncate: cut
        inputs longer than the model takes (True, as sentence-transformers
        does) or raise embd.TooLongError naming the input. prefix: prepended to
        every text ("query: "). return_tokens: also return each input's token
        count (uint64 (n,) or an int for a str). prompt_name: the model's
        declared prompt of that name as the prefix (not with prefix).
        dimensions: Matryoshka: the first N components, L2-normalised again
        when the vectors are normalised: (n, N)."""
        if prompt_name is not None:
            if prefix is not None:
                raise ValueError("give prefix or prompt_name, not both")
            if prompt_name not in self.prompts:
                raise ValueError(f"the model declares no prompt {prompt_name!r} "
                                 f"(its prompts: {sorted(self.prompts) or 'none'})")
            prefix = self.prompts[prompt_name]
        dim = self.dimension
        if dimensions is not None:
            if isinstance(dimensions, bool) or not isinstance(dimensions, int) or \
                    not 1 <= dimensions <= self.dimension:
                raise ValueError(f"dimensions must be an int in [1, {self.dimension}], not "
                                 f"{dimensions!r}")
            dim = dimensions
        single = isinstance(texts, str)
        items = [texts] if single else _as_texts(texts)
        n = len(items)
        out = np.empty((n, dim), dtype=np.float32)
        counts = np.empty(n, dtype=np.uint64) if return_tokens else None
        norm = -1 if normalize is None else (1 if normalize else 0)
        self._engine().embed_into(items, out, norm, bool(truncate), prefix, counts, 0,
                                  dim if dimensions is not None else 0)
        if single:
            out = out[0]
            if return_tokens:
                return out, int(counts[0])
        return (out, counts) if return_tokens else out

    def rerank(self, query, documents, *, raw_scores=False, truncate=True):
        """Scores documents against query with a cross-encoder (a model for
        which is_reranker is True): a float32 (n,) array, in input order
        (higher is more relevant). raw_scores: the classifier's logits rather
        than the activation the model's config names (sigmoid for most). truncate: cut
        a pair longer than the model takes (True, as sentence-transformers'
        CrossEncoder does) or raise embd.TooLongError naming the document.
        Documents of calls from several threads are batched together."""
        if not isinstance(query, str):
            raise TypeError(f"query must be str, not {type(query).__name__}")
        items = [documents] if isinstance(documents, str) else _as_texts(documents)
        out = np.empty(len(items), dtype=np.float32)
        self._engine().rerank_into(query, items, out, bool(raw_scores), bool(truncate))
        return out

    def tokenize(self, text):
        """The token ids of a str ([CLS] ... [SEP], truncated as the model
        does), or a list of those for a list of str."""
        eng = self._engine()
        if isinstance(text, str):
            return eng.tokenize(text)
        return [eng.tokenize(t, i) for i, t in enumerate(_as_texts(text))]

    def tokenize_pair(self, query, document):
        """The ids and token type ids of a (query, document) pair as a
        cross-encoder sees it ([CLS] query [SEP] document [SEP], cut with
        Hugging Face's longest_first to max_tokens): (ids, type_ids)."""
        return self._engine().tokenize_pair(query, document)

    def count_tokens(self, text):
        """Tokens of a str without truncation ([CLS] and [SEP] included), or a
        list of counts for a list of str."""
        eng = self._engine()
        if isinstance(text, str):
            return eng.count_tokens(text)
        return [eng.count_tokens(t, i) for i, t in enumerate(_as_texts(text))]

    # -- what it is and how it runs ------------------------------------------
    @property
    def dimension(self):
        """D, the embedding dimension."""
        return self._info["dim"]

    @property
    def max_tokens(self):
        """Tokens per input after truncation, [CLS] and [SEP] included."""
        return self._info["max_tokens"]

    @property
    def is_reranker(self):
        """True for a cross-encoder (BertForSequenceClassification): it scores
        pairs with rerank() and does not embed."""
        return self._info["reranker"]

    @property
    def pooling(self):
        return self._info["pooling"]

    @property
    def normalizes(self):
        return self._info["normalizes"]

    @property
    def device(self):
        """'cpu' or 'cuda' (now: 'cpu' after the GPU failed)."""
        return self._engine().info()["device"]

    @property
    def dtype(self):
        return self._engine().info()["dtype"]

    @property
    def fallback(self):
        """Why the model runs on the CPU rather than a GPU: (label, message),
        ('none', '') when it does not."""
        info = self._engine().info()
        return info["fallback"], info["fallback_message"]

    def metrics(self):
        """The engine's metrics in the Prometheus text format."""
        return self._engine().metrics()

    def stats(self):
        """Counters since the model was loaded: inputs, tokens, batches, times, cache."""
        return self._engine().stats()

    def close(self):
        """Frees the engine now (else when the Model is garbage-collected)."""
        self._eng.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._eng.closed else self._info["device"]
        return f"embd.Model({self.name!r}, dim={self.dimension}, {state})"

    def tokenize_offsets(self, text, add_special_tokens=True):
        """The ids of a str as tokenize() gives them (add_special_tokens
        False: without [CLS] and [SEP]), and each token's (start, stop) in
        characters of text, as Hugging Face's Encoding.offsets: text[start:stop]
        is what the token came from; (0, 0) for [CLS] and [SEP]; a word's
        [UNK] spans the word. Returns (ids, offsets). One known difference:
        RobertaProcessing's trim_offsets (MPNet, RoBERTa) moves an added
        token's offsets past the whitespace its lstrip took in as the Rust
        crate does, by characters counted on bytes (what TEI and embd serve
        report), where Python's binding counts on characters: after two or
        more whitespace characters one of which is not ASCII
        ("\u3000\u3000<mask>") the start differs by one."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        return self._engine().tokenize_offsets(text, bool(add_special_tokens))

    def decode(self, ids, skip_special_tokens=True):
        """The text of a sequence of ids, exactly as Hugging Face's
        tokenizer.decode(ids, skip_special_tokens) gives it with the model's
        tokenizer.json (WordPiece: "##" pieces joined, clean_up_tokenization).
        An id that is not a token raises ValueError naming its position."""
        return self._engine().decode(ids, bool(skip_special_tokens))
