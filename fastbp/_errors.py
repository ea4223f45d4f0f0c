"""Exceptions raised by fastbp.

Every exception derives from a built-in class, so code that already catches
``FloatingPointError``, ``ImportError``, ``KeyboardInterrupt``, ``MemoryError`` or
``ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailableError",
    "FileFormatError",
    "NonFiniteError",
    "TooLargeError",
    "TrainingInterrupted",
]


class NonFiniteError(FloatingPointError):
    """A NaN or an infinity appeared during training or a gradient evaluation.

    Raised by :meth:`fastbp.Network.fit` (with ``on_nonfinite="raise"``, the default)
    and by :meth:`fastbp.Network.gradient`.  The network's parameters are those of
    the last good step: the faulty mini-batch wrote nothing.

    Parameters
    ----------
    epoch : int or None
        Epoch (0-based, within the ``fit`` call) of the fault; ``None`` outside ``fit``.
    batch : int or None
        Mini-batch (0-based, within the epoch) of the fault; ``None`` when the fault
        happened outside a training step (``gradient()``, or a probe evaluation).
    layer : int
        Layer index as in ``net.weights[layer]`` (0-based; the book's layer ``layer + 1``).
    phase : str
        ``"forward"``, ``"backward"`` or ``"update"``.
    where : str, optional
        What was being computed, for the message (e.g. ``"the probe set"``).
    history : fastbp.History or None, optional
        For a fault inside ``fit``: everything recorded up to the last good step.

    Attributes
    ----------
    epoch, batch, layer, phase, history
        As given.
    """

    def __init__(
        self,
        epoch: int | None,
        batch: int | None,
        layer: int,
        phase: str,
        where: str = "",
        history: Any = None,
    ) -> None:
        self.epoch = epoch
        self.batch = batch
        self.layer = layer
        self.phase = phase
        self.where = where
        self.history = history
        super().__init__(self._message())

    def _message(self) -> str:
        place = []
        if self.epoch is not None:
            place.append(f"epoch {self.epoch}")
        if self.batch is not None:
            place.append(f"mini-batch {self.batch}")
        place.append(f"layer {self.layer} (net.weights[{self.layer}])")
        text = f"non-finite value (NaN or Inf) in the {self.phase} phase at " + ", ".join(place)
        if self.where:
            text += f" while computing {self.where}"
        text += (
            ". The parameters are those of the last good step. Remedies: lower the learning "
            "rate eta, pass on_nonfinite='skip' to fit() to drop such mini-batches, or check "
            "the inputs and targets for extreme values."
        )
        return text

    def __reduce__(self):  # keep the attributes through pickle (multiprocessing)
        return (
            type(self),
            (self.epoch, self.batch, self.layer, self.phase, self.where, self.history),
        )


class BackendUnavailableError(ImportError):
    """A computational backend was asked for but cannot be used.

    Parameters
    ----------
    backend : str
        Name of the backend (``"cython"``, ``"numba"`` or ``"numpy"``).
    reason : str
        Why it is unavailable (the text of the original import error).
    remedy : str
        How to get it.

    Attributes
    ----------
    backend, reason, remedy
        As given.
    """

    def __init__(self, backend: str, reason: str, remedy: str = "") -> None:
        self.backend = backend
        self.reason = reason
        self.remedy = remedy
        msg = f"fastbp backend {backend!r} is unavailable: {reason}"
        if remedy:
            msg += f". To get it: {remedy}"
        super().__init__(msg, name=None)

    def __reduce__(self):
        return (type(self), (self.backend, self.reason, self.remedy))


class TrainingInterrupted(KeyboardInterrupt):
    """:meth:`fastbp.Network.fit` was interrupted (Ctrl-C / SIGINT) and stopped cleanly.

    A ``KeyboardInterrupt``, so an interrupted script still stops; catch it to keep
    what was done.  ``fit`` runs each epoch as short compiled calls (about 20 ms each)
    and checks for a pending Ctrl-C between them, so it stops within about one
    mini-batch.  The network holds the parameters (and optimiser state) after the
    last completed mini-batch, and ``history`` everything recorded up to it.

    Parameters
    ----------
    epoch : int
        Epoch (0-based, within the ``fit`` call) that was running.
    batch : int
        Mini-batches of that epoch that were completed (the next one did not start).
    history : fastbp.History or None
        The completed part of the run: whole epochs in ``history.epoch`` (and in
        ``validation``, ``probe``), every completed mini-batch in ``history.batch``
        with ``record="batch"``.

    Attributes
    ----------
    epoch, batch, history
        As given.
    """

    def __init__(self, epoch: int, batch: int, history: Any = None) -> None:
        self.epoch = epoch
        self.batch = batch
        self.history = history
        super().__init__(
            f"training interrupted in epoch {epoch} after {batch} completed mini-batch(es); "
            "the network holds the parameters of the last completed mini-batch and the "
            "exception's .history the completed part of the run"
        )

    def __reduce__(self):
        return (type(self), (self.epoch, self.batch, self.history))


class TooLargeError(MemoryError, ValueError):
    """A request would need more memory than this machine has; refused before allocating.

    Both a ``MemoryError`` and a ``ValueError`` (it is a bad argument too).

    Parameters
    ----------
    what : str
        What would be allocated, naming the argument (e.g. ``"sizes=[...]"``).
    needed : int
        Bytes it would need.
    available : int
        Bytes of memory on this machine (physical memory, or the container's limit).
    fix : str
        How to make it fit.

    Attributes
    ----------
    what, needed, available, fix
        As given.
    """

    def __init__(self, what: str, needed: int, available: int, fix: str = "") -> None:
        self.what = what
        self.needed = int(needed)
        self.available = int(available)
        self.fix = fix
        msg = (
            f"{what} would need {format_bytes(needed)} of memory, more than this machine "
            f"has ({format_bytes(available)})"
        )
        if fix:
            msg += f"; {fix}"
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.what, self.needed, self.available, self.fix))


class FileFormatError(ValueError):
    """A file given to :func:`fastbp.load` is not a readable fastbp (or network2) model.

    Raised for a corrupted, truncated or foreign file, or one written by a newer
    fastbp in a format version this one does not know.  Reading never unpickles and
    never executes anything from the file.

    Parameters
    ----------
    path : str
        The file.
    reason : str
        What is wrong with it.

    Attributes
    ----------
    path, reason
        As given.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load {self.path!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'`` (binary units), for messages."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover
