"""The model slot: the model a service serves, and everything a model swap replaces.

:class:`ModelSlot` loads a model into a :class:`LoadedModel` (its host, a thread or a
:class:`~bertprobe.serve.hosts.ModelProcess`; its :class:`~bertprobe.serve.batching.Batcher`;
its token counter and explainers), warms it up and sizes its queue from the encoder's measured
rate, swaps in another (a reload: checked beside the one serving, then one reference
replaced), and retires the one replaced once its queue is answered. A request takes
:attr:`ModelSlot.served` once, so one model answers the whole of it.
"""

import asyncio
import contextlib
import gc
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.options import RunOptions
from bertprobe.heads.decision import Decision
from bertprobe.model.classifier import Classifier
from bertprobe.model.explain import SERVED_METHODS, why_not_exact
from bertprobe.serve.batching import Batcher, BatchingConfig, EncoderCost
from bertprobe.serve.config import ServeConfig, ServeLimits
from bertprobe.serve.errors import ReloadRefused
from bertprobe.serve.hosts import ModelHost, ModelProcess, ModelThread, explain_rows, predict_rows
from bertprobe.serve.observe import ServeMetrics, log
from bertprobe.serve.schemas import ReloadResponse


@dataclass(eq=False)
class LoadedModel:
    """A model being served, with its own batching worker (texts of two models never share a
    batch) and the names each answer carries."""

    model: Classifier
    batcher: Batcher
    decision: Decision  # how its probabilities become the answers' labels
    model_id: str
    path: str | None
    # The batcher's work for /v1/explain, one per method (the same object each time, so that
    # requests asking for one method are gathered), and why "exact" cannot be had (or None).
    explainers: dict[str, Callable[[list[str]], Any]] = field(default_factory=dict)
    not_exact: str | None = None
    # Each text's tokens as the encoder reads them: what admission counts.
    tokens_of: Callable[[Sequence[str]], list[int]] = lambda texts: [1] * len(texts)
    # The requests holding it (ModelSlot.taken): a swap retires it only once none does.
    users: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def cost(self, texts: list[str], method: str | None = None) -> int:
        """What running ``texts`` costs, in tokens: a prediction reads each once; occlusion
        reads each again without each of its words."""
        counts = self.tokens_of(texts)
        assert self.batcher.cost is not None, "the model is not warmed up"
        if method == "occlusion" or (method == "auto" and self.not_exact is not None):
            passes = [1 + len(text.split()) for text in texts]
            counts = [c * p for c, p in zip(counts, passes, strict=True)]
        return self.batcher.cost.tokens(counts)

    @property
    def name(self) -> str:
        return str(self.model.card.get("id", self.model_id))

    @property
    def classes(self) -> list:
        """The classes (labels) its probabilities are columns of."""
        return list(self.decision.classes)

    @property
    def answered(self) -> dict[str, Any]:
        """What every answer says of the model that gave it
        (:class:`~bertprobe.serve.schemas.Answered`)."""
        return {"model": self.name, "model_id": self.model_id, "model_path": self.path}


def card_digest(card: dict[str, Any]) -> str:
    """A short SHA-256 of a model card: names a model version whatever its folder is called."""
    return hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode()).hexdigest()[:16]


def queue_size(rate: float, limits: ServeLimits, batching: BatchingConfig) -> int:
    """The bound in texts: ``limits.max_queue`` if set, else what the encoder runs in the
    latency budget at ``rate`` texts/s (and at least one gathered batch)."""
    if limits.max_queue is not None:
        return limits.max_queue
    floor = batching.max_batch if batching.enabled else 1
    return max(floor, math.floor(rate * limits.latency_budget_s))


def queue_tokens(cost: EncoderCost, limits: ServeLimits, floor: int) -> int:
    """The bound in tokens: ``limits.max_queue_tokens`` if set, else the work the encoder does
    in the latency budget at its measured rate (and at least ``floor``, one gathered batch)."""
    if limits.max_queue_tokens is not None:
        return limits.max_queue_tokens
    return max(floor, math.floor(cost.tokens_per_second * limits.latency_budget_s))


# The warm-up's long text: past the length limit of every encoder served so far (512 tokens).
_LONG_WARM_UP = " ".join(["the long middle of the film drags, then the ending lifts it"] * 50)


