"""Dynamic batching with admission by cost: concurrent requests share forward passes, and the
work let in is bounded in the encoder's own unit, tokens.

A request's cost is its texts' tokens (what the encoder reads, after truncation or in windows)
plus a fixed cost per text, both measured at warm-up. Counting texts instead let in 256 long
texts as if they were 256 short ones: work that could not finish within the request timeout
was accepted, run and thrown away (504). Counted in tokens, a full queue refuses at once (503)
and what is let in finishes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertprobe.serve.hosts import ModelHost, ModelThread, Work


@dataclass(frozen=True)
class BatchingConfig:
    """Gather up to ``max_batch`` texts, waiting at most ``max_wait_ms`` after the first, then
    run them through the encoder in length-sorted forward batches of ``batch_size``.

    Small forward batches of similar lengths waste little on padding: on a 2-core CPU, 16
    gathered sentences run fastest in forward batches of 8 (measured, bench/serve_load.py).
    """

    enabled: bool = True
    max_batch: int = 64
    max_wait_ms: float = 5.0
    batch_size: int = 8


@dataclass(frozen=True)
class EncoderCost:
    """What the encoder takes: ``seconds_per_text`` + ``seconds_per_token`` x tokens, fitted at
    warm-up on a batch of short texts and one of texts at the encoder's length limit.

    Example:
        >>> cost = EncoderCost(seconds_per_text=0.001, seconds_per_token=0.0001)
        >>> cost.tokens_per_second, cost.tokens([10, 100])
        (10000.0, 130)
    """

    seconds_per_text: float
    seconds_per_token: float

    @property
    def tokens_per_second(self) -> float:
        return 1.0 / self.seconds_per_token

    def tokens(self, token_counts: Sequence[int], factor: float = 1.0) -> int:
        """A request's cost in tokens: its texts' tokens and each text's fixed cost (as the
        tokens that take as long), times ``factor`` (work that runs the encoder that many
        times a text)."""
        per_text = self.seconds_per_text / self.seconds_per_token
        return math.ceil(factor * (sum(token_counts) + per_text * len(token_counts)))

    def seconds(self, tokens: float) -> float:
        return tokens * self.seconds_per_token

    @classmethod
    def fit(cls, short: tuple[int, int, float], long: tuple[int, int, float]) -> EncoderCost:
        """From two timed batches, each ``(texts, tokens, seconds)``: the line through both,
        or (when timing noise tilts it below zero) the mean seconds per token."""
        (n1, t1, s1), (n2, t2, s2) = short, long
        try:
            per_text, per_token = np.linalg.solve([[n1, t1], [n2, t2]], [s1, s2])
        except np.linalg.LinAlgError:
            per_text, per_token = -1.0, -1.0
        if per_text < 0 or per_token <= 0:
            per_text, per_token = 0.0, (s1 + s2) / max(t1 + t2, 1)
        return cls(float(per_text), float(max(per_token, 1e-9)))


class QueueFullError(Exception):
    """The encoder has as much work waiting as it may; try again after ``retry_after_s``.
    ``limit`` ``None``: the work pending would outlast the request timeout."""

    def __init__(self, waiting: int, limit: int | None, retry_after_s: int, unit: str) -> None:
        bound = f"{limit:,} {unit}" if limit is not None else f"{unit}, past the request timeout"
        super().__init__(
            f"the service is at capacity (the encoder's queue is full: {waiting:,} of {bound}); "
            f"retry after {retry_after_s} s"
        )
        self.waiting, self.limit, self.unit = waiting, limit, unit
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Job:
    texts: list[str]
    future: asyncio.Future
    work: Work | None = None  # None: the batcher's predict
    tokens: int = 0
    queued: bool = True  # counted in Batcher.pending_texts
    holds_tokens: bool = True  # counted in Batcher.pending_tokens (waiting or running)


class Batcher:
    """One worker, one model: requests queue up and are answered from shared forward passes.

    ``predict(texts)`` must return one row of class probabilities per text; ``host`` runs it
    (default: a thread of its own, :class:`~bertprobe.serve.hosts.ModelThread`). Rows are
    computed independently (attention masks make a text's vector independent of its batch),
    so merging requests changes no answer. A job whose caller stopped waiting (cancelled:
    timeout, client gone) is dropped unrun. ``on_batch(n_texts)`` is called after each encoder
    batch, ``on_queue()`` whenever the work waiting changes.

    Two bounds, each ``None`` for none: ``max_queue`` texts waiting, and ``max_queue_tokens``
    tokens of work not yet done (waiting, or in the batch running). A request that would pass
    either is refused (:class:`QueueFullError`), unless no work at all is pending: an idle
    encoder takes any request. ``timeout_s``: a request is refused too when the work before
    it and its own would not be done by then.

    A job may name other ``work`` (``submit(texts, work)``: one item per text, e.g. an
    explanation): it waits in the same queue, under the same bounds, and is gathered with the
    jobs naming the same ``work`` (the same object) into one call.
    """

    def __init__(
        self,
        predict: Work,
        config: BatchingConfig,
        *,
        host: ModelHost | None = None,
        max_queue: int | None = None,
        max_queue_tokens: int | None = None,
        timeout_s: float | None = None,
        on_batch: Callable[[int], None] | None = None,
        on_queue: Callable[[], None] | None = None,
    ):
        self._predict = predict
        self.config = config
        self.host: ModelHost = host if host is not None else ModelThread()
        self.max_queue = max_queue
        self.max_queue_tokens = max_queue_tokens
        self.timeout_s = timeout_s
        self._on_batch = on_batch
        self._on_queue = on_queue
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._stopped = False
        self.pending_texts = 0
        self.pending_tokens = 0
        self.rate: float | None = None  # short texts per second, measured by warm_up()
        self.cost: EncoderCost | None = None  # measured by warm_up(tokens_of=...)
        self.batches = 0
        self.largest_batch = 0
        self.dropped = 0

    async def warm_up(
        self, tokens_of: Callable[[list[str]], list[int]] | None = None, long_text: str = ""
    ) -> float:
        """Run the encoder (loading what it loads lazily), then time a gathered batch of short
        texts: the encoder's rate in texts per second, kept in :attr:`rate`. With
        ``tokens_of`` (each text's tokens), a batch of ``long_text`` is timed too, and
        :attr:`cost` fitted to both."""
        await self.host.start()
        n = self.config.max_batch if self.config.enabled else 1
        short = [f"a warm-up sentence, number {i}, that times the encoder" for i in range(n)]
        await self.host.run(self._predict, short)
        short_s = await self._best_time(short)
        self.rate = n / max(short_s, 1e-6)
        if tokens_of is not None:
            long = [f"{i} {long_text}" for i in range(min(n, 8))]
            await self.host.run(self._predict, long)
            long_s = await self._best_time(long)
            self.cost = EncoderCost.fit(
                (n, sum(tokens_of(short)), short_s), (len(long), sum(tokens_of(long)), long_s)
            )
        return self.rate

    async def _best_time(self, texts: list[str]) -> float:
        best = math.inf
        for _ in range(2):
            start = time.perf_counter()
            await self.host.run(self._predict, texts)
            best = min(best, time.perf_counter() - start)
        return best

    async def start(self) -> None:
        """Start answering (the host is started by :meth:`warm_up`, or here)."""
        await self.host.start()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Answer every job already queued, then stop the worker and the host; a job
        submitted from now on is refused (it would wait behind the stop for ever)."""
        self._stopped = True
        if self._worker is not None and not self._worker.done():
            self._queue.put_nowait(None)  # after every job queued so far
            with suppress(asyncio.CancelledError):
                await self._worker
        self.host.shutdown()

    def retry_after_s(self) -> int:
        """Seconds until the work pending now should have been done."""
        if self.cost is not None:
            seconds = self.cost.seconds(self.pending_tokens)
        else:
            seconds = self.pending_texts / (self.rate or 1.0)
        return max(1, math.ceil(seconds))

    def refusal(self, texts: int = 0, tokens: int = 0) -> QueueFullError | None:
        """Why ``texts`` texts costing ``tokens`` cannot be let in now, or ``None``: they can
        (``0, 0``: whether the queue is full already)."""
        if (
            self.max_queue is not None
            and self.pending_texts > 0  # no text waiting: any request may wait
            and self.pending_texts + max(texts, 1) > self.max_queue
        ):
            return QueueFullError(self.pending_texts, self.max_queue, self.retry_after_s(), "texts")
        if self.pending_tokens <= 0:
            return None  # an idle encoder takes any request
        over_bound = (
            self.max_queue_tokens is not None
            and self.pending_tokens + max(tokens, 1) > self.max_queue_tokens
        )
        past_timeout = (
            self.cost is not None
            and self.timeout_s is not None
            and self.cost.seconds(self.pending_tokens + tokens) > self.timeout_s
        )
        if over_bound or past_timeout:
            limit = self.max_queue_tokens if over_bound else None
            return QueueFullError(self.pending_tokens, limit, self.retry_after_s(), "tokens")
        return None

    async def submit(self, texts: list[str], work: Work | None = None, *, tokens: int = 0) -> Any:
        """The rows for ``texts`` (of ``work``, if given: its items); ``tokens``: what they
        cost (see :class:`EncoderCost`). Raises :class:`QueueFullError` when they do not fit,
        ``RuntimeError`` once :meth:`stop` has been called."""
        if self._stopped:
            raise RuntimeError("this batcher is stopped: submit to the model serving now")
        refused = self.refusal(len(texts), tokens)
        if refused is not None:
            raise refused
        job = _Job(texts, asyncio.get_running_loop().create_future(), work, tokens)
        self.pending_texts += len(texts)
        self.pending_tokens += tokens
        self._queued_changed()
        self._queue.put_nowait(job)
        try:
            return await job.future  # cancelling the caller cancels the future: job dropped
        finally:
            self._unqueue(job)

    def _queued_changed(self) -> None:
        if self._on_queue is not None:
            self._on_queue()

    def _unqueue(self, job: _Job) -> None:
        if job.queued:
            job.queued = False
            self.pending_texts -= len(job.texts)
            if job.future.done():  # never reached a batch (refused or cancelled): not pending
                self._release(job)
            self._queued_changed()

    def _release(self, job: _Job) -> None:
        if job.holds_tokens:
            job.holds_tokens = False
            self.pending_tokens -= job.tokens
            self._queued_changed()

    def _take(self, job: _Job, jobs: list[_Job]) -> int:
        self._unqueue(job)
        if job.future.done():  # cancelled: its client has gone or stopped waiting
            self.dropped += 1
            return 0
        jobs.append(job)
        return len(job.texts)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        closing = False
        while not closing:
            first = await self._queue.get()
            if first is None:
                return
            jobs: list[_Job] = []
            size = self._take(first, jobs)
            if self.config.enabled:
                deadline = loop.time() + self.config.max_wait_ms / 1000
                while size < self.config.max_batch:
                    # Jobs already waiting join at once: on a busy event loop the wait below
                    # can time out before a queued job is handed over, leaving batches of one
                    # while the queue is full (measured: 2 s waits under overload).
                    try:
                        job = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        timeout = deadline - loop.time()
                        if timeout <= 0:
                            break
                        try:
                            job = await asyncio.wait_for(self._queue.get(), timeout)
                        except TimeoutError:
                            break
                    if job is None:
                        closing = True
                        break
                    size += self._take(job, jobs)
            if jobs:
                try:
                    await self._answer(jobs)
                finally:
                    for job in jobs:
                        self._release(job)

    async def _answer(self, gathered: list[_Job]) -> None:
        by_work: dict[Work | None, list[_Job]] = {}
        for job in gathered:
            by_work.setdefault(job.work, []).append(job)
        for work, jobs in by_work.items():
            await self._answer_with(work or self._predict, jobs)

    async def _answer_with(self, work: Work, jobs: list[_Job]) -> None:
        texts = [t for job in jobs for t in job.texts]
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(texts))
        try:
            rows = await self.host.run(work, texts)
        except Exception as exc:  # one bad batch must not stop the worker
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(texts))
        start = 0
        for job in jobs:
            if not job.future.done():  # the client may have gone away meanwhile
                job.future.set_result(rows[start : start + len(job.texts)])
            start += len(job.texts)
