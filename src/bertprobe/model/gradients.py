"""Integrated gradients: each word's share of a score's change from a baseline of pad tokens.

The third method of :func:`bertprobe.model.explain.explain`, for any model whose encoder runs in
torch and whose head is linear: [CLS], mean or max pooling, one or several layers, windows
pooled by their mean or maximum, fine-tuned and contrastive encoders, multi-label heads. The
attributions are Captum's :class:`~captum.attr.LayerIntegratedGradients` on the encoder's word
embeddings (Sundararajan et al., 2017): the gradient of the score along the straight line from
the baseline's embeddings to the text's, times their difference, summed over the embedding
dimensions and over a word's tokens. The baseline is the text with every word's tokens
replaced by the pad token (the special tokens and the attention mask kept), as
transformers-interpret does.

By IG's completeness the word scores add up to ``score(text) - score(baseline)``, up to the
error of the ``steps``-point integral: the convergence delta (as Captum defines it), reported
with each explanation. The constant is the rest of the score: the baseline's score and that error.

What the scores mean: how much of the score's change from "no words" each word's embedding
accounts for along that path. What they do not mean: the effect of deleting the word
(occlusion measures that), nor a share that holds for another baseline.

It costs ``steps`` forward and backward passes per text and per score explained (one score
for two classes, one per class or label otherwise), against one pass for ``exact``.

Example:
    >>> from bertprobe import Classifier  # doctest: +SKIP
    >>> model = Classifier.load("models/sst2")  # doctest: +SKIP
    >>> [why] = model.explain(["a gorgeous film"], method="integrated-gradients")  # doctest: +SKIP
    >>> why.delta < 0.05  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.encoders.encoder import LoadedEncoder
from bertprobe.encoders.pooling import pool_tokens
from bertprobe.encoders.words import ReadText

# Points on the path from the baseline (Captum's default, Gauss-Legendre).
DEFAULT_STEPS = 50
# Tokens one gradient pass may hold (steps x windows x window length): bounds memory on long
# texts, where all steps at once would not fit.
TOKENS_PER_PASS = 16_384


@dataclass(frozen=True)
class Attribution:
    """Integrated gradients of each text: what :func:`integrated_gradients` returns.

    ``features`` are the pooled vectors the head reads (rows x features); ``words`` each
    text's word scores (words x scores); ``specials`` each text's special tokens' summed
    scores; ``baseline`` each text's baseline score; ``delta`` each text's largest absolute
    convergence delta over its scores (``|sum of attributions - (score - baseline score)|``).
    """

    features: np.ndarray
    words: list[np.ndarray]
    specials: list[np.ndarray]
    baseline: np.ndarray
    delta: np.ndarray


def integrated_gradients(
    encoder: LoadedEncoder,
    read: Sequence[ReadText],
    *,
    pooling: str,
    layers: Sequence[int],
    window_pool: str,
    weights: np.ndarray,
    constant: np.ndarray,
    steps: int = DEFAULT_STEPS,
) -> Attribution:
    """Integrated gradients of the scores ``features @ weights.T + constant`` for each text.

    Parameters
    ----------
    encoder : LoadedEncoder
        A torch-backed encoder (gradients need torch).
    read : sequence of ReadText
        The texts as the encoder reads them (windows of token ids, each token's word).
    pooling, layers, window_pool
        How the model pools: ``layers`` are absolute hidden-state indices.
    weights, constant : ndarray
        The linear head with its scaling folded in (one row a score).
    steps : int
        Points of the path integral (more: a smaller convergence delta, a longer run).
    """
    if steps < 1:
        raise BadInputError(f"steps={steps}: use at least 1", param="steps")
    if encoder.backend != "torch":
        raise BadInputError(
            f"integrated gradients need the torch backend, not {encoder.backend!r}; "
            "use backend=torch",
            param="backend",
        )
    with needs_extra("explain"):
        from captum.attr import LayerIntegratedGradients

    scores = _LinearScores(encoder, pooling, layers, window_pool, weights, constant)
    explainer = LayerIntegratedGradients(scores, encoder.model.get_input_embeddings())
    pad = encoder.tokenizer.pad_token_id
    pad = 0 if pad is None else int(pad)
    rows, words, specials, baselines, deltas = [], [], [], [], []
    for r in read:
        text = _PathInputs.of(r, pad, encoder.device)
        pooled, score, baseline = scores.at_ends(text)
        word_scores, special = _token_attributions(
            explainer, text, len(r.spans), len(weights), steps
        )
        # The convergence delta as Captum defines it (its own check wants one row per window
        # here, where a text's windows are one row): the attributions' sum against the change.
        deltas.append(float(np.abs(word_scores.sum(0) + special - (score - baseline)).max()))
        rows.append(pooled)
        baselines.append(baseline)
        words.append(word_scores)
        specials.append(special)
    return Attribution(
        features=np.stack(rows),
        words=words,
        specials=specials,
        baseline=np.stack(baselines),
        delta=np.asarray(deltas),
    )


class _LinearScores:
    """The model's scores as a function of a text's token ids that torch can differentiate.

    What the path integral runs at each of its points: the encoder's forward pass, each
    window's pooling (its ``layers`` side by side), the windows pooled into one vector
    (``window_pool``), then the linear head (``weights``, with the scaling folded in, and
    ``constant``). A text comes as one row, its windows side by side, and is split into its
    ``windows`` rows of ``length`` tokens here, so that Captum sees one input row a text.
    """

    def __init__(
        self,
        encoder: LoadedEncoder,
        pooling: str,
        layers: Sequence[int],
        window_pool: str,
        weights: np.ndarray,
        constant: np.ndarray,
    ) -> None:
        import torch

        self.net = encoder.model
        self.width = len(layers) * encoder.hidden_size
        self.pooling, self.layers, self.window_pool = pooling, layers, window_pool
        self.head = torch.as_tensor(weights, dtype=torch.float32, device=encoder.device)
        self.bias = torch.as_tensor(constant, dtype=torch.float32, device=encoder.device)

    def features(self, ids, attention, windows: int, length: int):
        """The pooled vectors the head reads, one row a text."""
        import torch

        flat_ids, flat_mask = ids.reshape(-1, length), attention.reshape(-1, length)
        out = self.net(input_ids=flat_ids, attention_mask=flat_mask, output_hidden_states=True)
        pooled = torch.cat(
            [
                pool_tokens(out.hidden_states[layer], flat_mask, self.pooling)
                for layer in self.layers
            ],
            dim=-1,
        ).reshape(-1, windows, self.width)
        return pooled.mean(dim=1) if self.window_pool == "mean" else pooled.amax(dim=1)

    def __call__(self, ids, attention, windows: int, length: int):
        return self.features(ids, attention, windows, length) @ self.head.T + self.bias

    def at_ends(self, text: _PathInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ends of ``text``'s path, without gradients.

        Returns
        -------
        features, score, baseline : ndarray
            The text's pooled vector and its scores, and the baseline's scores (float64).
        """
        import torch

        with torch.no_grad():
            pooled = self.features(text.ids, *text.extra)
            score = (pooled @ self.head.T + self.bias)[0].double().cpu().numpy()
            baseline = self(text.baseline, *text.extra)[0].double().cpu().numpy()
        return pooled[0].double().cpu().numpy(), score, baseline


@dataclass(frozen=True)
class _PathInputs:
    """One text as the path integral reads it: its windows side by side in one row.

    ``ids`` are its tokens, ``baseline`` the same with every word's tokens replaced by the pad
    token (special tokens kept), ``attention`` the mask both share; each (1, windows x length),
    the windows padded to the longest. ``owner`` is each token's word (-1: a special token,
    -2: padding).
    """

    ids: Any
    baseline: Any
    attention: Any
    windows: int
    length: int
    owner: np.ndarray

    @property
    def extra(self) -> tuple[Any, int, int]:
        """The arguments of :class:`_LinearScores` after the token ids."""
        return (self.attention, self.windows, self.length)

    @classmethod
    def of(cls, r: ReadText, pad: int, device: Any) -> _PathInputs:
        """``r``'s windows padded with ``pad`` to the longest, and its baseline, on ``device``."""
        import torch

        windows, length = len(r.windows), max(len(w) for w in r.windows)
        ids = torch.full((windows, length), pad, dtype=torch.long)
        attention = torch.zeros((windows, length), dtype=torch.long)
        base = ids.clone()
        for j, (window, owners) in enumerate(zip(r.windows, r.words, strict=True)):
            ids[j, : len(window)] = torch.tensor(window)
            attention[j, : len(window)] = 1
            base[j, : len(window)] = torch.tensor(
                [t if w is None else pad for t, w in zip(window, owners, strict=True)]
            )
        # One row a text: the windows side by side, split again inside ``features``.
        ids, base, attention = (x.reshape(1, -1).to(device) for x in (ids, base, attention))
        # Each token's word (-1: a special token, -2: padding), window by window.
        owner = np.concatenate(
            [np.pad(np.array([-1 if w is None else w for w in ws]), (0, length - len(ws)),
                    constant_values=-2) for ws in r.words]
        )  # fmt: skip
        return cls(ids, base, attention, windows, length, owner)


def _token_attributions(
    explainer: Any, text: _PathInputs, n_words: int, n_scores: int, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each word's and the special tokens' integrated gradients, one score at a time.

    Captum's attributions are per token and embedding dimension: they are summed over the
    dimensions, then over each word's tokens (padding dropped); the special tokens' go to
    their own sum. The steps run in batches of at most ``TOKENS_PER_PASS`` tokens.

    Returns
    -------
    words : ndarray
        (n_words, scores): each word's share of each score's change from the baseline.
    specials : ndarray
        (scores,): the special tokens' share.
    """
    word_scores = np.zeros((n_words, n_scores))
    special = np.zeros(n_scores)
    owner = text.owner
    for s in range(n_scores):
        attributions = explainer.attribute(
            text.ids,
            baselines=text.baseline,
            additional_forward_args=text.extra,
            target=s,
            n_steps=steps,
            internal_batch_size=max(1, TOKENS_PER_PASS // (text.windows * text.length)),
        )
        per_token = attributions.sum(dim=-1).reshape(-1).double().detach().cpu().numpy()
        np.add.at(word_scores[:, s], owner[owner >= 0], per_token[owner >= 0])
        special[s] = per_token[owner == -1].sum()
    return word_scores, special