def token_counter(model: Classifier) -> Callable[[Sequence[str]], list[int]]:
    """Each text's tokens as ``model``'s encoder reads them: cut at its length limit or, for a
    model that reads long texts in windows, every window's (only its tokenizer is loaded)."""
    from bertprobe.encoders.encoder import load_tokenizer
    from bertprobe.encoders.options import default_stride
    from bertprobe.encoders.tokens import truncated_ids

    tokenizer = load_tokenizer(model.encoder)
    limit = model.spec.max_length or min(int(tokenizer.model_max_length), 512)
    if model.spec.long != "chunk":
        return lambda texts: [len(ids) for ids in truncated_ids(tokenizer, texts, limit)[0]]
    room = limit - tokenizer.num_special_tokens_to_add()
    step = max(1, room - (model.spec.stride or default_stride(limit)))

    def windows_tokens(texts: Sequence[str]) -> list[int]:
        counts = []
        for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            windows = 1 + math.ceil(max(0, len(ids) - room) / step)
            counts.append(len(ids) + windows * (limit - room) if windows == 1 else windows * limit)
        return counts

    return windows_tokens


def _freeze_heap() -> None:
    """Collect what is garbage now, then freeze the rest (see ``create_app``'s
    ``freeze_heap``); what was frozen before is unfrozen first, so a replaced model's cycles
    are collected rather than kept for good."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelSlot:
    """The model a service serves (:attr:`served`), and how it is replaced.

    ``metrics``: the service's, whose queue and encoder gauges the slot keeps. ``announce_reload
    (folder)``: for a service in several processes (workers, Ray Serve replicas), what a reload
    does once ``folder`` has passed its checks here: tell every process to load it (this one
    included), instead of swapping in this process alone.
    """

    def __init__(
        self,
        model: Classifier,
        config: ServeConfig,
        metrics: ServeMetrics,
        announce_reload: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.announce_reload = announce_reload
        # No embedding cache: requests' texts are rarely seen twice, and serving writes nothing.
        self.run = RunOptions(
            batch_size=config.batching.batch_size, device=config.device, use_cache=False
        )
        self.live: set[Batcher] = set()  # the served model's batcher, and old ones draining
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once it runs
        self._reloading = asyncio.Lock()
        self.served = self.prepare(model)

    def prepare(self, candidate: Classifier) -> LoadedModel:
        """``candidate`` ready to start: its host, batcher, explainers and token counter."""
        config = self.config
        if config.backend is not None:
            candidate.backend = config.backend
        decision = candidate.decision_for(config.threshold)  # a bad threshold never serves
        host: ModelHost = (
            ModelProcess(candidate, self.run, config.model_threads)
            if config.model_process
            else ModelThread(candidate)
        )
        return LoadedModel(
            model=candidate,
            batcher=Batcher(
                host.work(partial(predict_rows, run=self.run)),
                config.batching,
                host=host,
                timeout_s=config.limits.request_timeout_s,
                on_batch=self.metrics.batch,
                on_queue=self._queue_changed,
            ),
            decision=decision,
            model_id=card_digest(candidate.card),
            # what reloads read again: a folder, or a models:/NAME@ALIAS that may have moved
            path=candidate.source or (str(candidate.folder) if candidate.folder else None),
            explainers={
                method: host.work(
                    partial(explain_rows, run=self.run, method=method, threshold=config.threshold)
                )
                for method in SERVED_METHODS
            },
            not_exact=why_not_exact(candidate),
            tokens_of=token_counter(candidate),
        )

    def _queue_changed(self) -> None:
        # Set, not read at scrape time (set_function): in several workers each gauge is a file.
        self.metrics.queue_texts.set(sum(b.pending_texts for b in self.live))
        self.metrics.queue_tokens.set(sum(b.pending_tokens for b in self.live))

    async def start(self, loaded: LoadedModel) -> None:
        """Warm ``loaded`` up, size its queue from the encoder's measured rate, start it."""
        limits, batching = self.config.limits, self.config.batching
        batcher = loaded.batcher
        rate = await batcher.warm_up(loaded.tokens_of, _LONG_WARM_UP)
        assert batcher.cost is not None
        batcher.max_queue = queue_size(rate, limits, batching)
        one_batch = batcher.cost.tokens(loaded.tokens_of(["a warm-up sentence"]))
        floor = one_batch * (batching.max_batch if batching.enabled else 1)
        batcher.max_queue_tokens = queue_tokens(batcher.cost, limits, floor)
        await batcher.start()
        self.live.add(batcher)
        self.metrics.encoder_rate.set(rate)
        self.metrics.token_rate.set(batcher.cost.tokens_per_second)
        self.metrics.queue_limit.set(batcher.max_queue)
        self.metrics.queue_limit_tokens.set(batcher.max_queue_tokens)
        log.info(
            "model %s ready: encoder %.0f texts/s (%.0f tokens/s) at warm-up, queue of %d "
            "texts and %d tokens",
            loaded.name,
            rate,
            batcher.cost.tokens_per_second,
            batcher.max_queue,
            batcher.max_queue_tokens,
        )

    @contextlib.contextmanager
    def taken(self) -> Iterator[LoadedModel]:
        """The model serving now, held for one request: a swap meanwhile retires it only once
        the request is done with it, so the whole request is answered by the model it took."""
        loaded = self.served
        loaded.users += 1
        try:
            yield loaded
        finally:
            loaded.users -= 1
            if loaded.users == 0:
                loaded.released.set()

    async def retire(self, loaded: LoadedModel) -> None:
        """Wait until no request holds ``loaded`` (each is bounded by the request timeout),
        answer its queue, then stop its batcher and host."""
        # A request takes the model, then reaches its queue some awaits later: stopping the
        # queue in between left the request queued behind the stop until it timed out (504s
        # under load in CI).
        while loaded.users > 0:
            loaded.released.clear()
            await loaded.released.wait()
        try:
            await loaded.batcher.stop()
        finally:
            self.live.discard(loaded.batcher)

    async def open(self) -> None:
        """Start the model served (the app's start-up)."""
        self.loop = asyncio.get_running_loop()
        await self.start(self.served)
        if self.config.freeze_heap:
            _freeze_heap()

    async def close(self) -> None:
        """Retire the model served (the app's shutdown, after the requests in flight)."""
        if self.config.freeze_heap:
            gc.unfreeze()  # the process may go on without this app
        await self.retire(self.served)

    @property
    def reloading(self) -> bool:
        return self._reloading.locked()

    async def swap(self, folder: str | None) -> ReloadResponse:
        """Load ``folder`` (default: the one served) beside the current model, check and warm
        it, swap, drain the old one (or, with ``announce_reload``, hand the checked folder to
        every process); says what serves now and what did before. Raises (the old model
        serving on) if the folder fails."""
        async with self._reloading:
            current = self.served
            folder = folder or current.path
            if folder is None:
                raise BadInputError(
                    "the model served was not loaded from a folder; name one: "
                    '{"model": "/path/to/folder"}'
                )
            candidate = await asyncio.to_thread(Classifier.load, folder)
            decision = candidate.decision_for(self.config.threshold)  # refused now if unfit
            if decision.label_sets != current.decision.label_sets:
                kinds = ("single-label", "multi-label")
                raise BadInputError(
                    f"{folder} is a {kinds[decision.label_sets]} model and this service "
                    f"answers {kinds[current.decision.label_sets]}: its answers would change "
                    "shape; start another service for it"
                )
            if self.announce_reload is not None:
                path = str(candidate.folder or folder)
                await asyncio.to_thread(self.announce_reload, path)
                return ReloadResponse(
                    model=str(candidate.card.get("id", candidate.id)),
                    model_id=card_digest(candidate.card),
                    model_path=path,
                    previous=current.name,
                )
            loaded = self.prepare(candidate)
            try:
                await self.start(loaded)
            except BaseException:
                await loaded.batcher.stop()
                raise
            self.served = loaded  # the swap: requests from now on take the new model
            await self.retire(current)
            previous = current.name
            del current  # the last reference: its objects, cycles included, can go now
            if self.config.freeze_heap:
                _freeze_heap()
            return ReloadResponse(
                model=loaded.name,
                model_id=loaded.model_id,
                model_path=loaded.path,
                previous=previous,
            )

    async def reload(self, folder: str | None) -> ReloadResponse:
        """:meth:`swap`, counted and logged; a failure of any kind is
        :class:`~bertprobe.serve.errors.ReloadRefused`, with its reason on one line."""
        try:
            swapped = await self.swap(folder)
        except Exception as exc:  # noqa: BLE001 - any failure: refused, the old model serves on
            self.metrics.reloads.labels("refused").inc()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            log.error("reload refused, %s serves on: %s", self.served.name, reason)
            raise ReloadRefused(reason) from exc
        self.metrics.reloads.labels("ok").inc()
        log.info("reloaded: %s replaces %s", swapped.model, swapped.previous)
        return swapped

    def reload_in_background(self) -> None:
        """Reload the folder served (SIGHUP): the outcome goes to the log."""

        async def run_it() -> None:
            with contextlib.suppress(ReloadRefused):  # logged; the old model serves on
                await self.reload(None)

        if self.loop is None or self.loop.is_closed():
            log.warning("reload ignored: the service is not running")
            return
        # Called from a signal handler or another thread: hand the work to the server's loop.
        asyncio.run_coroutine_threadsafe(run_it(), self.loop)
