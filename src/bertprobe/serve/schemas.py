"""The API's request and answer bodies (pydantic models: the OpenAPI schema clients see) and
the error answers each route declares.

The request bodies are made from the limits when the app is built
(:func:`request_model`), so the schema states them.
"""

from typing import Annotated, Any, Literal, get_args

from bertprobe.core.extras import needs_extra
from bertprobe.model.explain import SERVED_METHODS
from bertprobe.serve.config import ServeLimits

with needs_extra("serve"):
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

# "Has a visible character". Regex engines disagree on what \s covers (Python and pydantic's
# Rust engine count U+0085 and U+001C-U+001F as space, JavaScript counts U+FEFF): the class
# excludes all of them, so a text valid by the published schema is valid for every client.
NON_BLANK_PATTERN = r"[^\s\u0085\u001c-\u001f\ufeff]"


def request_model(
    limits: ServeLimits, name: str = "PredictRequest", **fields: Any
) -> type[BaseModel]:
    """The request body, with the limits written into the OpenAPI schema clients see;
    ``fields`` (pydantic's ``(type, default)``) are asked for besides ``texts``."""
    text = Annotated[
        str,
        StringConstraints(
            strict=True, min_length=1, max_length=limits.max_chars, pattern=NON_BLANK_PATTERN
        ),
    ]
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        texts=(
            list[text],
            Field(
                min_length=1,
                max_length=limits.max_texts,
                description="Texts to classify, each with a non-space character.",
                examples=[["a gorgeous, witty film", "a mess"]],
            ),
        ),
        **fields,
    )


ExplainMethod = Literal["auto", "exact", "occlusion"]
assert set(get_args(ExplainMethod)) == set(SERVED_METHODS)


class Answered(BaseModel):
    """What every answer of the API says of the model that gave it."""

    model: str = Field(description="The id of the model that answered (folder name and hash).")
    model_id: str = Field(description="SHA-256 prefix of that model's card.")
    model_path: str | None = Field(description="The folder that model was loaded from.")


class Prediction(BaseModel):
    label: int | str
    probabilities: dict[str, float]


class PredictResponse(Answered):
    predictions: list[Prediction]


class MultiLabelPrediction(BaseModel):
    labels: list[str] = Field(description="Every label whose probability reaches its threshold.")
    probabilities: dict[str, float] = Field(description="Each label's own probability.")


class MultiLabelPredictResponse(Answered):
    predictions: list[MultiLabelPrediction]


class ExplainedWord(BaseModel):
    text: str = Field(description="The word: the text's characters start to end.")
    start: int = Field(description="Its first character's offset in the text (code points).")
    end: int = Field(description="The offset just past its last character.")
    scores: dict[str, float] = Field(description="Its share of each class's score.")


class ExplainedText(BaseModel):
    text: str
    classes: list[int | str]
    labels: list[int | str] = Field(description="The label given (multi-label: every one).")
    probabilities: dict[str, float]
    score: str = Field(description="What is split: each class's log-odds, or its logit.")
    logits: dict[str, float] = Field(description="Each class's score: constant + word scores.")
    constant: dict[str, float] = Field(description="The part of each score no word carries.")
    words: list[ExplainedWord] = Field(description="The words the encoder read, in order.")
    decision: dict[str, float] | None = Field(
        description="Where each class is given, in score units (None: the largest logit wins)."
    )
    method: str = Field(description="exact, occlusion-delete or occlusion-mask.")
    note: str = Field(description="How to read the scores (the method's caveat).")


class ExplainResponse(Answered):
    explanations: list[ExplainedText]


class Health(BaseModel):
    status: str
    model: str


class ErrorBody(BaseModel):
    detail: str


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(
        default=None,
        max_length=4096,
        description="A model folder to serve instead; default: the folder served now.",
    )


class ReloadResponse(BaseModel):
    model: str
    model_id: str
    model_path: str | None
    previous: str


def explain_request_model(limits: ServeLimits) -> type[BaseModel]:
    """The body of ``/v1/explain``: the texts, within ``limits``, and the method."""
    return request_model(
        limits,
        "ExplainRequest",
        method=(
            ExplainMethod,
            Field(
                default="auto",
                description="exact: the score split over the tokens' states (mean pooling and "
                "a linear head only, else 422); occlusion: leave one word out; auto: exact "
                "where the model allows it.",
            ),
        ),
    )


# --- the error answers each route declares in the schema ---------------------------------------

TOO_LARGE = {
    "model": ErrorBody,
    "description": "The body is too large, or its texts need more of the encoder than the "
    "request timeout allows (send fewer or shorter texts).",
}
UNAUTHORIZED = {"model": ErrorBody, "description": "No API key, or the wrong one."}
# FastAPI answers a body that is not UTF-8 JSON with 400 before any route runs.
NOT_JSON = {"model": ErrorBody, "description": "The body is not UTF-8 JSON."}
# What the routes that run texts through the model answer besides 200: the same limits, key
# and queue for each.
TEXT_ROUTE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: NOT_JSON,
    401: UNAUTHORIZED,
    413: TOO_LARGE,
    422: {"model": ErrorBody, "description": "The body breaks a limit."},
    503: {"model": ErrorBody, "description": "At capacity; see Retry-After."},
    504: {"model": ErrorBody, "description": "No answer within the request timeout."},
}
RELOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: NOT_JSON,
    401: UNAUTHORIZED,
    403: {"model": ErrorBody, "description": "The service was started without a key."},
    409: {"model": ErrorBody, "description": "A reload is already under way."},
    422: {"model": ErrorBody, "description": "The folder failed its checks."},
}
