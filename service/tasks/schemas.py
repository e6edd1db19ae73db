"""Request and answer types of the task API (`/api/v1/...`), with the examples `/docs` shows.
Every prediction carries a label and the probabilities behind it, never a bare argmax."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.tasks.mnist_format import FIELD

VoteValue = Literal["y", "n", "?"]
Pixel = Annotated[int, Field(strict=True, ge=0, le=255)]
PixelRow = Annotated[list[Pixel], Field(min_length=FIELD, max_length=FIELD)]
DigitImage = Annotated[list[PixelRow], Field(min_length=FIELD, max_length=FIELD)]


def _example_seven() -> list[Any]:
    """A 7 drawn in MNIST's format: a bar, then a diagonal stroke."""
    seven = [[0] * FIELD for _ in range(FIELD)]
    for col in range(8, 21):
        seven[6][col] = seven[7][col] = 255
    for step in range(15):
        seven[8 + step][19 - step // 2] = seven[8 + step][20 - step // 2] = 255
    return seven


def _examples(*examples: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


def _answer_example(model: str, prediction: Any, **extra: Any) -> ConfigDict:
    return _examples({"model": model, "version": 1, **extra, "predictions": [prediction]})


class _Documented(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)


class _Strict(_Documented):
    model_config = ConfigDict(extra="forbid")


class DigitArrays(_Strict):
    """Digits already in MNIST's format: 28x28 grey levels, white digit on black."""

    images: list[DigitImage] = Field(min_length=1)

    model_config = _examples({"images": [_example_seven()]})


class SentimentRequest(_Strict):
    texts: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    """Raw review texts (any length up to the server's limit; HTML tags are ignored)."""

    model_config = _examples(
        {
            "texts": [
                "A beautiful, moving film with superb acting. I loved every minute.",
                "Dull plot, wooden acting, and twenty minutes too long. Avoid.",
            ]
        }
    )


class PartyRequest(_Strict):
    votes: list[dict[str, VoteValue]] = Field(min_length=1)
    """Per member of Congress, bill name -> "y" (yea), "n" (nay) or "?" (did not vote; the
    same as leaving the bill out). Names as in the UCI house-votes-84 file."""

    model_config = _examples(
        {
            "votes": [
                {
                    "handicapped-infants": "y",
                    "water-project-cost-sharing": "n",
                    "adoption-of-the-budget-resolution": "y",
                    "physician-fee-freeze": "n",
                    "el-salvador-aid": "n",
                    "religious-groups-in-schools": "n",
                    "anti-satellite-test-ban": "y",
                    "aid-to-nicaraguan-contras": "y",
                    "mx-missile": "y",
                    "immigration": "n",
                    "synfuels-corporation-cutback": "y",
                    "education-spending": "n",
                    "superfund-right-to-sue": "n",
                    "crime": "n",
                    "duty-free-exports": "y",
                    "export-administration-act-south-africa": "?",
                }
            ]
        }
    )


class TaskAnswer(_Documented):
    model: str
    """The model that answered."""
    version: int
    """Its version."""


class DigitPrediction(_Documented):
    file: str | None
    """The uploaded file's name (null for JSON arrays)."""
    digit: int
    confidence: float
    """Probability of `digit`."""
    probabilities: list[float]
    """Probabilities of the digits 0..9."""
    uncertain: bool
    """True when `confidence` is below 0.8 (the model's probabilities are calibrated): the
    picture may not show one clear digit, so take `digit` as a guess."""
    model_input: str | None = None
    """With `?show_input=true`: the 28x28 image the model saw (after the picture was converted
    to MNIST's format), as a PNG data URL; null otherwise."""


class DigitsAnswer(TaskAnswer):
    predictions: list[DigitPrediction]

    model_config = _answer_example(
        "digits",
        {
            "file": "seven.png",
            "digit": 7,
            "confidence": 0.9991,
            "probabilities": [0, 0, 0.0004, 0.0001, 0, 0, 0, 0.9991, 0, 0.0004],
            "uncertain": False,
            "model_input": None,
        },
    )


class ImageClass(_Documented):
    class_id: str
    """WordNet id of the ImageNet class."""
    label: str
    score: float
    """Probability of the class."""


class ImagesAnswer(TaskAnswer):
    warning: str | None = None
    """Set when the model's answers are not to be trusted (random weights, opted in)."""
    predictions: list[list[ImageClass]]
    """Per image, the `top_k` classes, most probable first."""

    model_config = _answer_example(
        "resnet50",
        [
            {"class_id": "n02123045", "label": "tabby", "score": 0.71},
            {"class_id": "n02123159", "label": "tiger_cat", "score": 0.19},
        ],
        warning=None,
    )


class SentimentPrediction(_Documented):
    label: str
    """`positive` or `negative`."""
    score: float
    """Probability that the review is positive."""
    probabilities: dict[str, float]


class SentimentAnswer(TaskAnswer):
    predictions: list[SentimentPrediction]

    model_config = _answer_example(
        "sentiment",
        {"label": "positive", "score": 0.97, "probabilities": {"negative": 0.03, "positive": 0.97}},
    )


class PartyPrediction(_Documented):
    party: str
    """`democrat` or `republican`."""
    probabilities: dict[str, float]


class PartyAnswer(TaskAnswer):
    predictions: list[PartyPrediction]

    model_config = _answer_example(
        "votes", {"party": "republican", "probabilities": {"democrat": 0.02, "republican": 0.98}}
    )


def json_body_doc(model: type[BaseModel], **other_content: Any) -> dict[str, Any]:
    """OpenAPI `requestBody` for a route that parses its JSON body itself (orjson, size limit):
    the schema and examples `/docs` would show for a pydantic body parameter."""
    schema = model.model_json_schema()
    examples = {f"example {i + 1}": {"value": e} for i, e in enumerate(schema.pop("examples", []))}
    json_content = {"schema": schema, "examples": examples}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": json_content, **other_content},
        }
    }


_IMAGE_FILES = {
    "type": "array",
    "items": {"type": "string", "format": "binary"},
    "description": "One or more images (JPEG, PNG, GIF, BMP or WebP), each in a `file` field.",
}
FILES_CONTENT = {
    "multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": {"file": _IMAGE_FILES}}
    }
}
