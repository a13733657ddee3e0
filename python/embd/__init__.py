"""embd: text embeddings on the embd engine, in process.

    from embd import TextEmbedding          # fastembed's API
    model = TextEmbedding("BAAI/bge-small-en-v1.5")
    vectors = list(model.embed(["a cat sat on the mat", "fast text embeddings"]))

    import embd                             # the native API
    m = embd.Model("sentence-transformers/all-MiniLM-L6-v2")
    x = m.embed(["a cat sat on the mat", "fast text embeddings"])   # (2, 384) float32

Errors are embd.Error subclasses carrying the engine's status and message.
"""
import os

from . import _cuda_libs

_cuda_libs.preload_if_wanted()  # NVIDIA's cuBLAS wheels, for the CUDA plugins
from . import _embd  # noqa: E402
from ._errors import (  # noqa: E402
    BackendError, BusyError, CancelledError, DeadlineError, Error, FileError, InternalError,
    InvalidArgumentError, ModelFormatError, OutOfMemoryError, Status, TooLongError,
    UnsupportedError)
from ._model import Model  # noqa: E402
from ._registry import DenseModelDescription, Device, ModelSource, PoolingType  # noqa: E402
from ._store import Hit, Store  # noqa: E402
from ._text_embedding import ModelNotFoundError, TextEmbedding  # noqa: E402
from ._text_cross_encoder import TextCrossEncoder  # noqa: E402

__version__ = _embd.VERSION


def resolve_model(name, cache_dir=None):
    """The directory of a model given as a directory or a name (ORG/NAME) in
    the Hugging Face cache or under cache_dir; embd.FileError names the places
    looked in when it is nowhere."""
    return _embd.resolve(os.fspath(name), None if cache_dir is None else os.fspath(cache_dir))


def system_info():
    """What this machine and build offer: CPU cores, BLAS, GPU support."""
    return _embd.system_info()


def cpu_count():
    """The CPUs this process may use: its affinity mask, capped by its
    cgroup's CPU quota (a container's --cpus, a Kubernetes CPU limit). The
    number of threads a Model runs with by default."""
    return _embd.cpu_count()


def device_report():
    """GPU support: the CUDA plugin, driver, devices, and what device 'auto' picks."""
    return _embd.device_report()


def cuda_libraries():
    """The cuBLAS libraries of NVIDIA's wheels (`pip install "embd[cuda13]"` or
    `"embd[cuda11]"`) loaded for the CUDA plugins, as paths; empty when none
    (no such wheel, no NVIDIA driver, or EMBD_NO_CUDA_WHEELS=1)."""
    return list(_cuda_libs.loaded)


def log_configure(level=None, format=None):
    """The engine's log lines on stderr: level 'error', 'warn', 'info' or
    'debug'; format 'text' or 'json' (None leaves one unchanged)."""
    _embd.log_configure(level, format)


__all__ = [
    "BackendError", "BusyError", "CancelledError", "DeadlineError", "DenseModelDescription",
    "Device", "Error", "FileError", "Hit", "Store", "InternalError", "InvalidArgumentError", "Model",
    "ModelFormatError", "ModelNotFoundError", "ModelSource", "OutOfMemoryError", "PoolingType",
    "Status", "TextCrossEncoder", "TextEmbedding", "TooLongError", "UnsupportedError", "cuda_libraries",
    "cpu_count", "device_report",
    "log_configure", "resolve_model", "system_info",
]
