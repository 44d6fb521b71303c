"""The HTTP service as a Ray Serve deployment: the same app, on several replicas of a cluster.

:func:`deploy` puts the app of :func:`~bertprobe.serve.app.create_app` on ``replicas`` Ray
Serve replicas behind Ray Serve's HTTP proxy: the same routes, the same answers, the same
limits, batching and keys, each replica loading the model folder once (with its checks) and
running its own batching worker. :func:`run_on_ray` is ``bertprobe serve --ray ADDRESS``: it
deploys, waits for SIGINT or SIGTERM, and removes the deployment.

What Ray Serve adds, and what it costs:

- Replicas: ``num_cpus`` / ``num_gpus`` reserved by each (Ray's ``ray_actor_options``), a
  fixed number or an autoscaled range (Ray's ``autoscaling_config``). The proxy routes each
  request to a replica with room (at most ``max_ongoing_requests`` in flight on each).
- A replica's process dies: the requests it had accepted fail (the proxy answers 500; Ray
  Serve does not run them again, they may have had effects), requests not yet accepted by it
  are routed to another replica, and the controller starts a replacement. A client that
  retries once gets every answer.
- A model swap is a rolling update: deploying again under the same name (another folder, or
  the same one: SIGHUP) starts new replicas beside the old ones (Ray's ``max_surge_percent``),
  and stops an old one, after its requests in flight are answered, only when a new one is
  ready. ``POST /v1/admin/reload`` on any replica checks the folder there and starts that
  rolling update for all of them. A folder that fails on the new replicas leaves the old ones
  serving.
- ``GET /metrics`` is one replica's (the one that answered); Ray's own metrics
  (``ray_serve_*``) cover the deployment.

Example:
    >>> shape = RayOptions(replicas=2, num_cpus=1)
    >>> info = deploy("models/sst2", ServeConfig(), shape)  # doctest: +SKIP
    >>> info.url  # doctest: +SKIP
    'http://127.0.0.1:8000/'
    >>> deploy("models/sst2-v2", ServeConfig(), shape)  # a rolling swap  # doctest: +SKIP
    >>> undeploy("bertprobe")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.core.ray_cluster import join_ray
from bertprobe.model.classifier import Classifier
from bertprobe.serve.app import create_app
from bertprobe.serve.config import ServeConfig

log = logging.getLogger("bertprobe.serve")

Autoscaling = tuple[int, int] | Mapping[str, Any]

# Extra replicas a rolling swap may start before stopping old ones, as a percentage of the
# replicas (Ray rounds up: at least one). Positive: old replicas serve until new ones are
# ready, so a swap never leaves the service with fewer replicas than it had; 25: a swap
# needs room for a quarter more replicas, not a second copy of the deployment (100: the
# fastest swap, every new replica starting at once, for twice the resources meanwhile).
SURGE_PERCENT = 25
# Tries of a replica's constructor before the deployment is declared failed. The folder is
# checked on the driver first, so what fails there is the replica's machine (the folder not
# readable there, no GPU): trying 20 times (Ray's default) only delays the error.
CONSTRUCTOR_TRIES = 3


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Where and how the service runs on Ray Serve: the cluster, the replicas and what each
    reserves, the proxy's address and the application's name. What the service does (limits,
    batching, keys, threshold, backend, device) is the :class:`~bertprobe.serve.config.
    ServeConfig` beside it.

    Attributes
    ----------
    address : str, optional
        ``None``: a new local Ray instance (unless this process joined Ray already);
        ``"auto"``: the cluster this machine belongs to; ``"ray://host:10001"``: a remote one.
    replicas : int, optional
        Replicas to run (default 1); with ``autoscaling``, the number at start (default: its
        minimum, at least 1).
    num_cpus, num_gpus : float
        Reserved by each replica (fractions allowed). ``device="cuda"`` needs ``num_gpus``.
    autoscaling : (int, int) or dict, optional
        ``(min, max)`` replicas, scaled on requests in flight, or Ray's whole
        ``autoscaling_config``; ``None``: a fixed number of replicas.
    max_ongoing_requests : int, optional
        Requests in flight on one replica (default: the config's ``batching.max_batch``, what
        its worker gathers into one batch); more wait in Ray's router.
    surge_percent : int
        A rolling swap's extra replicas, as a percentage of ``replicas`` (at least one):
        started before old ones stop, so they need room on the cluster; 100 swaps fastest.
    host, port : str, int
        Where Ray Serve's HTTP proxy listens, when the deploy starts Serve on the cluster; a
        cluster already running Serve keeps its own (and the URL says which).
    name : str
        The Ray Serve application's name: deploying again under it swaps the model.
    route_prefix : str
        Where the app's routes start on the proxy (several applications need several).

    Raises
    ------
    BadInputError
        A bad name, route prefix, resource, ``max_ongoing_requests`` or ``surge_percent`` (the
        replicas and the autoscaling range are checked by :func:`deploy`, which knows the
        batching).
    """

    address: str | None = None
    replicas: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int | None = None
    surge_percent: int = SURGE_PERCENT
    host: str = "127.0.0.1"
    port: int = 8000
    name: str = "bertprobe"
    route_prefix: str = "/"

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise BadInputError("the Ray Serve application needs a name, e.g. bertprobe")
        if not self.route_prefix.startswith("/"):
            raise BadInputError(
                f"route prefix {self.route_prefix!r}: start it with /, e.g. / or /sst2"
            )
        if not self.num_cpus >= 0 or not self.num_gpus >= 0:
            raise BadInputError(
                f"num_cpus={self.num_cpus}, num_gpus={self.num_gpus}: use numbers >= 0",
                param=("num_cpus", "num_gpus"),
            )
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < 1:
            raise BadInputError(
                f"max_ongoing_requests={self.max_ongoing_requests}: use at least 1",
                param="max_ongoing_requests",
            )
        if not 1 <= self.surge_percent <= 100:
            # 0 would stop old replicas before their successors are ready: a swap with fewer
            # replicas, or none, meanwhile.
            raise BadInputError(
                f"surge_percent={self.surge_percent}: use 1 to 100", param="surge_percent"
            )


