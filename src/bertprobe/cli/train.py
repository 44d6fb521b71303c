"""``bertprobe train`` and ``bertprobe sweep``: fit a probe, or score every layer x pooling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bertprobe.cli.inputs import parse_descriptions
from bertprobe.cli.options import (
    ENCODING,
    FROM_FLAGS,
    LABELS,
    READING,
    CvOpt,
    FinalistsOpt,
    JobsOpt,
    JsonOpt,
    SweepMetricOpt,
    SweepPoolingsOpt,
    TfidfOpt,
    positive,
    share,
    shared,
)
from bertprobe.cli.printing import print_sweep, print_training, report_dropped
from bertprobe.cli.tracking import (
    AliasOpt,
    ExperimentOpt,
    RegisterOpt,
    TrackOpt,
    print_tracking,
    tracked,
    tracking_summary,
)
from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import require_extra
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.options import EncoderOptions
from bertprobe.model.train import TrainOptions, TrainResult
from bertprobe.model.train import sweep as sweep_layers
from bertprobe.model.train import train as train_model
from bertprobe.training.contrastive import ContrastiveOptions
from bertprobe.training.distill import DistillOptions
from bertprobe.training.finetune import FinetuneOptions
from bertprobe.training.inputs import read_training_set
from bertprobe.training.label_issues import write_label_issues
from bertprobe.training.sweep import FINALISTS
from bertprobe.training.zeroshot import ZeroShot

# --- flags of train ----------------------------------------------------------------------------

DataOpt = Annotated[
    Path | None,
    typer.Argument(
        help="Labelled training file (TSV, CSV or JSON Lines); optional with --zero-shot "
        "(given, its labels train beside the zero-shot head's surest --unlabelled texts).",
        show_default=False,
    ),
]
ZeroShotOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--zero-shot",
        metavar="LABEL=DESCRIPTION",
        help="A class and its name or description, once a description (a label given "
        "twice gets both; LABEL alone: its name describes it). With no labels the model is "
        "the zero-shot head centred on --unlabelled (required), or with --rounds what "
        "self-training on that pool makes of it; with DATA, the labels and the head's "
        "surest pool texts train together.",
    ),
]
TemplateOpt = Annotated[
    str,
    typer.Option(help="--zero-shot: the sentence each description goes in, at {}."),
]
RoundsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        max=20,
        help="--zero-shot: self-training rounds on the pool (each trains on the surest texts "
        "of each class, with the other options: --contrastive, --auto, ...).",
    ),
]
PerClassOpt = Annotated[
    float,
    typer.Option(
        min=0,
        help="--rounds: pseudo-labels a class each round: a number (>= 1) or a share of "
        "the pool divided among the classes (< 1).",
    ),
]
TestOpt = Annotated[Path | None, typer.Option(help="Labelled test file to evaluate on.")]
OutOpt = Annotated[Path | None, typer.Option(help="Model folder to write.")]
CGridOpt = Annotated[
    str,
    typer.Option(
        help="C values to search: 'default' (log-spaced), 'coarse', 'seed' (the recipe's "
        "linspace(0.0001, 100, 20)) or a comma list."
    ),
]
AutoOpt = Annotated[
    bool,
    typer.Option(
        "--auto",
        help="Choose layer(s) and pooling by a CV sweep on the training data first "
        "(overrides --pooling and --layer).",
    ),
]
PoolingsOpt = Annotated[str, typer.Option(help="Poolings the --auto sweep tries.")]
EncodersOpt = Annotated[
    str,
    typer.Option(
        "--encoders",
        help="With --auto: candidate encoders, comma separated; each is swept on the training "
        "data and the one `bertprobe compare` would recommend is used (not --encoder).",
    ),
]
OutOfCoreOpt = Annotated[
    bool,
    typer.Option(
        "--out-of-core",
        help="For training sets larger than memory: stream features to disk "
        "and fit by SGD a chunk at a time (no --auto).",
    ),
]
FeaturesOpt = Annotated[
    Path | None,
    typer.Option(
        help="--out-of-core: the training file's vectors from `embed FILE --out X.parquet` "
        "(or --ray), used instead of embedding it again.",
    ),
]
FinetuneOpt = Annotated[
    bool,
    typer.Option(
        "--finetune",
        help="Fine-tune the encoder's weights first (a head on --pooling, the epoch chosen "
        "on dev rows); the probe is then fitted on the tuned features.",
    ),
]
ContrastiveOpt = Annotated[
    bool,
    typer.Option(
        "--contrastive",
        help="Tune the encoder on pairs of training texts first, same label or not (SetFit's "
        "recipe: for a few dozen labels); the probe is then fitted on the tuned features.",
    ),
]
DistillOpt = Annotated[
    Path | None,
    typer.Option(
        "--distill",
        metavar="TEACHER",
        help="Teach the encoder (the student, --encoder) what the model folder TEACHER says "
        "of the training texts (and --augment copies, --unlabelled texts) first; the probe is "
        "then fitted on the student's features.",
    ),
]
AugmentOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=100,
        help="--distill: altered copies of each training text the teacher labels too "
        "(masked, replaced and cut words; default 0).",
    ),
]
TemperatureOpt = Annotated[
    float | None,
    typer.Option(
        callback=positive,
        help="--distill: the temperature the teacher's probabilities are read at (default 1).",
    ),
]
UnlabelledOpt = Annotated[
    Path | None,
    typer.Option(
        help="Texts without labels (a file read as the training file is; labels in it are "
        "ignored): the probe self-trains on those it is surest of, if CV says that helps.",
    ),
]
PairsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=1000,
        help="--contrastive: same-label and other-label pairs a text (default 20).",
    ),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=50,
        help="--finetune / --distill / --contrastive: most epochs (default 4, more for a "
        "small training set / 1).",
    ),
]
LrOpt = Annotated[
    float | None,
    typer.Option(
        callback=positive,
        help="--finetune, --distill / --contrastive: peak learning rate (default 8e-05 / 5e-05).",
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        help="--finetune / --distill / --contrastive: seed of the dev split, pairs, training (0)."
    ),
]
DevOpt = Annotated[
    Path | None,
    typer.Option(
        help="--finetune / --distill / --contrastive: labelled dev file (default: a share of "
        "the training rows / none)."
    ),
]
DevShareOpt = Annotated[
    float | None,
    typer.Option(callback=share, help="--finetune / --distill: share of the rows held out (0.1)."),
]
Bf16Opt = Annotated[
    bool | None,
    typer.Option(
        "--bf16/--no-bf16",
        help="--finetune / --distill / --contrastive: bfloat16 autocast (default: off).",
    ),
]
PatienceOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=50,
        help="--finetune / --distill / --contrastive --dev: stop once this many dev "
        "evaluations in a row have not beaten the best (the best epoch is kept either way).",
    ),
]
ClassWeightOpt = Annotated[
    str | None,
    typer.Option(help="'balanced': weigh each class inversely to its frequency (skewed classes)."),
]
MetricOpt = Annotated[
    str,
    typer.Option(
        help="What C is chosen (and --auto ranks) by: accuracy, balanced_accuracy, "
        "f1_macro or roc_auc; reported beside accuracy."
    ),
]
LabelIssuesOpt = Annotated[
    Path | None,
    typer.Option(
        "--label-issues",
        metavar="OUT.csv",
        help="Write the training rows whose label the model doubts (out-of-fold, "
        "cleanlab when installed), most doubtful first.",
    ),
]
MultiLabelOpt = Annotated[
    bool,
    typer.Option(
        "--multi-label",
        help="Several labels per text (or none): --label-sep or --label-cols says how the "
        "file gives them; one probe per label.",
    ),
]
TuneThresholdsOpt = Annotated[
    bool,
    typer.Option(
        "--tune-thresholds",
        help="--multi-label: each label's threshold maximizes its F1 on out-of-fold "
        "probabilities (default: 0.5).",
    ),
]

# --- flags of sweep ----------------------------------------------------------------------------

SweepDataOpt = Annotated[Path, typer.Argument(help="Labelled training file.")]
SweepOutOpt = Annotated[Path | None, typer.Option(help="Folder for sweep.json and sweep.png.")]
SweepCGridOpt = Annotated[str, typer.Option(help="C values for each finalist.")]


def _train_options(c_grid: str, cv: int, jobs: int, **more: Any) -> TrainOptions:
    return TrainOptions(Cs=c_grid, cv=cv, n_jobs=jobs, **more)


@shared(encoding=ENCODING, reading=LABELS)
def train(
    data: DataOpt = None,
    test: TestOpt = None,
    out: OutOpt = None,
    c_grid: CGridOpt = "default",
    cv: CvOpt = 5,
    auto: AutoOpt = False,
    poolings: PoolingsOpt = "cls,mean,max",
    encoders: EncodersOpt = "",
    finalists: FinalistsOpt = FINALISTS,
    jobs: JobsOpt = -1,
    out_of_core: OutOfCoreOpt = False,
    features: FeaturesOpt = None,
    finetune: FinetuneOpt = False,
    contrastive: ContrastiveOpt = False,
    distill: DistillOpt = None,
    augment: AugmentOpt = None,
    temperature: TemperatureOpt = None,
    pairs_per_text: PairsOpt = None,
    unlabelled: UnlabelledOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    dev: DevOpt = None,
    dev_share: DevShareOpt = None,
    bf16: Bf16Opt = None,
    patience: PatienceOpt = None,
    class_weight: ClassWeightOpt = None,
    metric: MetricOpt = "accuracy",
    label_issues: LabelIssuesOpt = None,
    multi_label: MultiLabelOpt = False,
    tune_thresholds: TuneThresholdsOpt = False,
    zero_shot: ZeroShotOpt = None,
    template: TemplateOpt = "{}",
    rounds: RoundsOpt = 0,
    per_class: PerClassOpt = 0.25,
    track: TrackOpt = None,
    experiment: ExperimentOpt = None,
    register: RegisterOpt = None,
    alias: AliasOpt = None,
    as_json: JsonOpt = False,
    encoding: EncoderOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Embed a labelled file, choose C by cross-validation, fit the probe, save the model.

    With no labels, --zero-shot names the classes and --unlabelled gives the texts. With
    --track, the run is recorded in MLflow (options, figures, training curves, the report and
    the model; --register makes it a version of a registered model)."""
    options = _train_options(
        c_grid, cv, jobs, auto=auto, poolings=poolings, encoders=encoders, finalists=finalists,
        out_of_core=out_of_core, features=features, class_weight=class_weight, metric=metric,
        label_issues=label_issues is not None, multi_label=multi_label,
        tune_thresholds=tune_thresholds,
    )  # fmt: skip
    if label_issues is not None:
        check_output_path(label_issues, what="--label-issues", folder=False)
    fine, pairs, taught = _tuning_options(
        finetune,
        contrastive,
        distill,
        shared={
            "epochs": epochs,
            "lr": lr,
            "seed": seed,
            "dev": dev,
            "bf16": bf16,
            "patience": patience,
        },
        dev_share=dev_share,
        pairs_per_text=pairs_per_text,
        augment=augment,
        temperature=temperature,
    )
    described = _zero_shot(zero_shot, template, rounds, per_class)
    with tracked(
        track,
        kind="train",
        experiment=experiment,
        register=register,
        alias=alias,
        run_name=out.name if out is not None else None,
    ) as tracker:
        result = train_model(
            data, test=test, encoding=encoding, options=options, reading=reading, finetune=fine,
            contrastive=pairs, unlabelled=unlabelled, out=out, zero_shot=described,
            distill=taught, callbacks=[tracker] if tracker is not None else [],
        )  # fmt: skip
    _show_training(result, data, test, label_issues, as_json, tracker)


