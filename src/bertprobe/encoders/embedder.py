"""The scikit-learn transformer from texts to vectors: :class:`TextEmbedder`.

Example:
    >>> from bertprobe.encoders.embedder import TextEmbedder
    >>> embedder = TextEmbedder(encoder="minilm", pooling="mean")
    >>> embedder.fit_transform(["a gorgeous, witty film", "a mess"]).shape  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.encode import embed
from bertprobe.encoders.hub import DEFAULT_ENCODER
from bertprobe.encoders.options import FeatureSpec, RunOptions, options_of


class TextEmbedder(TransformerMixin, BaseEstimator):
    """A scikit-learn transformer from a list of texts to a float32 array of vectors.

    ``fit`` resolves and loads the (frozen) encoder; ``transform`` embeds. Composes with any
    scikit-learn classifier in a :class:`~sklearn.pipeline.Pipeline`, and works inside
    ``GridSearchCV`` and ``cross_val_score``; with the cache on (the default), cross-validation
    folds and grid points reuse the vectors instead of recomputing them, and the clones share
    one loaded encoder per process. Every batch carries its attention mask, so padding never
    leaks into a vector, and rows come back in input order.

    Parameters
    ----------
    encoder : str, default="distilbert-base-uncased"
        A Hugging Face hub name (looked up in the local Hugging Face cache first; the hub is
        asked only when it can be reached), a local model folder (``config.json``, a fast
        tokenizer, weights), or ``"minilm"``: the bundled all-MiniLM-L6-v2 (384 dimensions),
        which works offline.
    revision : str or None, default=None
        A hub encoder's branch, tag or commit hash; ``None``: ``main``. ``encoder_ref_`` holds
        the commit it resolved to. An error with a local folder or ``"minilm"``.
    pooling, layers, max_length, long, stride, window_pool
        The features, as :class:`~bertprobe.encoders.options.FeatureSpec` takes them, with
        its defaults and checks: the pooling of a text's token vectors (``"cls"``, ``"mean"``
        or ``"max"``), the hidden-state layers (concatenated; ``"-2,-1"`` is read as
        ``(-2, -1)``), the max length in tokens (``None``: the encoder's limit), and whether a
        longer text is truncated or embedded as overlapping windows whose vectors are pooled.
    batch_size, max_tokens
        Texts per forward pass, and a cap on a batch's tokens once padded; as
        :class:`~bertprobe.encoders.options.RunOptions` takes them, with its defaults.
    use_cache : bool, default=True
        Read and write the embedding cache: vectors already computed for the same encoder
        weights, layer, pooling, max length and backend are read back, not recomputed, and
        each finished batch is written at once. ``False`` keeps nothing on disk.
    cache_dir : str or None, default=None
        The cache folder; ``None``: ``$BERTPROBE_CACHE_DIR``, else the user cache folder for
        bertprobe (:func:`~bertprobe.encoders.cache.default_cache_dir`). The ONNX backends keep
        their exported encoders there too.
    device : str, default="cpu"
        The torch device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; :meth:`fit` says
        so when this machine has no such device.
    backend : {"torch", "onnx", "onnx-int8"}, default="torch"
        Runs the forward pass in torch, or in ONNX Runtime on the exported encoder (fp32) or
        its int8 quantization (CPU only; needs the ``onnx`` extra). See :mod:`bertprobe.export`.
    progress : bool, default=False
        Show a progress bar on standard error while embedding.

    Attributes
    ----------
    encoder_ref_ : EncoderRef
        The resolved encoder: the name given, its local folder, the fingerprint of its
        config and weight files (which keys the cache), and a hub encoder's commit.
    layers_ : tuple of int
        The absolute hidden-state indices of ``layers`` (0 = embeddings), in order.
    spec_ : FeatureSpec
        The pooling, layers (as given), max length and long-text options the vectors are taken
        with.
    n_features_out_ : int
        Width of a row of :meth:`transform`: the encoder's hidden size times the number of
        layers.

    See Also
    --------
    bertprobe.heads.probe.LinearProbe : The classifier to put after it in a Pipeline.
    bertprobe.model.persist.Classifier.from_pipeline : A fitted ``Pipeline(TextEmbedder,
        LinearProbe)`` as a model folder to save and serve.
    EncoderOptions : The same options, as the command line and :func:`~bertprobe.train` take
        them.
    embed : Texts to vectors as a function, with what the run took.

    Examples
    --------
    >>> from bertprobe import TextEmbedder
    >>> embedder = TextEmbedder("minilm", pooling="mean", use_cache=False)
    >>> embedder.fit_transform(["a gorgeous, witty film", "a mess"]).shape
    (2, 384)
    >>> embedder.layers_, embedder.n_features_out_
    ((6,), 384)

    Two layers side by side:

    >>> embedder = TextEmbedder("minilm", pooling="mean", layers="-2,-1", use_cache=False)
    >>> embedder.fit([]).get_feature_names_out()[[0, 384]]
    array(['layer5_mean_0', 'layer6_mean_0'], dtype=object)

    In a Pipeline with a probe:

    >>> from sklearn.pipeline import make_pipeline
    >>> from bertprobe import LinearProbe
    >>> texts = [
    ...     "a gorgeous, witty film", "warm and funny", "a moving, lovely story",
    ...     "brilliant acting", "a wonderful surprise", "great fun",
    ...     "a dull mess", "boring and slow", "the jokes fall flat",
    ...     "an awful script", "tedious", "a dreadful waste",
    ... ]
    >>> labels = ["pos"] * 6 + ["neg"] * 6
    >>> clf = make_pipeline(
    ...     TextEmbedder("minilm", pooling="mean", use_cache=False), LinearProbe(cv=3)
    ... )
    >>> clf.fit(texts, labels).predict(["a witty, lovely film", "slow and dull"])
    array(['pos', 'neg'], dtype='<U3')
    """

    def __init__(
        self,
        encoder: str = DEFAULT_ENCODER,
        *,
        revision: str | None = None,
        pooling: str = FeatureSpec.pooling,
        layers: int | str | tuple[int, ...] = FeatureSpec.layers,
        max_length: int | None = FeatureSpec.max_length,
        long: str = FeatureSpec.long,
        stride: int | None = FeatureSpec.stride,
        window_pool: str = FeatureSpec.window_pool,
        batch_size: int = RunOptions.batch_size,
        max_tokens: int | None = RunOptions.max_tokens,
        use_cache: bool = RunOptions.use_cache,
        cache_dir: str | None = None,
        device: str = RunOptions.device,
        # An estimator has no model of its own whose backend None could mean.
        backend: str = "torch",
        progress: bool = RunOptions.progress,
    ) -> None:
        self.encoder = encoder
        self.revision = revision
        self.pooling = pooling
        self.layers = layers
        self.max_length = max_length
        self.long = long
        self.stride = stride
        self.window_pool = window_pool
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.use_cache = use_cache
        self.cache_dir = cache_dir
        self.device = device
        self.backend = backend
        self.progress = progress

    def fit(self, X: Sequence[str], y=None) -> TextEmbedder:
        """Resolve and load the encoder, and check the layers; the texts are not used (the
        encoder is frozen).

        Parameters
        ----------
        X : sequence of str
            Ignored.
        y : None
            Ignored; here for Pipeline.

        Returns
        -------
        self : TextEmbedder
            The fitted transformer.
        """
        spec = options_of(FeatureSpec, self)
        model = options_of(RunOptions, self).load(self.encoder, revision=self.revision)
        self.encoder_ref_ = model.ref
        self.layers_ = tuple(model.layer_index(layer) for layer in spec.layers)
        self.spec_ = spec
        self.n_features_out_ = model.hidden_size * len(spec.layers)
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        """One row of ``n_features_out_`` floats per text, in input order.

        Parameters
        ----------
        X : sequence of str
            The texts: a list, or a 1-d array of strings (not a single string).

        Returns
        -------
        ndarray of shape (n_texts, n_features_out_), float32
            The vectors; identical texts are embedded once.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "encoder_ref_")
        run = options_of(RunOptions, self)
        with run.open_cache() as cache:
            vectors, _ = embed(
                as_texts(X), run.load(self.encoder_ref_), self.spec_, run, cache=cache
            )
        return vectors

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``layer{index}_{pooling}_{k}`` for each column of :meth:`transform`, ``index``
        absolute (0 = embeddings); ``input_features`` is ignored."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_features_out_")
        dim = self.n_features_out_ // len(self.layers_)
        return np.array(
            [f"layer{layer}_{self.pooling}_{k}" for layer in self.layers_ for k in range(dim)],
            dtype=object,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


def as_texts(X: Any) -> list[str]:
    """``X`` as a list of texts: a list or a 1-d array of strings; a single string, or an item
    that is not a string, is a one-line error."""
    if isinstance(X, str):
        raise BadInputError("expected a list of texts, got a single string; wrap it in a list")
    texts = list(X.ravel()) if isinstance(X, np.ndarray) else list(X)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise BadInputError(
            f"item {bad[0]} is {type(texts[bad[0]]).__name__}, not a text; pass a list of strings"
        )
    return texts