@dataclass(frozen=True)
class _Plan:
    """Everything a replica needs to build the app, and to deploy a successor (a reload):
    pickled with the deployment, so plain values only. ``ray`` is the options resolved: the
    replicas at start, Ray's ``autoscaling_config`` (or ``None``) and the requests in flight a
    replica takes."""

    folder: str
    config: ServeConfig
    ray: RayOptions


@dataclass(frozen=True)
class RayDeployment:
    """What :func:`deploy` set up.

    Attributes
    ----------
    name : str
        The Ray Serve application's name (:func:`undeploy` takes it).
    url : str
        Where the service answers: the Ray Serve proxy's address and the route prefix.
    folder : str
        The model folder the replicas load (absolute).
    replicas : int
        Replicas at start (with autoscaling: the initial number).
    autoscaling : dict or None
        Ray's ``autoscaling_config``, or ``None`` for a fixed number of replicas.
    started_ray : bool
        Whether :func:`deploy` started a new local Ray instance (then whoever stops the
        service may shut it down; a cluster it joined belongs to someone else).
    """

    name: str
    url: str
    folder: str
    replicas: int
    autoscaling: dict[str, Any] | None
    started_ray: bool


class _Replica:
    """One Ray Serve replica: the model folder loaded once and the service's app built around
    it, after Ray has placed the replica (late-bound ingress), so the model lives in the
    replica's process and never travels through Ray's object store."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan

    def __serve_build_asgi_app__(self) -> Any:
        plan = self.plan
        _log_lines_to_stderr()
        model = Classifier.load(plan.folder)  # the folder's checks, on this replica's machine
        # The model runs in a thread of the replica's process: Ray places, counts and restarts
        # that process, so it is not split further (nor its heap frozen, shared with Ray's).
        config = replace(plan.config, model_process=False, model_threads=None, freeze_heap=False)
        # A reload reaches every replica: a rolling update of the deployment, started from
        # here once this replica has checked the folder.
        app = create_app(model, config, announce_reload=partial(_redeploy_from_replica, plan))
        # Added last, so outermost: it sees the answer after the app has set its id.
        app.add_middleware(_OneRequestId)
        return app

    def folder(self) -> str:
        """The folder this replica serves (a reload's successor deployment names another)."""
        return self.plan.folder


def _log_lines_to_stderr() -> None:
    """The access log's JSON lines and the service's own lines on the replica's standard
    error, which Ray keeps in the replica's log file (``ray logs``): Ray Serve gives the root
    logger no handler, so they were dropped. A handler the application set up stays."""
    for name in ("bertprobe.access", "bertprobe.serve"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


class _OneRequestId:
    """ASGI middleware: the answer without the app's ``X-Request-ID``, which Ray Serve's proxy
    adds itself. The proxy hands the app the client's id (or one it made) in the request, so
    the app logged the same id; without this, every answer carried the header twice."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_without_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_without_id)


def _autoscaling_config(
    autoscaling: Autoscaling | None, replicas: int | None, max_ongoing: int
) -> tuple[int, dict[str, Any] | None]:
    """The replicas at start and Ray's ``autoscaling_config`` (None: a fixed number)."""
    if autoscaling is None:
        count = 1 if replicas is None else replicas
        if count < 1:
            raise BadInputError(f"replicas={count}: use at least 1", param="replicas")
        return count, None
    if isinstance(autoscaling, Mapping):
        config = dict(autoscaling)
        low = int(config.get("min_replicas", 1))
        high = int(config.get("max_replicas", max(low, 1)))
    else:
        try:
            low, high = (int(n) for n in autoscaling)
        except (TypeError, ValueError):
            raise BadInputError(
                f"autoscaling={autoscaling!r}: give (min, max) replicas, e.g. (1, 4)",
                param="autoscaling",
            ) from None
        # Ray's default target, 2 requests in flight a replica, would add replicas where one
        # replica gathers concurrent requests into one batch: aim for half of what it takes.
        config = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": max(2, max_ongoing // 2),
        }
    if not 0 <= low <= high or high < 1:
        raise BadInputError(
            f"autoscaling between {low} and {high} replicas: use 0 <= min <= max, max >= 1"
        )
    start = max(low, 1) if replicas is None else replicas
    if not low <= start <= high or start < 1:
        raise BadInputError(
            f"replicas={start} at start is outside the autoscaling range {low}-{high}",
            param="replicas",
        )
    config.setdefault("initial_replicas", start)
    return start, config


def _plan(folder: str | Path, config: ServeConfig, ray: RayOptions) -> _Plan:
    """The deployment checked on the driver: a bad folder, threshold or resource request is
    one line here, not a replica failing its constructor on some machine."""
    if config.device.startswith("cuda") and not ray.num_gpus > 0:
        raise BadInputError(
            f"device {config.device} on Ray needs a GPU reserved for each replica (num_gpus, "
            "--replica-gpus 1): Ray hides the GPUs a replica did not reserve"
        )
    model = Classifier.load(folder)  # an altered or edited folder is refused here
    model.decision_for(config.threshold)  # a threshold the model does not suit, too
    max_ongoing = ray.max_ongoing_requests
    if max_ongoing is None:
        # Concurrent requests on one replica are what its batching worker gathers into one
        # forward pass: let in a gathered batch's worth (Ray's default is 5). Past what the
        # replica's queue holds, it answers 503 itself (admission by cost).
        batching = config.batching
        max_ongoing = max(batching.max_batch, 8) if batching.enabled else 8
    start, scaling = _autoscaling_config(ray.autoscaling, ray.replicas, max_ongoing)
    where = model.folder if model.folder is not None else Path(folder)
    resolved = replace(ray, replicas=start, autoscaling=scaling, max_ongoing_requests=max_ongoing)
    return _Plan(folder=str(Path(where).resolve()), config=config, ray=resolved)


def _application(plan: _Plan) -> Any:
    """The Ray Serve application: the replica class as a late-bound FastAPI ingress."""
    with needs_extra("ray"):
        from ray import serve

    shape = plan.ray
    options: dict[str, Any] = {
        "name": "BertprobeService",
        "ray_actor_options": {"num_cpus": float(shape.num_cpus), "num_gpus": float(shape.num_gpus)},
        "max_ongoing_requests": shape.max_ongoing_requests,
        "max_surge_percent": shape.surge_percent,
        "max_constructor_retry_count": CONSTRUCTOR_TRIES,
    }
    if shape.autoscaling is not None:
        options["autoscaling_config"] = shape.autoscaling
    else:
        options["num_replicas"] = shape.replicas
    ingress = serve.ingress()(_Replica)
    return serve.deployment(**options)(ingress).bind(plan)


def _run(plan: _Plan, *, wait: bool) -> None:
    """Deploy ``plan`` (a new application, or a rolling update of the one of that name);
    ``wait``: until every replica runs it."""
    with needs_extra("ray"):
        from ray import serve

    target = serve.RunTarget(
        _application(plan), name=plan.ray.name, route_prefix=plan.ray.route_prefix
    )
    try:
        serve.run_many(
            [target],
            wait_for_ingress_deployment_creation=wait,
            wait_for_applications_running=wait,
        )
    except RuntimeError as exc:
        # "Deploying application X failed: <the replica's traceback>": its last line says why.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise BadInputError(
            f"the Ray Serve replicas of {plan.ray.name} could not start {plan.folder}: {reason} "
            "(the folder must be readable at that path on every node; replica logs: "
            "`ray logs`, or the Ray dashboard)"
        ) from None


