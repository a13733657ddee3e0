"""embd.TextEmbedding: fastembed's TextEmbedding on the embd engine.

A program written for fastembed runs with only its import changed:

    from embd import TextEmbedding            # was: from fastembed import TextEmbedding
    model = TextEmbedding("BAAI/bge-small-en-v1.5")
    vectors = list(model.embed(["a cat sat on the mat", "fast text embeddings"]))

Same class name, arguments, defaults and generator behaviour (one (D,)
float32 array per document, lazily and in order). The differences: models
are Hugging Face directories with model.safetensors (a local directory, the
Hugging Face cache, or cache_dir; nothing is downloaded), `parallel` starts
no processes (N copies of the model run side by side in this process on the
CPU's threads; several Python threads share one model), and
query_embed/passage_embed apply the model's declared prompts.
"""
import itertools
import logging
import operator
import os
import threading

import numpy as np

from . import _embd, _registry
from ._errors import FileError, UnsupportedError
from ._model import Model
from ._registry import Device, ModelSource, PoolingType

log = logging.getLogger("embd")


class ModelNotFoundError(FileError, ValueError):
    """TextEmbedding's model was found neither as a directory, nor in the
    Hugging Face cache, nor under cache_dir (a ValueError, as fastembed raises
    for a model it does not know)."""


def _wants_cuda(providers, cuda):
    """(device, index) from fastembed's providers / cuda / device_ids arguments:
    device is 'auto', 'cpu' or 'cuda'."""
    if providers is not None:
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
        for p in providers:
            if isinstance(p, (tuple, list)) and p[0] == "CUDAExecutionProvider":
                opts = p[1] if len(p) > 1 and isinstance(p[1], dict) else {}
                return "cuda", int(opts.get("device_id", 0))
        return ("cuda", 0) if "CUDAExecutionProvider" in names else ("cpu", 0)
    if cuda is True or cuda == Device.CUDA or cuda == "cuda":
        return "cuda", 0
    if cuda is False or cuda == Device.CPU or cuda == "cpu":
        return "cpu", 0
    if cuda is None or cuda == Device.AUTO or cuda == "auto":
        return "auto", 0
    raise ValueError(f"cuda must be True, False or a Device ('cpu', 'cuda', 'auto'), not {cuda!r}")


