"""embd's exceptions: one class per engine status, all under embd.Error.

Each carries the engine's status (an embd.Status) and its one-line message.
Classes that match a Python built-in also derive from it (ValueError,
MemoryError), so that code that catches those keeps working.
"""
import enum

from . import _embd


class Status(enum.IntEnum):
    """enum embd_status of include/embd.h."""

    OK = 0
    INVALID_ARG = 1
    IO = 2
    MODEL_FORMAT = 3
    UNSUPPORTED = 4
    NOMEM = 5
    BUFFER_TOO_SMALL = 6
    BACKEND = 7
    INTERNAL = 8
    BUSY = 9
    CANCELLED = 10
    TIMEOUT = 11
    TOO_LONG = 12


class Error(Exception):
    """An error from the embd engine: .status (embd.Status) and .message."""

    def __init__(self, status, message=None, *rest):
        try:
            status = Status(status)
        except ValueError:
            pass
        if message is None:
            message = _embd.status_str(int(status))
        super().__init__(status, message, *rest)
        self.status = status
        self.message = message

    def __str__(self):
        return self.message


class InvalidArgumentError(Error, ValueError):
    """A bad argument or option (EMBD_ERR_INVALID_ARG)."""


class FileError(Error):
    """A file could not be opened, read or mapped, or a model was not found (EMBD_ERR_IO)."""


class ModelFormatError(Error):
    """A model file is malformed, truncated or inconsistent (EMBD_ERR_MODEL_FORMAT)."""


class UnsupportedError(Error):
    """A valid model or option that embd does not support, e.g. CUDA asked for and not
    usable (EMBD_ERR_UNSUPPORTED)."""


class OutOfMemoryError(Error, MemoryError):
    """An allocation failed (EMBD_ERR_NOMEM)."""


class BackendError(Error):
    """The compute backend failed (EMBD_ERR_BACKEND)."""


class InternalError(Error):
    """A bug in embd (EMBD_ERR_INTERNAL)."""


class BusyError(Error):
    """The shared engine's queue stayed full, or the model is in use (EMBD_ERR_BUSY)."""


class CancelledError(Error):
    """A queued request was cancelled (EMBD_ERR_CANCELLED)."""


class DeadlineError(Error):
    """A queued request's deadline passed (EMBD_ERR_TIMEOUT)."""


class TooLongError(Error, ValueError):
    """An input has more tokens than the model takes and truncation was off
    (EMBD_ERR_TOO_LONG): .index is the input, .tokens its full token count."""

    def __init__(self, status, message=None, index=None, tokens=None):
        super().__init__(status, message, index, tokens)
        self.index = index
        self.tokens = tokens


_CLASSES = {
    Status.INVALID_ARG: InvalidArgumentError,
    Status.IO: FileError,
    Status.MODEL_FORMAT: ModelFormatError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.NOMEM: OutOfMemoryError,
    Status.BUFFER_TOO_SMALL: InternalError,
    Status.BACKEND: BackendError,
    Status.INTERNAL: InternalError,
    Status.BUSY: BusyError,
    Status.CANCELLED: CancelledError,
    Status.TIMEOUT: DeadlineError,
    Status.TOO_LONG: TooLongError,
}

_embd.set_error_classes({int(k): v for k, v in _CLASSES.items()})
