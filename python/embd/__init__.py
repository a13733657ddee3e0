"""embd: text embeddings on the embd engine, in process.

    from embd import TextEmbedding          # fastembed's API
    model = TextEmbedding("BAAI/bge-small-en-v1.5")
    vectors = list(model.embed(["a cat sat on the mat", "fast text embeddings"]))

    import embd                             # the native API
    m = embd.Model("sentence-transformers/all-MiniLM-L6-v2")
    x = m.embed(["a cat sat on the mat", "fast text embeddings"])   # (2, 384) float32

Errors are embd.Error subclasses carrying the engine's status and message.
"""
from . import _embd
from ._errors import (BackendError, BusyError, CancelledError, DeadlineError, Error, FileError,
                      InternalError, InvalidArgumentError, ModelFormatError, OutOfMemoryError,
                      Status, TooLongError, UnsupportedError)
from ._model import Model
from ._registry import DenseModelDescription, Device, ModelSource, PoolingType
from ._text_embedding import ModelNotFoundError, TextEmbedding

__version__ = _embd.VERSION


def resolve_model(name, cache_dir=None):
    """The directory of a model given as a directory or a name (ORG/NAME) in
    the Hugging Face cache or under cache_dir; embd.FileError names the places
    looked in when it is nowhere."""
    return _embd.resolve(name, cache_dir)


def system_info():
    """What this machine and build offer: CPU cores, BLAS, GPU support."""
    return _embd.system_info()


def device_report():
    """GPU support: the CUDA plugin, driver, devices, and what device 'auto' picks."""
    return _embd.device_report()


def log_configure(level=None, format=None):
    """The engine's log lines on stderr: level 'error', 'warn', 'info' or
    'debug'; format 'text' or 'json' (None leaves one unchanged)."""
    _embd.log_configure(level, format)


__all__ = [
    "BackendError", "BusyError", "CancelledError", "DeadlineError", "DenseModelDescription",
    "Device", "Error", "FileError", "InternalError", "InvalidArgumentError", "Model",
    "ModelFormatError", "ModelNotFoundError", "ModelSource", "OutOfMemoryError", "PoolingType",
    "Status", "TextEmbedding", "TooLongError", "UnsupportedError", "device_report",
    "log_configure", "resolve_model", "system_info",
]