class TextEmbedding:
    """fastembed's TextEmbedding on embd.

    TextEmbedding(model_name="BAAI/bge-small-en-v1.5", cache_dir=None, threads=None,
                  providers=None, cuda=Device.AUTO, device_ids=None, lazy_load=False,
                  **kwargs)

    model_name: as fastembed users write it ("BAAI/bge-small-en-v1.5",
    "sentence-transformers/all-MiniLM-L6-v2"), looked up as a local directory,
    then in the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
    ~/.cache/huggingface/hub), then under cache_dir; or any model directory.
    providers=["CUDAExecutionProvider"] or cuda=True ask for the GPU (device_ids
    picks it, or several: a context on each behind one scheduler, which hands
    each batch to the least busy); without a usable GPU the model runs on the CPU and the reason is
    logged (logger "embd", warning). cuda=Device.AUTO (the default, as in
    fastembed 0.9) takes a usable GPU, else the CPU. threads: CPU threads.
    kwargs: specific_model_path (a model directory to load instead), dtype
    ('auto', 'fp32', 'fp16', 'bf16', 'int8'), cache (the embedding cache, as
    embd.Model), max_batch_tokens, query_prompt / passage_prompt (override the
    model's). fastembed's other keyword arguments (local_files_only,
    enable_cpu_mem_arena, ...) are accepted and have no effect.
    """

    _for_reranker = False  # TextCrossEncoder's loader: a cross-encoder is what it wants

    def __init__(self, model_name="BAAI/bge-small-en-v1.5", cache_dir=None, threads=None,
                 providers=None, cuda=Device.AUTO, device_ids=None, lazy_load=False, **kwargs):
        if not isinstance(model_name, str):
            raise TypeError(f"model_name must be str, not {type(model_name).__name__}")
        self.model_name = model_name
        self.cache_dir = cache_dir
        self.threads = threads
        self.providers = providers
        self.cuda = cuda
        self.device_ids = device_ids
        self.lazy_load = lazy_load
        self._entry = _registry.find(model_name)
        self._device, index = _wants_cuda(providers, cuda)
        if device_ids:
            index = int(device_ids[0])
        self._device_index = index
        self._kwargs = kwargs
        self._path = self._find_path(kwargs.get("specific_model_path"))
        self._model = None
        self._par = None  # (n, Model): the replicated model of embed(parallel=n)
        self._par_lock = threading.Lock()
        self._embedding_size = None
        if not lazy_load:
            self._load()

    # -- loading ---------------------------------------------------------------
    def _find_path(self, specific):
        if specific is not None:
            return os.fspath(specific)
        names = [self.model_name]
        if self._entry:  # fastembed matches names in any case; the cache's folders do not
            names += [self._entry.desc.model, self._entry.desc.sources.hf]
        return _resolve_first(names, self.cache_dir)

    def _model_args(self):
        return dict(threads=self.threads, dtype=self._kwargs.get("dtype", "auto"),
                    cache=self._kwargs.get("cache", "mem"),
                    max_batch_tokens=self._kwargs.get("max_batch_tokens", 0))

    def _load(self):
        if self._model is not None:
            return self._model
        device = self._device
        # several device_ids: a context on each behind one scheduler; with
        # Device.AUTO they pick the GPU too, as fastembed's device_ids[0] does
        if device == "cuda" or (device == "auto" and (self.device_ids or self._device_index)):
            ids = [int(i) for i in self.device_ids] if self.device_ids else [self._device_index]
            device = "cuda:" + ",".join(str(i) for i in ids)
        args = self._model_args()
        try:
            model = Model(self._path, device=device, **args)
        except FileError as e:
            if isinstance(e, ModelNotFoundError):
                raise
            # a folder that holds no model (or cannot be read): a ValueError
            # too, as fastembed raises for a model it cannot use
            raise ModelNotFoundError(e.status, e.message) from None
        except UnsupportedError as e:
            if self._device == "cpu":
                raise
            if self._device == "cuda":
                # As the engine does for device auto: the CPU, and say why.
                log.warning("embd: CUDA asked for but not usable, running on the CPU: %s",
                            e.message)
            else:
                log.info("embd: no usable GPU for device_ids=%s, running on the CPU: %s",
                         self.device_ids, e.message)
            model = Model(self._path, device="cpu", **args)
        if model.is_reranker and not self._for_reranker:
            model.close()
            raise ValueError(f"{self.model_name} ({self._path}) is a cross-encoder: it scores "
                             "pairs and makes no embeddings; use embd.TextCrossEncoder")
        self._check(model)
        prompts = dict(model.prompts) or dict(self._entry.prompts if self._entry else {})
        for key in ("query", "passage"):
            if f"{key}_prompt" in self._kwargs:
                prompts[key] = self._kwargs[f"{key}_prompt"]
        if "passage" not in prompts and "document" in prompts:
            prompts["passage"] = prompts["document"]
        self._prompts = prompts
        self._model = model
        self._embedding_size = model.dimension
        return model

    def _check(self, model):
        """The loaded model against a registration: dimension, and pooling for
        add_custom_model's (embd reads pooling from the model directory)."""
        e = self._entry
        if e is None:
            self._normalize = None
            return
        if e.desc.dim is not None and e.desc.dim != model.dimension:
            raise ValueError(f"model {self.model_name}: registered with dim {e.desc.dim}, but "
                             f"{self._path} has dimension {model.dimension}")
        if e.pooling is not None and e.pooling.upper() != model.pooling.upper():
            raise ValueError(f"model {self.model_name}: registered with {e.pooling.value} pooling, "
                             f"but {self._path} declares {model.pooling} (1_Pooling/config.json)")
        self._normalize = e.normalization

    @property
    def model(self):
        """The embd.Model underneath (loaded now when lazy_load)."""
        return self._load()

    # -- fastembed's API -------------------------------------------------------
    @classmethod
    def list_supported_models(cls):
        """The models known by name: dicts with fastembed's keys (model, dim,
        description, license, size_in_GB, sources, model_file, additional_files,
        tasks)."""
        return [e.desc.asdict() for e in _registry.entries()]

    @classmethod
    def add_custom_model(cls, model, pooling, normalization, sources, dim,
                         model_file="onnx/model.onnx", description="", license="",
                         size_in_gb=0.0, additional_files=None, output_name=None):
        """Registers a model by name, as fastembed's add_custom_model. embd reads
        the model's safetensors directory (sources.hf in the Hugging Face cache,
        or specific_model_path): pooling must match its 1_Pooling/config.json
        (CLS or MEAN); normalization is applied as registered."""
        if _registry.find(model) is not None:
            raise ValueError(f"Model {model} is already registered in TextEmbedding, if you still "
                             f"want to add this model, please use another model name")
        pooling = PoolingType(getattr(pooling, "value", pooling))
        if pooling not in (PoolingType.CLS, PoolingType.MEAN):
            raise ValueError(f"embd runs CLS and MEAN pooling, not {pooling.value}")
        src = ModelSource(hf=getattr(sources, "hf", None), url=getattr(sources, "url", None))
        desc = _registry.DenseModelDescription(
            model=model, sources=src, model_file=model_file, description=description,
            license=license, size_in_GB=size_in_gb, additional_files=additional_files or [],
            dim=dim)
        _registry.add(_registry.Entry(desc, {}, pooling, bool(normalization)))

    @classmethod
    def get_embedding_size(cls, model_name):
        """The dimension of a model known by name (ValueError otherwise)."""
        e = _registry.find(model_name)
        if e is None or e.desc.dim is None:
            names = [x.desc.model for x in _registry.entries()]
            raise ValueError(f"Embedding size for model {model_name} was None. "
                             f"Available model names: {names}")
        return e.desc.dim

    @property
    def embedding_size(self):
        """The dimension of this model."""
        if self._embedding_size is None:
            if self._entry is not None and self._entry.desc.dim is not None:
                self._embedding_size = self._entry.desc.dim
            else:
                self._embedding_size = self._load().dimension
        return self._embedding_size

    def embed(self, documents, batch_size=256, parallel=None, **kwargs):
        """Embeds documents (a str, or any iterable of str, a generator of
        unknown length included): yields one (D,) float32 array per document,
        lazily and in order, reading batch_size documents at a time (memory is
        bounded whatever the input length). parallel, as in fastembed: None
        or 1 embeds with the model as loaded (every core, one batch at a
        time); N > 1 runs N copies of the model side by side on the CPU, the
        threads shared out among them (each copy holds its own packed
        weights; made on first use and kept for the next call with the same
        N), reading N * batch_size documents at a time; 0 one copy per core.
        It pays where the CPU is shared with other work; the vectors are the
        same. No process is started. On a GPU parallel is ignored."""
        model = self._parallel_model(parallel)
        yield from self._embed(documents, batch_size, None, model)

    def _parallel_model(self, parallel):
        """The Model that embed(parallel=...) runs: the loaded one, or N
        replicas of it on the CPU."""
        if parallel is not None:
            parallel = _as_int(parallel)
            if parallel is None or parallel < 0:
                raise ValueError(f"parallel must be None or an int >= 0, not {parallel!r}")
        model = self._load()
        # 0: every CPU the process may use (affinity mask, cgroup quota)
        n = _embd.cpu_count() if parallel == 0 else (parallel or 1)
        n = min(n, 64)  # the scheduler's context limit (EMBD_SCHED_MAX_CTX)
        if n == 1:
            return model
        if model.device != "cpu":
            log.info("embd: parallel=%s ignored: the model runs on %s", parallel, model.device)
            return model
        with self._par_lock:
            if self._par is None or self._par[0] != n:
                self._par = None  # the old replicas go before the new ones are made
                self._par = (n, Model(self._path, device="cpu", replicas=n, **self._model_args()))
            return self._par[1]

    def query_embed(self, query, **kwargs):
        """Embeds queries (a str or an iterable of str) with the model's query
        prompt, if it has one (bge: "Represent this sentence for searching
        relevant passages: ", e5: "query: ")."""
        yield from self._embed(query, kwargs.get("batch_size", 256), "query",
                               self._parallel_model(kwargs.get("parallel")))

    def passage_embed(self, texts, **kwargs):
        """Embeds passages with the model's passage prompt, if it has one (e5:
        "passage: "; none for bge)."""
        yield from self._embed(texts, kwargs.get("batch_size", 256), "passage",
                               self._parallel_model(kwargs.get("parallel")))

    def token_count(self, texts, batch_size=1024, **kwargs):
        """Tokens of the texts as the model sees them (after truncation, [CLS]
        and [SEP] included), summed."""
        model = self._load()
        if isinstance(texts, str):
            texts = [texts]
        return sum(len(model._engine().tokenize(t, i)) for i, t in enumerate(_iter_texts(texts)))

    # -- the loop --------------------------------------------------------------
    def _embed(self, documents, batch_size, prompt_key, model=None):
        batch_size = _check_batch_size(batch_size)
        if isinstance(documents, str):
            documents = [documents]
        it = _iter_texts(documents)
        if model is None:
            model = self._load()
        elif model is not self._model:
            batch_size *= model.replicas  # work for every replica in each call
        prefix = self._prompts.get(prompt_key) if prompt_key else None
        norm = -1 if self._normalize is None else (1 if self._normalize else 0)
        eng_dim = model.dimension
        base = 0
        while True:
            batch = list(itertools.islice(it, batch_size))
            if not batch:
                return
            out = np.empty((len(batch), eng_dim), dtype=np.float32)
            model._engine().embed_into(batch, out, norm, True, prefix or None, None, base)
            base += len(batch)
            yield from out


