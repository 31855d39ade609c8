"""The steps after preprocessing (models, report), run in a thread of this process on each T1w
as soon as its derivatives are written, while the preprocessing graph goes on with the others.

A thread, not a nipype node: the models are loaded once, on the run's device, and their
participants are batched; torch releases the interpreter lock while it computes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.participant.failures import Failure

_END = None


class AfterPreprocessing:
    """A worker thread applying ``handle`` to batches of at most ``batch_size`` T1w, in the
    order they were submitted; the failures it returns are collected in ``failures``.

    Used as a context manager: leaving the block normally waits for every submitted T1w and
    raises the error ``handle`` raised, if any (a full disk, say); leaving it on an error or
    an interrupt does not wait: the thread stops with the process.
    """

    def __init__(self, handle: Callable[[list[T1wInput]], list[Failure]],
                 batch_size: int = 1) -> None:
        self._handle = handle
        self._batch_size = max(1, batch_size)
        self._queue: queue.Queue[T1wInput | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="bids_mdd-models", daemon=True)
        self._stopping = threading.Event()
        self.failures: list[Failure] = []
        self.error: BaseException | None = None

    def submit(self, t1w: T1wInput) -> None:
        self._queue.put(t1w)

    def _next_batch(self) -> tuple[list[T1wInput], bool]:
        """The next T1w (waiting for one) and any others already queued; and whether the end
        was reached."""
        batch: list[T1wInput] = []
        item = self._queue.get()
        while item is not _END:
            batch.append(item)
            if len(batch) == self._batch_size:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _work(self) -> None:
        ended = False
        while not ended and not self._stopping.is_set():
            batch, ended = self._next_batch()
            if not batch or self._stopping.is_set():
                continue
            try:
                self.failures += self._handle(batch)
            except BaseException as error:  # raised again in the main thread
                self.error = error
                return

    def __enter__(self) -> AfterPreprocessing:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is not None:
            self._stopping.set()
            self._queue.put(_END)
            return
        self._queue.put(_END)
        self._thread.join()
        if self.error is not None:
            raise self.error