def _zero_shot(
    given: list[str] | None, template: str, rounds: int, per_class: float
) -> ZeroShot | None:
    """The --zero-shot flags as :class:`ZeroShot` options (None: not asked for)."""
    if not given:
        if rounds:
            raise BadInputError("--rounds applies to --zero-shot only; add it")
        return None
    return ZeroShot(
        descriptions=parse_descriptions(given, "--zero-shot"),
        template=template,
        rounds=rounds,
        per_class=int(per_class) if per_class >= 1 else per_class,
    )


def _tuning_options(
    finetune: bool,
    contrastive: bool,
    distill: Path | None,
    *,
    shared: dict[str, Any],
    dev_share: float | None,
    pairs_per_text: int | None,
    augment: int | None,
    temperature: float | None,
) -> tuple[FinetuneOptions | None, ContrastiveOptions | None, DistillOptions | None]:
    """The tuning flags given (None: not given) as the options of each tuning asked for: the
    ``shared`` ones apply to each, --dev-share to fine-tuning and distillation,
    --pairs-per-text to contrastive tuning, --augment and --temperature to distillation; a
    flag of a tuning not asked for is refused."""
    given: dict[str, Any] = {name: value for name, value in shared.items() if value is not None}
    orphans = {
        "dev_share": (dev_share, finetune or distill is not None, "--finetune or --distill"),
        "pairs_per_text": (pairs_per_text, contrastive, "--contrastive"),
        "augment": (augment, distill is not None, "--distill"),
        "temperature": (temperature, distill is not None, "--distill"),
    }
    for name, (value, wanted, flag) in orphans.items():
        if value is not None and not wanted:
            raise BadInputError(f"--{name.replace('_', '-')} applies to {flag} only; add it")
    if given and not (finetune or contrastive or distill is not None):
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        raise BadInputError(
            f"{flags} apply to tuning the encoder only; add --finetune, --distill or "
            "--contrastive, or leave them out"
        )
    share: dict[str, Any] = {"dev_share": dev_share} if dev_share else {}
    fine = FinetuneOptions(**given, **share) if finetune else None
    pairs: dict[str, Any] = {"pairs_per_text": pairs_per_text} if pairs_per_text else {}
    more = ContrastiveOptions(**given, **pairs) if contrastive else None
    taught = None
    if distill is not None:
        teaching: dict[str, Any] = {
            name: value
            for name, value in (("augment", augment), ("temperature", temperature))
            if value is not None
        }
        taught = DistillOptions(
            teacher=distill, tuning=FinetuneOptions(**given, **share), **teaching
        )
    return fine, more, taught