def _resolve_first(names, cache_dir):
    """The directory of the first of names found (embd_model_resolve), else
    ModelNotFoundError with the first name's message."""
    from . import _embd
    first = None
    cache_dir = None if cache_dir is None else os.fspath(cache_dir)
    tried = set()
    for name in names:
        if not name or name in tried:
            continue
        tried.add(name)
        try:
            return _embd.resolve(name, cache_dir)
        except FileError as e:
            first = first or e
    raise ModelNotFoundError(first.status, first.message) from None


def _as_int(x):
    """x as an int when it is one (numpy's integers included, as
    fastembed's islice takes them), else None; never a bool."""
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


def _check_batch_size(batch_size):
    n = _as_int(batch_size)
    if n is None or n < 1:
        raise ValueError(f"batch_size must be an int >= 1, not {batch_size!r}")
    return n


def _iter_texts(documents):
    if isinstance(documents, (bytes, bytearray, memoryview)):
        raise TypeError(f"documents must be str or an iterable of str, not "
                        f"{type(documents).__name__}: decode it first")
    if isinstance(documents, dict):
        raise TypeError("documents must be str or an iterable of str, not dict")
    try:
        return iter(documents)
    except TypeError:
        raise TypeError(f"documents must be str or an iterable of str, not "
                        f"{type(documents).__name__}") from None
