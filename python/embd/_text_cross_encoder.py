"""embd.TextCrossEncoder: fastembed's TextCrossEncoder on the embd engine.

    from embd import TextCrossEncoder   # was: from fastembed.rerank.cross_encoder import ...
    encoder = TextCrossEncoder("Xenova/ms-marco-MiniLM-L-6-v2")
    scores = list(encoder.rerank("what is a cat?", ["a cat is a small feline", "dogs bark"]))

Same class name, arguments and generator behaviour: one float per document,
lazily and in order. As fastembed, the scores are the model's raw logits
(pass raw_scores=False for the activation the model's config names, as
sentence-transformers' CrossEncoder.predict). Models are Hugging Face
directories with model.safetensors: a local directory, the Hugging Face
cache, or cache_dir; nothing is downloaded. embd runs BERT cross-encoders
(BertForSequenceClassification, one label).
"""
import dataclasses
import itertools
import threading

import numpy as np

from ._registry import ModelSource
from ._text_embedding import (TextEmbedding, _check_batch_size, _iter_texts, _resolve_first,
                              _wants_cuda)

# fastembed's names of the cross-encoders it lists that embd runs (BERT and
# XLM-RoBERTa), and where the same weights are on the Hugging Face hub (what
# users have in their cache).
_KNOWN = [
    dict(model="Xenova/ms-marco-MiniLM-L-6-v2", hf="cross-encoder/ms-marco-MiniLM-L-6-v2",
         description="MiniLM-L-6-v2 model optimized for re-ranking tasks.", license="apache-2.0",
         size_in_GB=0.08),
    dict(model="Xenova/ms-marco-MiniLM-L-12-v2", hf="cross-encoder/ms-marco-MiniLM-L-12-v2",
         description="MiniLM-L-12-v2 model optimized for re-ranking tasks.", license="apache-2.0",
         size_in_GB=0.12),
    # XLM-RoBERTa cross-encoders (multilingual)
    dict(model="BAAI/bge-reranker-base", hf="BAAI/bge-reranker-base",
         description="BGE reranker base model for cross-encoder re-ranking.", license="mit",
         size_in_GB=1.04),
    dict(model="cross-encoder/mmarco-mMiniLMv2-L12-H384-v1",
         hf="cross-encoder/mmarco-mMiniLMv2-L12-H384-v1",
         description="Multilingual MiniLM-L12 cross-encoder trained on mMARCO.",
         license="apache-2.0", size_in_GB=0.47),
]


def _known(name):
    for k in _KNOWN:
        if name.lower() in (k["model"].lower(), (k["hf"] or "").lower()):
            return k
    return None


