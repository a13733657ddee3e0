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
import itertools
import threading

import numpy as np

from ._text_embedding import TextEmbedding, _iter_texts, _resolve_first, _wants_cuda

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
        if name.lower() in (k["model"].lower(), k["hf"].lower()):
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
        self._loader.model_name = model_name
        self._loader.cache_dir = cache_dir
        self._loader.threads = threads
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
        return _resolve_first([self.model_name] + ([known["hf"]] if known else []),
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
        """The cross-encoders known by name, with fastembed's keys."""
        return [dict(model=k["model"], sources={"hf": k["hf"]}, description=k["description"],
                     license=k["license"], size_in_GB=k["size_in_GB"],
                     model_file="model.safetensors") for k in _KNOWN]

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
        yield from self._pairs(iter(pairs), batch_size, model)

    def _pairs(self, it, batch_size, model=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, not {batch_size!r}")
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
                q = batch[i][0] if isinstance(batch[i], (tuple, list)) and len(batch[i]) == 2 \
                    else None
                if not isinstance(q, str):
                    raise TypeError(f"pair {base + i} must be a (query, document) pair of str")
                j = i + 1
                while j < len(batch) and isinstance(batch[j], (tuple, list)) and \
                        len(batch[j]) == 2 and batch[j][0] == q:
                    j += 1
                eng().rerank_into(q, [p[1] for p in batch[i:j]], out[i:j], self._raw, True,
                                  base + i)
                i = j
            base += len(batch)
            yield from (float(x) for x in out)
