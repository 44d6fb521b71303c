"""``bertprobe label``: label a pool of texts on a local page, the probe retrained as you go."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bertprobe.cli.inputs import parse_descriptions
from bertprobe.cli.options import FROM_FLAGS, READING, RUN, shared
from bertprobe.cli.printing import note
from bertprobe.core.extras import require_extra
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.encoders.pooling import POOLINGS, check_pooling

if TYPE_CHECKING:
    from bertprobe.label import LabellingSession

PoolArg = Annotated[
    Path,
    typer.Argument(
        help="Texts to label: one a line, or a table with a text column. A pool whose rows "
        "carry labels is refused unless --use-pool-labels."
    ),
]
LabelsOpt = Annotated[
    str,
    typer.Option(
        "--labels",
        help="The label names, a comma list of two or more (pos,neg); the keys 1-9, then 0, "
        "on the page.",
    ),
]
LabelOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Training file the answers go to (text<TAB>label, a header), each appended and "
        "synced at once; run the same command again to resume where it stopped.",
    ),
]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--n", help="Texts a batch: the probe is refitted after each and chooses the next."
    ),
]
UsePoolLabelsOpt = Annotated[
    bool,
    typer.Option(
        "--use-pool-labels",
        help="Count the labels pool rows carry as answers: copied into --out once, not asked.",
    ),
]
LabelEncoderOpt = Annotated[
    str,
    typer.Option(
        "--encoder",
        "-e",
        help="The encoder whose vectors choose the texts and train the probe (hub name, local "
        "folder, or 'minilm': bundled, offline).",
    ),
]
PoolingOpt = Annotated[
    str, typer.Option(help=f"How token vectors become one: {', '.join(POOLINGS)}.")
]
HostOpt = Annotated[str, typer.Option(help="Address to listen on (only this machine by default).")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
SeedOpt = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seeds the clustering.")]
ZeroShotOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--zero-shot",
        metavar="LABEL=DESCRIPTION",
        help="What a label means, for the zero-shot head that proposes a label until the "
        "probe can (once a description; a label left out is described by its name).",
    ),
]
LabelTemplateOpt = Annotated[
    str, typer.Option(help="The sentence each description goes in, at {}.")
]


@shared(run=RUN, reading=READING)
def label(
    pool: PoolArg,
    labels: LabelsOpt,
    out: LabelOutOpt,
    n: BatchOpt = 10,
    use_pool_labels: UsePoolLabelsOpt = False,
    encoder: LabelEncoderOpt = "minilm",
    pooling: PoolingOpt = "mean",
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    seed: SeedOpt = 0,
    zero_shot: ZeroShotOpt = None,
    template: LabelTemplateOpt = "{}",
    run: RunOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Label POOL on a local page: one text at a time, a key per label, s to skip, u to undo.

    Texts come a batch at a time, chosen as suggest chooses them: texts that stand for the
    pool at first, then those the probe is least sure of. Each comes with a label proposed
    (Enter takes it): the zero-shot head's, from the labels' names or --zero-shot, then the
    probe's. After each batch the probe is refitted on the cached vectors in the background
    and its cross-validated accuracy shown. Prints the page's address; Ctrl-C stops (every
    answer is in --out already)."""
    # The cheap checks first, so a bad flag fails before the encoder loads.
    from bertprobe.label import check_session_options, proposer_options

    names = check_session_options(labels, n, seed)
    descriptions = parse_descriptions(zero_shot or [], "--zero-shot")
    proposer_options(names, descriptions, template)
    check_output_path(out, what="--out", folder=False)
    require_extra("serve")
    from bertprobe.label import LabellingSession, run_label_page
    from bertprobe.serve import listen_socket

    sock = listen_socket(host, port)  # a taken port fails now, not after the embedding
    with _closed_on_error(sock):
        encoding = EncoderOptions(encoder, pooling=check_pooling(pooling), run=run)
        session = LabellingSession(
            pool,
            labels,
            out,
            encoding=encoding,
            n=n,
            seed=seed,
            reading=reading,
            use_pool_labels=use_pool_labels,
            descriptions=descriptions,
            template=template,
        )
    if not _note_labelled_already(session, pool, out):
        sock.close()
        return
    shown = f"[{host}]" if ":" in host else host
    note(
        f"label {session.pool_size} texts at http://{shown}:{port}/ ; answers go to {out}; "
        "Ctrl-C stops (nothing is lost)"
    )
    with suppress(KeyboardInterrupt):  # Ctrl-C is how the page stops; the answers are saved
        run_label_page(session, sock, host=host, port=port)
    note(
        f"{session.labelled} of {session.pool_size} pool texts labelled in {out}; run the "
        "same command to go on"
    )


def _note_labelled_already(session: LabellingSession, pool: Path, out: Path) -> bool:
    """Say how many texts are labelled already (answers in --out, the pool's own labels);
    whether any is left to ask."""
    if session.resumed or session.from_pool:
        note(
            f"{out}: {session.labelled} of {session.pool_size} pool texts labelled already "
            f"({session.resumed} from --out, {session.from_pool} from the pool); asking the rest"
        )
    if session.labelled == session.pool_size:
        note(f"every text of {pool} is labelled in {out}; nothing to ask")
        return False
    return True


@contextmanager
def _closed_on_error(sock: socket.socket) -> Iterator[None]:
    """Close ``sock`` when the block fails (Ctrl-C included), so the port is free again."""
    try:
        yield
    except BaseException:
        sock.close()
        raise
