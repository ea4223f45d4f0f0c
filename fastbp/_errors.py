"""Exceptions raised by fastbp.

Both exceptions derive from a built-in class, so code that already catches
``FloatingPointError`` or ``ImportError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BackendUnavailableError", "NonFiniteError"]


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
