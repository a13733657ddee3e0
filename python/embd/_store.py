"""embd.Store: index and search on the embedded vector store (a directory) or
PostgreSQL + pgvector (a postgresql:// URL), as `embd index` / `embd search`."""
import threading
from typing import NamedTuple

import numpy as np

from . import _embd
from ._model import Model, _as_texts


class Hit(NamedTuple):
    """One search result, as `embd search` prints it."""

    rank: int
    id: str
    score: float
    text: str


class Store:
    """A vector store of one model's vectors.

    Store(location, model, writable=True)

    location: a directory (the embedded store, made when missing and writable)
    or a postgresql:// URL (pgvector; the extension and tables are made as
    needed). model: the embd.Model whose vectors the store holds (a store
    refuses another model's). Ids are unique: adding an id again replaces its
    record. Searches score by inner product (cosine for a normalising model),
    best first. One thread at a time (calls are serialised by a lock).
    """

    def __init__(self, location, model, writable=True):
        if not isinstance(model, Model):
            raise TypeError(f"model must be an embd.Model, not {type(model).__name__}")
        self.location = str(location)
        self.model = model
        self.writable = bool(writable)
        self._lock = threading.Lock()
        self._s = _embd.Store(model._engine(), self.location, bool(writable))

    @property
    def kind(self):
        """'embedded' or 'postgresql'."""
        return self._s.kind

    def add(self, ids, texts, vectors=None, batch_size=1024):
        """Adds records: ids and texts (lists of str, same length) and their
        vectors ((n, D) float32), embedded with the model when None, batch_size
        texts at a time. Returns how many ids replaced an existing record.
        Durable after flush() (or close())."""
        ids, texts = list(_as_texts(ids)), list(_as_texts(texts))
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        if vectors is not None:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            if vectors.shape != (len(ids), self.model.dimension):
                raise ValueError(f"vectors must be ({len(ids)}, {self.model.dimension}), not "
                                 f"{vectors.shape}")
        replaced = 0
        for i in range(0, len(ids), batch_size):
            bi, bt = ids[i:i + batch_size], texts[i:i + batch_size]
            bv = vectors[i:i + batch_size] if vectors is not None else self.model.embed(bt)
            with self._lock:
                replaced += self._s.add(bi, bt, bv)
        return replaced

    def search(self, query, k=10, exact=False):
        """The k best records for a query (a str, embedded with the model, or a
        (D,) vector): a list of Hit(rank, id, score, text), best first. exact:
        for PostgreSQL, score every row rather than use the HNSW index."""
        if isinstance(query, str):
            q = self.model.embed(query)
        else:
            q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        with self._lock:
            hits = self._s.search(q, int(k), bool(exact))
        return [Hit(r + 1, i, s, t) for r, (i, s, t) in enumerate(hits)]

    def __len__(self):
        with self._lock:
            return self._s.count()

    def flush(self):
        """Makes what was added durable."""
        with self._lock:
            self._s.flush()

    def finish(self):
        """After a bulk load: builds PostgreSQL's HNSW index (a no-op for the
        embedded store)."""
        with self._lock:
            self._s.finish()

    def close(self):
        """Flushes (when writable) and closes the store; closing twice is fine."""
        with self._lock:
            try:
                if self.writable and self._s.kind is not None:
                    self._s.flush()
            finally:
                self._s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"embd.Store({self.location!r}, {self.kind or 'closed'})"