def _redeploy_from_replica(plan: _Plan, folder: str) -> None:
    """``/v1/admin/reload`` on a replica: start the rolling update to ``folder`` and return.

    Not waiting is what makes it work from inside a replica: the update stops this very
    replica once its successors are ready, after the reload request has been answered (Ray
    lets a stopping replica finish its requests in flight); waiting here would wait on
    itself."""
    _run(replace(plan, folder=folder), wait=False)


def deploy(
    folder: str | Path, config: ServeConfig = ServeConfig(), ray: RayOptions = RayOptions()
) -> RayDeployment:
    """Serve the model in ``folder`` as ``config`` says on Ray Serve replicas shaped by ``ray``;
    return when every replica answers.

    Deploying again under the same ``ray.name`` (another folder, or the same one) is a rolling
    swap: new replicas start beside the old ones, and each old one stops, after answering its
    requests in flight, once a new one is ready; no request fails for it.

    Parameters
    ----------
    folder : str or Path
        The model folder. Checked here first (one-line error), then loaded by each replica:
        it must be readable at this path on every node that runs one (a shared file system).
    config : ServeConfig
        The service every replica runs (as :func:`~bertprobe.serve.app.create_app`'s), the
        model in a thread of the replica's process (``model_process``, ``model_threads`` and
        ``freeze_heap`` are for :func:`~bertprobe.serve.running.serve`'s processes).
    ray : RayOptions
        The cluster, the replicas and their resources, the proxy, the application's name.

    Returns
    -------
    RayDeployment
        The application's name, its URL and what was deployed.

    Raises
    ------
    ModelFolderError
        The folder is not a model, or fails its checks (before Ray is touched).
    BadInputError
        A bad option, no cluster at ``ray.address``, or the replicas could not start (with
        the last line of the reason).
    """
    plan = _plan(folder, config, ray)
    started = join_ray(ray.address)
    with needs_extra("ray"):
        from ray import serve
    for logger in ("ray.serve", "ray"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    serve.start(http_options={"host": ray.host, "port": ray.port})
    _warn_if_no_room(plan)
    _run(plan, wait=True)
    proxy_host, proxy_port = _proxy_address(ray.host, ray.port)
    # A proxy listening on every interface is reached, from here, on loopback.
    everywhere = ("0.0.0.0", "::", "")  # noqa: S104 - compared with, not bound
    shown = "127.0.0.1" if proxy_host in everywhere else proxy_host
    prefix = ray.route_prefix if ray.route_prefix.endswith("/") else ray.route_prefix + "/"
    scaling = plan.ray.autoscaling  # Ray's autoscaling_config now, or None
    return RayDeployment(
        name=ray.name,
        url=f"http://{shown}:{proxy_port}{prefix}",
        folder=plan.folder,
        replicas=plan.ray.replicas or 1,
        autoscaling=dict(scaling) if isinstance(scaling, Mapping) else None,
        started_ray=started,
    )


def _warn_if_no_room(plan: _Plan) -> None:
    """Say so when the cluster, as it is now, has no room for one replica: Ray Serve then
    waits for resources (an autoscaling cluster may add a node), and so does :func:`deploy`."""
    import ray

    total = ray.cluster_resources()
    for resource, asked in (("CPU", plan.ray.num_cpus), ("GPU", plan.ray.num_gpus)):
        if asked > total.get(resource, 0):
            log.warning(
                "each replica asks for %g %s and the cluster has %g: the deploy waits until a "
                "node with room joins (Ctrl-C to give up)",
                asked,
                resource,
                total.get(resource, 0),
            )


def _proxy_address(host: str, port: int) -> tuple[str, int]:
    """Where Ray Serve's proxies listen: the cluster's Serve keeps the options it started
    with, whatever this deploy asked for."""
    try:
        from ray.serve.context import _get_global_client

        # No public API says it (serve.status() does not): the client Serve connected.
        client = _get_global_client()
        if client is None:
            return host, port
        return str(client.http_config.host), int(client.http_config.port)
    except Exception:  # noqa: BLE001 - a Ray without it: what was asked for
        return host, port


def served_folder(name: str = "bertprobe") -> str:
    """The model folder a replica of application ``name`` serves (after a reload through
    the HTTP API, not the one first deployed)."""
    with needs_extra("ray"):
        from ray import serve

    handle = serve.get_app_handle(name)
    return str(handle.folder.remote().result(timeout_s=60))


def undeploy(name: str = "bertprobe", *, shutdown: bool = False) -> None:
    """Remove the application ``name`` (its replicas answer their requests in flight first);
    ``shutdown``: Ray Serve too, its controller and proxies (for a local instance this
    process started)."""
    with needs_extra("ray"):
        import ray
        from ray import serve

    if not ray.is_initialized():
        return
    serve.delete(name)
    if shutdown:
        serve.shutdown()


def run_on_ray(
    folder: str | Path,
    config: ServeConfig = ServeConfig(),
    ray: RayOptions = RayOptions(),
    *,
    on_ready: Callable[[RayDeployment], None] | None = None,
) -> None:
    """``bertprobe serve --ray ADDRESS``: :func:`deploy`, then wait until SIGINT or SIGTERM
    and remove the deployment (and, when this call started a local Ray instance, Ray Serve
    and Ray with it). SIGHUP: a rolling swap to the folder the replicas serve (the same
    folder loaded again, or the one a ``/v1/admin/reload`` named).

    ``on_ready(deployment)`` is called once the replicas answer (default: the URL on
    standard error). The other parameters are :func:`deploy`'s. Call from the main thread
    (signal handlers are installed there).
    """
    redeploy = partial(deploy, config=config, ray=ray)
    deployment = redeploy(folder)
    stop, hangup = threading.Event(), threading.Event()
    wanted = [signal.SIGINT, signal.SIGTERM]
    hup = getattr(signal, "SIGHUP", None)  # not on Windows
    # The handlers only set flags: the Serve calls run here, in the main thread, not inside a
    # signal handler that may interrupt one of them.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in wanted}
    if hup is not None:
        previous[hup] = signal.signal(hup, lambda *_: hangup.set())
    try:
        (on_ready or _print_ready)(deployment)
        while not stop.wait(0.5):
            if hangup.is_set():
                hangup.clear()
                _swap_on_hangup(redeploy, deployment)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        log.info("removing %s from Ray Serve", deployment.name)
        undeploy(deployment.name, shutdown=deployment.started_ray)
        if deployment.started_ray:
            with needs_extra("ray"):
                from ray import shutdown as shutdown_ray
            shutdown_ray()


def _swap_on_hangup(redeploy: Callable[..., RayDeployment], deployment: RayDeployment) -> None:
    """SIGHUP: the rolling swap; a refused one is logged and the replicas serve on."""
    try:
        folder = served_folder(deployment.name)
    except Exception as exc:  # noqa: BLE001 - no replica answers: the folder deployed
        log.warning("no replica says what it serves (%s); reloading %s", exc, deployment.folder)
        folder = deployment.folder
    try:
        swapped = redeploy(folder)
    except BadInputError as exc:
        log.error("reload refused, the replicas serve on: %s", exc)
    else:
        log.info("reloaded: every replica of %s serves %s", swapped.name, swapped.folder)


def _print_ready(deployment: RayDeployment) -> None:
    scaling = deployment.autoscaling
    scale = (
        f"{scaling.get('min_replicas', 1)}-{scaling.get('max_replicas', '?')} replicas (autoscaled)"
        if scaling is not None
        else f"{deployment.replicas} replica{'s' * (deployment.replicas != 1)}"
    )
    print(
        f"serving {deployment.folder} on {deployment.url} ({scale} on Ray Serve); "
        "Ctrl-C removes the deployment, SIGHUP swaps the model in again",
        file=sys.stderr,
    )


__all__ = ["RayDeployment", "RayOptions", "deploy", "run_on_ray", "served_folder", "undeploy"]
