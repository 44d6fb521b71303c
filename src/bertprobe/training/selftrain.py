"""Self-training from descriptions: rounds of whole runs on the pool's surest texts.

The zero-shot run (:data:`~bertprobe.training.pipeline.FROM_DESCRIPTIONS`) labels the pool;
each round trains a run (:data:`~bertprobe.training.pipeline.IN_MEMORY`, with the run's
options: a probe, ``--auto``, contrastive tuning, fine-tuning) on the surest texts of each class
(:func:`~bertprobe.training.zeroshot.surest`), with the labels given beside the descriptions if
any, and the pool is labelled again by what it made. See :mod:`bertprobe.training.zeroshot`.
"""

from __future__ import annotations

import numpy as np

from bertprobe.data.files import LabelledTexts
from bertprobe.encoders.encode import embed
from bertprobe.training.pipeline import IN_MEMORY, StageHooks, TrainingRun, run_stages, start_run
from bertprobe.training.zeroshot import SETTLED

__all__ = ["pool_proba", "self_train"]


def pool_proba(run: TrainingRun) -> np.ndarray:
    """The probabilities ``run``'s model gives each text of the pool (its encoder's vectors:
    a tuned encoder reads the pool again)."""
    assert run.unlabelled is not None
    if run.X_unlabelled is None:
        encoder = run.encoding.load()
        with run.encoding.open_cache() as cache:
            run.X_unlabelled, _ = embed(
                run.unlabelled.texts, encoder, run.encoding.spec, run.encoding.run, cache=cache
            )
    return run.voting.predict_proba(run.X_unlabelled, texts=run.unlabelled.texts)


def self_train(run: TrainingRun, hooks: StageHooks | None = None) -> TrainingRun:
    """``run.zero_shot.rounds`` rounds of self-training from the zero-shot run ``run`` (see
    :mod:`bertprobe.training.zeroshot`); returns the last round's run, its ``self_trained``
    recording every round. ``run`` unchanged when ``rounds`` is 0.

    With labels too (``run.gold``), each round trains on them and on the pool's surest texts,
    so the descriptions are a prior the labels correct: at least one round (the zero-shot
    head alone would ignore the labels).
    """
    zero_shot, gold = run.zero_shot, run.gold
    if zero_shot is None:
        return run
    rounds_asked = zero_shot.rounds if gold is None else max(zero_shot.rounds, 1)
    if rounds_asked == 0:
        return run
    assert run.unlabelled is not None and run.classes is not None
    pool, classes = run.unlabelled, run.classes
    first = proba = pool_proba(run)
    current, rounds = run, []
    for number in range(1, rounds_asked + 1):
        rows, given = run.target.pseudo_labels(proba, classes, zero_shot)
        counts = {str(c): given.count(c) for c in classes}
        if min(counts.values()) < run.options.cv:
            rounds.append({"round": number, "stopped": "too few texts of a class", **counts})
            break
        pseudo = LabelledTexts.from_lists(
            [*(gold.texts if gold else []), *(pool.texts[i] for i in rows)],
            [*(gold.labels or [] if gold else []), *given],
            source=f"{pool.source} (pseudo-labels)" + (f" and {gold.source}" if gold else ""),
        )
        trained = start_run(
            pseudo, test=run.test_set, encoding=run.encoding, options=run.options,
            reading=run.reading, finetune=run.finetune, contrastive=run.contrastive,
        )  # fmt: skip
        trained.callbacks = run.callbacks
        run_stages(trained, IN_MEMORY, hooks)
        trained.unlabelled = pool  # set after: the head learns from the pseudo-labels alone
        new = pool_proba(trained)
        changed = float(np.mean(new.argmax(axis=1) != proba.argmax(axis=1)))
        rounds.append(
            {
                "round": number,
                "pseudo_labels": counts,
                "changed": changed,
                "test_accuracy": trained.test_accuracy,
            }
        )
        current, proba = trained, new
        if changed < SETTLED:
            break
    current.zero_shot = zero_shot
    current.self_trained = {
        "n_pool": len(pool),
        "n_labelled": len(gold) if gold else 0,
        "rounds": rounds,
        "agreement_with_zero_shot": float(np.mean(first.argmax(axis=1) == proba.argmax(axis=1))),
        "zero_shot_test_accuracy": run.test_accuracy,
    }
    return current
