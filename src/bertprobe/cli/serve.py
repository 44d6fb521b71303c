"""``bertprobe serve``: the model over HTTP."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bertprobe.cli.options import BackendOpt, DeviceOpt, ModelOpt, ThresholdOpt, finite
from bertprobe.cli.printing import note
from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import require_extra
from bertprobe.encoders.encoder import load_tokenizer
from bertprobe.encoders.options import RunOptions
from bertprobe.model.classifier import Classifier

if TYPE_CHECKING:  # the extras are imported once they are checked to be installed
    from bertprobe.serve import ServeConfig
    from bertprobe.serve.ray_serve import RayOptions

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
BatchingOpt = Annotated[
    bool, typer.Option(help="Gather concurrent requests into one encoder batch.")
]
MaxBatchOpt = Annotated[int, typer.Option(min=1, help="Most texts gathered from requests.")]
MaxWaitOpt = Annotated[
    float,
    typer.Option(
        min=0,
        max=60_000,
        callback=finite,
        help="Longest wait for more requests after the first, in milliseconds.",
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option(min=1, help="Texts per forward pass, length-sorted, within what was gathered."),
]
MaxTextsOpt = Annotated[int, typer.Option(min=1, help="Most texts in one request.")]
MaxCharsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Most characters in one text. Default: 2,000, or 100,000 for a model trained "
        "with --long chunk.",
    ),
]
MaxBodyOpt = Annotated[int, typer.Option(min=1, help="Largest request body, in bytes.")]
MaxQueueOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Most texts waiting for the encoder; past it, 503 with Retry-After. Default: "
        "the encoder rate measured at start-up times --latency-budget.",
    ),
]
MaxQueueTokensOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Most tokens of encoder work pending (waiting or running); past it, 503 with "
        "Retry-After. Default: the encoder's token rate measured at start-up times "
        "--latency-budget.",
    ),
]
LatencyBudgetOpt = Annotated[
    float,
    typer.Option(
        min=0.001,
        max=3600,
        callback=finite,
        help="Seconds a text may wait for the encoder; sizes the default --max-queue.",
    ),
]
RequestTimeoutOpt = Annotated[
    float,
    typer.Option(
        min=0.001,
        max=3600,
        callback=finite,
        help="Seconds before an unanswered request gets 504 (its work is dropped).",
    ),
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        min=1,
        max=256,
        help="HTTP worker processes sharing the port, each with its own queue and model; one "
        "/metrics for all; SIGHUP or a reload reaches every one.",
    ),
]
ModelProcessOpt = Annotated[
    bool,
    typer.Option(
        help="Run the model in a process of its own (refusing and answering requests never "
        "wait for it), or in a thread of the server's (less memory, a faster start).",
    ),
]
ServeRayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Serve as Ray Serve replicas (bertprobe[ray]): 'local' starts a local Ray, "
        "'auto' joins this machine's cluster, 'ray://host:10001' a remote one. Every node "
        "must read the model folder at the same path.",
    ),
]
ReplicasOpt = Annotated[
    int | None,
    typer.Option(min=1, help="--ray: replicas, each loading the model once (default 1)."),
]
ReplicaCpusOpt = Annotated[
    float,
    typer.Option(callback=finite, min=0, help="--ray: CPUs each replica reserves."),
]
ReplicaGpusOpt = Annotated[
    float,
    typer.Option(callback=finite, min=0, help="--ray: GPUs each replica reserves."),
]
AutoscaleOpt = Annotated[
    str | None,
    typer.Option(
        metavar="MIN:MAX",
        help="--ray: let Ray Serve add and remove replicas between MIN and MAX on the "
        "requests in flight (--replicas: how many at start).",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        envvar="BERTPROBE_API_KEY",
        show_envvar=True,
        metavar="KEY",
        help="Require Authorization: Bearer KEY on /v1/* (admin routes need it always).",
    ),
]
CorsOriginOpt = Annotated[
    list[str] | None,
    typer.Option(
        metavar="ORIGIN", help="Allow browser pages from this origin (repeatable; * for any)."
    ),
]


def serve(
    model_dir: ModelOpt,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    batching: BatchingOpt = True,
    max_batch: MaxBatchOpt = 64,
    max_wait_ms: MaxWaitOpt = 5.0,
    batch_size: BatchSizeOpt = 8,
    max_texts: MaxTextsOpt = 256,
    max_chars: MaxCharsOpt = None,
    max_body_bytes: MaxBodyOpt = 1_000_000,
    max_queue: MaxQueueOpt = None,
    max_queue_tokens: MaxQueueTokensOpt = None,
    latency_budget: LatencyBudgetOpt = 1.0,
    request_timeout: RequestTimeoutOpt = 30.0,
    api_key: ApiKeyOpt = None,
    cors_origin: CorsOriginOpt = None,
    device: DeviceOpt = "cpu",
    backend: BackendOpt = None,
    threshold: ThresholdOpt = None,
    workers: WorkersOpt = 1,
    model_process: ModelProcessOpt = True,
    ray: ServeRayOpt = None,
    replicas: ReplicasOpt = None,
    replica_cpus: ReplicaCpusOpt = 1.0,
    replica_gpus: ReplicaGpusOpt = 0.0,
    autoscale: AutoscaleOpt = None,
) -> None:
    """Serve the model over HTTP (FastAPI on uvicorn), with a try-it page at /.

    /metrics (Prometheus) and /healthz are open; SIGHUP or POST /v1/admin/reload swaps in the
    model folder again (or another), checked, without dropping requests."""
    require_extra("serve")
    from bertprobe.serve import BatchingConfig, ServeConfig, ServeLimits, ServeSecurity

    config = ServeConfig(
        security=ServeSecurity(api_key=api_key, cors_origins=tuple(cors_origin or ())),
        limits=ServeLimits(
            max_texts,
            max_chars,
            max_body_bytes,
            max_queue=max_queue,
            latency_budget_s=latency_budget,
            request_timeout_s=request_timeout,
            max_queue_tokens=max_queue_tokens,
        ),
        batching=BatchingConfig(batching, max_batch, max_wait_ms, batch_size),
        device=device,
        backend=backend,
        threshold=threshold,
        model_process=model_process,
    )
    if ray is None:
        _refuse_ray_flags(replicas, replica_cpus, replica_gpus, autoscale)
        _serve_here(model_dir, config, host=host, port=port, workers=workers)
        return
    shape = _ray_options(ray, workers, replicas, replica_cpus, replica_gpus, autoscale)
    _serve_on_ray(model_dir, config, replace(shape, host=host, port=port))


def _refuse_ray_flags(
    replicas: int | None, replica_cpus: float, replica_gpus: float, autoscale: str | None
) -> None:
    """The flags of Ray Serve's replicas, given without ``--ray``: a one-line error."""
    if replicas is not None or autoscale is not None or (replica_cpus, replica_gpus) != (1, 0):
        raise BadInputError(
            "--replicas, --replica-cpus, --replica-gpus and --autoscale are for Ray Serve; "
            "add --ray local (or auto, or ray://host:10001)"
        )


