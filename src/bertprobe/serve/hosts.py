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
import gc
import logging
import multiprocessing
import os
import pickle  # nosec B403 - only to check that an exception can cross the pipe
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bertprobe.encoders.options import RunOptions
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


def _serve_model(conn: Connection, model: Classifier, run: RunOptions, threads: int | None) -> None:
    """The model process: load the model, say so (its pid, or why it could not), then answer
    ``(work, texts)`` messages one at a time until the pipe closes or ``None`` comes."""
    try:
        conn.send((True, _load_served(model, run, threads)))
    except Exception as exc:  # noqa: BLE001 - the parent raises it
        conn.send((False, _sendable(exc)))
        return
    # What loading made stays out of the collector's walks: a full collection over torch's
    # and transformers' objects stalled a batch by about 200 ms (see create_app's freeze_heap).
    gc.collect()
    gc.freeze()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server has gone
            return
        if message is None:
            return
        work, texts = message
        try:
            answer = (True, work(texts))
        except Exception as exc:  # noqa: BLE001 - the request's error, raised in the parent
            answer = (False, _sendable(exc))
        conn.send(answer)


def _sendable(exc: Exception) -> Exception:
    """``exc``, or its message in a RuntimeError when it cannot be pickled."""
    try:
        pickle.dumps(exc)
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class ModelProcess:
    """The model in a process of its own (spawned: a fresh interpreter, no forked torch
    threads), which loads it once and runs every batch; ``threads``: torch's threads there
    (``None``: torch's default, every core).

    The model object travels to the process pickled (its probe and where its encoder is: the
    weights are read there, not sent). Batches go over a pipe whose answers the event loop
    reads itself (``add_reader``): no thread in this process stands between them, since each
    thread hop waits for the GIL behind the event loop, and with a process pool's two hops a
    call cost about 5 ms more than in a thread (measured: 122 against 300 unbatched
    requests/s with onnx-int8 on 2 cores). If the process dies (killed, out of memory), the
    batch it held fails with :class:`ModelHostDown` and a new process loads the model;
    requests after that are served by it.
    """

    def __init__(self, model: Classifier, run: RunOptions, threads: int | None = None) -> None:
        self.model = model
        self.run_options = run
        self.threads = threads
        self.pid: int | None = None
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._waiting: asyncio.Future | None = None  # the answer of the one call in flight
        self._calls = asyncio.Lock()
        self._restarting: asyncio.Task | None = None
        self._load_seconds = 5.0

    def work(self, task: Task) -> Work:
        return partial(_with_served, task)

    async def start(self) -> None:
        """Start the process and wait until it has loaded the model (once: a started process
        is left as it is); raises what loading raised there."""
        if self._conn is not None:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        ours, theirs = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve_model,
            args=(theirs, self.model, self.run_options, self.threads),
            name="bertprobe-model",
            daemon=True,  # never outlives the server
        )
        self._process.start()
        theirs.close()  # the child's end: closed here, so its death reads as end of file
        self._conn = ours
        loop.add_reader(ours.fileno(), self._answered)
        # uvloop (uvicorn's loop when installed) makes a watched descriptor non-blocking: a
        # message over the pipe's buffer (256 long texts, 500 KB) then failed half-sent, and
        # the model process was taken for dead. Readiness is all the loop needs from it; a
        # send or a receive is whole.
        os.set_blocking(ours.fileno(), True)
        try:
            self.pid = await self._call(None)
        except BaseException:
            self._close()
            raise
        self._load_seconds = loop.time() - started
        log.info("model process %d loaded %s", self.pid, self.model.id)

    async def run(self, work: Work, texts: list[str]) -> Any:
        if self._conn is None:
            raise ModelHostDown(self._retry_after_s())
        return await self._call((work, texts))

    async def _call(self, message: tuple[Work, list[str]] | None) -> Any:
        async with self._calls:  # the batcher runs one batch at a time; this makes it so
            conn = self._conn
            if conn is None:
                raise ModelHostDown(self._retry_after_s())
            waiting = self._waiting = asyncio.get_running_loop().create_future()
            if message is not None:
                try:
                    conn.send(message)
                except (OSError, EOFError):
                    self._died()
            return await waiting

    def _answered(self) -> None:
        """The pipe is readable: an answer, or the process's end."""
        assert self._conn is not None
        try:
            ok, value = self._conn.recv()
        except (EOFError, OSError):
            self._died()
            return
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            if ok:
                waiting.set_result(value)
            else:
                waiting.set_exception(value)

    def _died(self) -> None:
        waiting, self._waiting = self._waiting, None
        starting = self.pid is None
        log.error("model process %s stopped; starting another", self.pid or "(loading)")
        self._close()
        if waiting is not None and not waiting.done():
            if starting:
                waiting.set_exception(
                    RuntimeError("the model process stopped while loading the model")
                )
            else:
                waiting.set_exception(ModelHostDown(self._retry_after_s()))
        if not starting:
            self.restarts += 1
            self._restarting = asyncio.ensure_future(self._start_logged())

    def _retry_after_s(self) -> int:
        return max(1, round(self._load_seconds))

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except Exception:  # noqa: BLE001 - logged; the next batch gets 503 until one loads
            log.exception("the new model process could not load the model")

    def _close(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None
        self.pid = None

    def shutdown(self) -> None:
        """Stop the process once it has answered the batch it holds."""
        if self._restarting is not None:
            self._restarting.cancel()
        conn, process = self._conn, self._process
        if conn is not None:
            with suppress(OSError):
                conn.send(None)
        self._close()
        if process is not None:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


def predict_rows(model: Classifier, texts: list[str], run: RunOptions) -> Any:
    """A task: class probabilities, one row per text."""
    return model.predict_proba(texts, run)


def explain_rows(
    model: Classifier,
    texts: list[str],
    run: RunOptions,
    method: str,
    threshold: float | str | None,
) -> Any:
    """A task: one explanation per text."""
    return model.explain(texts, run, method=method, threshold=threshold)
