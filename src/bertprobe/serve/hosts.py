"""Where the model runs while the service answers: a thread of the server's process, or a
process of its own.

A host runs *work*: a function of the texts a batch gathered. In a thread that is any callable;
in a process it is :meth:`ModelProcess.work` of a *task*, a picklable ``task(model, texts)``
(a module-level function, or a :func:`functools.partial` of one), run there on the model the
process loaded once. Either way the event loop only awaits the answer.

Why a process: torch releases the GIL inside its kernels, but not between them, and Python
code between kernels waits for the GIL behind the event loop (up to the 5 ms switch
interval each time). Under overload, when the loop parses and refuses thousands of requests a
second, that wait was most of the accepted requests' p99 (onnx-int8: 218 ms against 44 ms
calm). In its own process the forward pass shares only the CPU with the HTTP side.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bertprobe.encoders.encode import RunOptions
    from bertprobe.model.classifier import Classifier

log = logging.getLogger("bertprobe.serve")

Work = Callable[[list[str]], Any]
Task = Callable[["Classifier", list[str]], Any]


class ModelHostDown(Exception):
    """The model's process died while it held a batch: those requests are answered 503 while a
    new process loads the model."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "the model process stopped while running this request; a new one is loading the "
            f"model: retry after {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class ModelHost(Protocol):
    """Runs a batch's work away from the event loop."""

    def work(self, task: Task) -> Work: ...

    async def start(self) -> None: ...

    async def run(self, work: Work, texts: list[str]) -> Any: ...

    def shutdown(self) -> None: ...


class ModelThread:
    """The model in one dedicated thread of this process: no start-up cost, no copies; the
    forward pass shares the GIL with the event loop (see the module docstring)."""

    def __init__(self, model: Classifier | None = None) -> None:
        self.model = model
        self._executor: Executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="bertprobe-model"
        )

    def work(self, task: Task) -> Work:
        if self.model is None:
            raise ValueError("this thread was given no model: give it work of its own instead")
        return partial(task, self.model)

    async def start(self) -> None:
        return None

    async def run(self, work: Work, texts: list[str]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, texts)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


# In a model process: the one model it serves (set by _load_served, read by _with_served).
_served: Classifier | None = None


def _load_served(model: Classifier, run: RunOptions, threads: int | None) -> int:
    global _served
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    run.load(model.encoder, model.backend)  # the weights, once, before the first batch
    _served = model
    return os.getpid()


def _with_served(task: Task, texts: list[str]) -> Any:
    assert _served is not None, "the model process has not loaded its model"
    return task(_served, texts)


class ModelProcess:
    """The model in a process of its own (spawned: a fresh interpreter, no forked torch
    threads), which loads it once and runs every batch; ``threads``: torch's threads there
    (``None``: torch's default, every core).

    The model object travels to the process pickled (its probe and where its encoder is: the
    weights are read there, not sent). If the process dies (killed, out of memory), the batch
    it held fails with :class:`ModelHostDown` and a new process loads the model; requests
    after that are served by it.
    """

    def __init__(self, model: Classifier, run: RunOptions, threads: int | None = None) -> None:
        self.model = model
        self.run_options = run
        self.threads = threads
        self.pid: int | None = None
        self.restarts = 0
        self._pool = self._new_pool()
        self._restarting: asyncio.Task | None = None
        self._load_seconds = 5.0

    @staticmethod
    def _new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    def work(self, task: Task) -> Work:
        return partial(_with_served, task)

    async def start(self) -> None:
        """Load the model in the process (once: a started process is left as it is)."""
        if self.pid is not None:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.pid = await loop.run_in_executor(
            self._pool, _load_served, self.model, self.run_options, self.threads
        )
        self._load_seconds = loop.time() - start
        log.info("model process %d loaded %s", self.pid, self.model.id)

    async def run(self, work: Work, texts: list[str]) -> Any:
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work, texts)
        except BrokenProcessPool:
            self._replace(pool)
            raise ModelHostDown(max(1, round(self._load_seconds))) from None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if broken is not self._pool:  # another batch already started the replacement
            return
        log.error("model process %s died; starting another", self.pid)
        broken.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        self.pid = None
        self.restarts += 1
        self._restarting = asyncio.ensure_future(self._start_logged())

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except Exception:  # noqa: BLE001 - logged; the next batch will try again
            log.exception("the new model process could not load the model")

    def shutdown(self) -> None:
        if self._restarting is not None:
            self._restarting.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def predict_rows(model: Classifier, texts: list[str], run: RunOptions) -> Any:
    """A task: class probabilities, one row per text."""
    return model.predict_proba(texts, run)


def explain_rows(
    model: Classifier, texts: list[str], run: RunOptions, method: str, threshold: float | None
) -> Any:
    """A task: one explanation per text."""
    return model.explain(texts, run, method=method, threshold=threshold)