def _serve_here(
    model_dir: Path, config: ServeConfig, *, host: str, port: int, workers: int
) -> None:
    """``serve`` on this machine: the model checked and its encoder loaded, the address taken,
    then served until Ctrl-C (see :func:`bertprobe.serve.serve`)."""
    from bertprobe.serve import listen_socket
    from bertprobe.serve import serve as serve_model

    model = _load_checked(model_dir, config)
    sock = listen_socket(host, port)
    note(
        f"serving {model.id} on http://{host}:{port} (batching "
        f"{'on' if config.batching.enabled else 'off'}, {workers} worker"
        f"{'s' if workers > 1 else ''}, the model in "
        f"{'its own process' if config.model_process else 'a thread'}); Ctrl-C stops after "
        "requests in flight"
    )
    serve_model(model, config, host=host, port=port, workers=workers, sock=sock)


def _ray_options(
    address: str,
    workers: int,
    replicas: int | None,
    replica_cpus: float,
    replica_gpus: float,
    autoscale: str | None,
) -> RayOptions:
    """The ``--ray`` flags as :class:`~bertprobe.serve.ray_serve.RayOptions` (``bertprobe[ray]``
    checked to be installed)."""
    if workers > 1:
        raise BadInputError(
            "--workers is for one machine; under --ray the replicas are the workers: use --replicas"
        )
    if not address.strip():
        raise BadInputError("--ray needs an address: local, auto or ray://host:10001")
    require_extra("ray")
    from bertprobe.serve.ray_serve import RayOptions

    scaling = None
    if autoscale is not None:
        low, sep, high = autoscale.partition(":")
        if not (sep and low.strip().isdigit() and high.strip().isdigit()):
            raise BadInputError(f"--autoscale {autoscale!r}: give MIN:MAX replicas, e.g. 1:4")
        scaling = (int(low), int(high))
    return RayOptions(
        address=None if address == "local" else address,
        replicas=replicas,
        num_cpus=replica_cpus,
        num_gpus=replica_gpus,
        autoscaling=scaling,
    )


def _serve_on_ray(model_dir: Path, config: ServeConfig, ray: RayOptions) -> None:
    """``serve --ray``: the replicas deployed, held until Ctrl-C (see
    :func:`bertprobe.serve.ray_serve.run_on_ray`)."""
    from bertprobe.serve.ray_serve import run_on_ray

    run_on_ray(
        model_dir,
        config,
        ray,
        on_ready=lambda deployed: note(
            f"serving {Path(deployed.folder).name} on {deployed.url} as Ray Serve "
            f"application {deployed.name!r}; Ctrl-C removes it, SIGHUP swaps the folder in "
            "again"
        ),
    )


def _load_checked(model_dir: Path, config: ServeConfig) -> Classifier:
    """The model checked (its folder: card, hashes, the encoder's fingerprint; its threshold)
    before the server listens. The weights load where the forward pass runs: here when the
    model runs in a thread (``model_process=False``), else in the model process only, this
    process reading the tokenizer alone (one copy of the weights, not two)."""
    model = Classifier.load(model_dir)  # a bad folder fails here, before the server starts
    model.decision_for(config.threshold)  # checked before the server starts (and each reload)
    if config.backend is not None:
        model.backend = config.backend  # checked by the config
    if config.model_process is False:
        RunOptions(device=config.device).load(model.encoder, model.backend)  # before listening
    else:
        load_tokenizer(model.encoder)  # all this process reads of the encoder (token counts)
    return model