class TextCrossEncoder:
    """fastembed's TextCrossEncoder on embd.

    TextCrossEncoder(model_name, cache_dir=None, threads=None, providers=None,
                     cuda=Device.AUTO, device_ids=None, lazy_load=False, **kwargs)

    model_name: fastembed's name ("Xenova/ms-marco-MiniLM-L-6-v2"), the hub's
    ("cross-encoder/ms-marco-MiniLM-L-6-v2"), or a model directory. The other
    arguments as embd.TextEmbedding (providers/cuda/device_ids pick the GPU;
    kwargs: specific_model_path, dtype, max_batch_tokens, raw_scores=True).
    """

    def __init__(self, model_name, cache_dir=None, threads=None, providers=None, cuda=None,
                 device_ids=None, lazy_load=False, **kwargs):
        if not isinstance(model_name, str):
            raise TypeError(f"model_name must be str, not {type(model_name).__name__}")
        self.model_name = model_name
        self.cache_dir = cache_dir
        self.threads = threads
        self._raw = bool(kwargs.pop("raw_scores", True))
        # The loading rules (names, the GPU, the CPU fallback) are TextEmbedding's.
        self._loader = TextEmbedding.__new__(TextEmbedding)
        self._loader._for_reranker = True
        self._loader.model_name = model_name
        self._loader.cache_dir = cache_dir
        self._loader.threads = threads
        self._loader.device_ids = device_ids
        self._loader._entry = None
        self._loader._device, index = _wants_cuda(providers, cuda)
        self._loader._device_index = int(device_ids[0]) if device_ids else index
        self._loader._kwargs = dict(kwargs, cache="off")
        self._loader._model = None
        self._loader._par = None  # rerank_pairs(parallel=N): TextEmbedding's replicas
        self._loader._par_lock = threading.Lock()
        self._path = self._find_path(kwargs.get("specific_model_path"))
        self._loader._path = self._path
        self._model = None
        if not lazy_load:
            self._load()

    def _find_path(self, specific):
        if specific is not None:
            return str(specific)
        known = _known(self.model_name)
        # fastembed matches names in any case; the cache's folders do not
        return _resolve_first([self.model_name] + ([known["model"], known["hf"]] if known else []),
                              self.cache_dir)

    def _load(self):
        if self._model is None:
            model = self._loader._load()
            if not model.is_reranker:
                raise ValueError(f"{self.model_name} ({self._path}) is not a cross-encoder "
                                 "(BertForSequenceClassification); use embd.TextEmbedding")
            self._model = model
        return self._model

    @property
    def model(self):
        """The embd.Model underneath (loaded now when lazy_load)."""
        return self._load()

    @classmethod
    def list_supported_models(cls):
        """The cross-encoders known by name (add_custom_model's too), as
        fastembed's dicts (model, sources, model_file, description, license,
        size_in_GB, additional_files)."""
        return [dict(model=k["model"],
                     sources=dataclasses.asdict(k.get("sources") or ModelSource(hf=k["hf"])),
                     model_file=k.get("model_file", "model.safetensors"),
                     description=k["description"], license=k["license"],
                     size_in_GB=k["size_in_GB"],
                     additional_files=list(k.get("additional_files", [])))
                for k in _KNOWN]

    @classmethod
    def add_custom_model(cls, model, sources, model_file="onnx/model.onnx", description="",
                         license="", size_in_gb=0.0, additional_files=None):
        """Registers a cross-encoder by name, as fastembed's: the name then
        finds sources.hf in the Hugging Face cache (or cache_dir); embd reads
        its safetensors, whatever model_file says."""
        if any(model.lower() == k["model"].lower() for k in _KNOWN):
            raise ValueError(f"Model {model} is already registered in CrossEncoderModel, if you "
                             f"still want to add this model, please use another model name")
        src = ModelSource(hf=getattr(sources, "hf", None), url=getattr(sources, "url", None))
        _KNOWN.append(dict(model=model, hf=src.hf, sources=src, model_file=model_file,
                           description=description, license=license, size_in_GB=size_in_gb,
                           additional_files=list(additional_files or [])))

    def token_count(self, pairs, batch_size=1024, **kwargs):
        """Tokens of the (query, document) pairs as the model sees them
        ([CLS] query [SEP] document [SEP], cut to the model's length), summed."""
        _check_batch_size(batch_size)
        eng = self._load()._engine
        total = 0
        for i, p in enumerate(_pair_list(pairs)):
            q, d = _pair(p, i)
            total += len(eng().tokenize_pair(q, d)[0])
        return total

    def rerank(self, query, documents, batch_size=64, **kwargs):
        """Scores documents (a str or any iterable of str, a generator
        included) against query: yields one float per document, lazily and in
        order, batch_size documents at a time."""
        if not isinstance(query, str):
            raise TypeError(f"query must be str, not {type(query).__name__}")
        if isinstance(documents, str):
            documents = [documents]
        yield from self._pairs(((query, d) for d in _iter_texts(documents)), batch_size)

    def rerank_pairs(self, pairs, batch_size=64, parallel=None, **kwargs):
        """Scores (query, document) pairs: yields one float per pair, in
        order. parallel, as TextEmbedding.embed's: N > 1 runs N one-thread
        replicas of the model side by side on the CPU (0: one per core), the
        same scores."""
        self._load()
        model = self._loader._parallel_model(parallel)
        yield from self._pairs(iter(_pair_list(pairs)), batch_size, model)

    def _pairs(self, it, batch_size, model=None):
        batch_size = _check_batch_size(batch_size)
        if model is None or model is self._load():
            model = self._load()
        else:
            batch_size *= model.replicas  # work for every replica in each call
        eng = model._engine
        base = 0
        while True:
            batch = list(itertools.islice(it, batch_size))
            if not batch:
                return
            out = np.empty(len(batch), dtype=np.float32)
            # consecutive pairs with one query go to the engine together
            i = 0
            while i < len(batch):
                q = _pair(batch[i], base + i)[0]
                j = i + 1
                while j < len(batch) and isinstance(batch[j], (tuple, list)) and \
                        len(batch[j]) == 2 and batch[j][0] == q:
                    j += 1
                eng().rerank_into(q, [p[1] for p in batch[i:j]], out[i:j], self._raw, True,
                                  base + i)
                i = j
            base += len(batch)
            yield from (float(x) for x in out)


def _pair_list(pairs):
    """pairs as rerank_pairs reads them: one (query, document) tuple alone is
    a list of one, as fastembed takes it."""
    if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
        return [pairs]
    if isinstance(pairs, (str, bytes, dict)):
        raise TypeError(f"pairs must be an iterable of (query, document) pairs, not "
                        f"{type(pairs).__name__}")
    return pairs


def _pair(p, index):
    """p as (query, document), or a TypeError naming pair `index`."""
    if not isinstance(p, (tuple, list)) or len(p) != 2 or not isinstance(p[0], str):
        raise TypeError(f"pair {index} must be a (query, document) pair of str")
    return p[0], p[1]