def _show_training(
    result: TrainResult,
    data: Path | None,
    test: Path | None,
    label_issues: Path | None,
    as_json: bool,
    tracker: Any = None,
) -> None:
    """Write the --label-issues file, then print what training found (and where the MLflow
    run went)."""
    if label_issues is not None and result.train_data is not None:
        write_label_issues(
            result.label_issues or [],
            result.train_data.texts,
            result.train_data.line_numbers,
            label_issues,
        )
    if as_json:
        summary = {**result.to_dict(), **tracking_summary(tracker)}
        if label_issues is not None:
            summary["label_issues"] = str(label_issues)
        typer.echo(json.dumps(summary))
        return
    print_training(result, data, test)
    print_tracking(tracker)
    if label_issues is not None:
        typer.echo(
            f"labels    {len(result.label_issues or []):,} training rows whose label the "
            f"model doubts, most doubtful first: {label_issues}"
        )


@shared(encoding=ENCODING, reading=READING)
def sweep(
    data: SweepDataOpt,
    poolings: SweepPoolingsOpt = "cls,mean,max",
    out: SweepOutOpt = None,
    cv: CvOpt = 5,
    c_grid: SweepCGridOpt = "coarse",
    finalists: FinalistsOpt = FINALISTS,
    jobs: JobsOpt = -1,
    tfidf: TfidfOpt = True,
    metric: SweepMetricOpt = "accuracy",
    track: TrackOpt = None,
    experiment: ExperimentOpt = None,
    as_json: JsonOpt = False,
    encoding: EncoderOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Score every hidden layer x pooling (and concatenations) by CV on the training data.

    --pooling and --layer are not used: the sweep tries them all.
    """
    if out is not None:
        check_output_path(out, what="--out", folder=True)
        require_extra("report")  # for sweep.png: fail now, not after the sweep
    options = _train_options(
        c_grid, cv, jobs, poolings=poolings, finalists=finalists, metric=metric
    )
    train_set = read_training_set(data, reading, cv)
    report_dropped(train_set)
    with tracked(track, kind="sweep", experiment=experiment) as tracker:
        result = sweep_layers(train_set, encoding=encoding, options=options)
        if tracker is not None:
            tracker.log_sweep(result)
    summary = {**result.to_dict(), **tracking_summary(tracker)}
    if out is not None:
        from bertprobe.report import write_sweep

        write_sweep(result, out)
        summary["out"] = str(out)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    print_sweep(result)
    print_tracking(tracker)
    if out is not None:
        typer.echo(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
