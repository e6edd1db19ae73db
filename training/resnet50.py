"""`resnet50`: ImageNet photo classification with Keras' pretrained ResNet50 (no training).

Signatures, both -> `probabilities` float32 [batch, 1000] in the class order of labels.txt:

- `serving_default`: `image_bytes` tf.string [batch], encoded JPEG, PNG, GIF (first frame),
  BMP or WebP. The graph decodes to RGB, resizes to 224x224 and applies `preprocess_input`.
- `predict_images`: `images` float32 [batch, 224, 224, 3], RGB in 0..255, as
  `img_to_array(load_img(path, target_size=(224, 224)))` gives it; the graph applies
  `preprocess_input`.

The bytes signature reproduces Keras' documented pipeline bit for bit: `load_img(path,
target_size=(224, 224))` decodes with PIL (JPEG with the accurate integer DCT) and resizes
with PIL's nearest neighbour, which is what the graph does (see `resize_like_pil`). So a file's
bytes reach the network as exactly the pixels Keras' ResNet50 example feeds it (16-bit PNGs
excepted: TensorFlow scales them to 8 bits where PIL clips them).

Weights: Keras' ImageNet release (downloaded into Keras' cache, or `--weights PATH` to a local
copy), or `--weights none` for random weights: the same graph for tests and load/performance
work, whose model card says so loudly.

Labels: Keras' ImageNet class index ships with the package (training/data/), so with
`--weights none` the job needs no network and no data folder; `--data PATH` replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import DataNotFoundError, sha256_of
from training.download import Progress, download, shown_progress
from training.jobs import ReadyMade
from training.model_card import data_provenance, provenance
from training.options import TrainOptions

NAME = "resnet50"
IMAGE_SIZE = 224
NUM_CLASSES = 1000
BYTES_SIGNATURE, BYTES_INPUT = "serving_default", "image_bytes"
FLOAT_SIGNATURE, FLOAT_INPUT = "predict_images", "images"
OUTPUT = "probabilities"

# The files Keras itself downloads (keras/src/applications/imagenet_utils.py and resnet.py),
# with the md5 sums Keras checks; tests/test_resnet50.py checks they still agree with Keras.
# The class index is small and Apache-2.0 (part of Keras): a copy ships in training/data/.
CLASS_INDEX_FILE = "imagenet_class_index.json"
CLASS_INDEX_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
)
CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"
SHIPPED_CLASS_INDEX = Path(__file__).parent / "data" / CLASS_INDEX_FILE
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
WEIGHTS_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{WEIGHTS_FILE}"
WEIGHTS_MD5 = "2cb95161c43110f7111970584f804107"
URL_SCHEME = re.compile(r"(https?|file)://", re.IGNORECASE)

RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS (--weights none): this model has the real ResNet50 graph but untrained "
    "weights, for tests and load/performance work only. Its predictions are meaningless."
)


class WeightsNotAvailableError(DataNotFoundError):
    """The ImageNet weights could not be found, downloaded or loaded; says how to provide them."""


@dataclass(frozen=True)
class Weights:
    """The weights the exported model carries: a file to load, or None for random ones."""

    path: Path | None
    origin: str  # where the file came from, for the model card


WEIGHTS_SIZE = "98 MB"  # as Keras' applications table gives it


def weights_help() -> str:
    return (
        "Provide the weights with one of:\n"
        f"  --weights PATH   a local copy of {WEIGHTS_FILE} (md5 {WEIGHTS_MD5}),\n"
        f"                   downloaded elsewhere from {WEIGHTS_URL}\n"
        "  --weights URL    a mirror of that file (http, https or file URL; md5 checked)\n"
        "  --weights none   random weights: the same graph for tests and load/performance "
        "work; its predictions are meaningless"
    )


def resolve_weights(
    spec: str | None, allow_download: bool, progress: Progress | None = None
) -> Weights:
    """`--weights`: None or 'imagenet' (Keras' cache, else Keras' URL), an http(s) or file URL
    of a mirror, 'none' (random), or a path. Downloads report to `progress` (default: a bar
    on a terminal, else lines)."""
    if spec is not None and spec.lower() == "none":
        return Weights(path=None, origin="random initialisation")
    if spec is not None and URL_SCHEME.match(spec):
        return _downloaded(spec, allow_download, progress)
    if spec is not None and spec.lower() != "imagenet":
        path = Path(spec)
        if not path.is_file():
            raise WeightsNotAvailableError(
                f"--weights {spec}: no such file. It must be a Keras weights file such as "
                f"{WEIGHTS_FILE}.\n{weights_help()}"
            )
        return Weights(path=path, origin="local file")
    return _downloaded(WEIGHTS_URL, allow_download, progress)


def _downloaded(url: str, allow_download: bool, progress: Progress | None) -> Weights:
    """Keras' cached copy when it is intact, else `url` downloaded into Keras' cache."""
    cached = keras_cache() / WEIGHTS_FILE
    if cached.is_file() and hashlib.md5(cached.read_bytes()).hexdigest() == WEIGHTS_MD5:
        return Weights(path=cached, origin=url)
    if not allow_download:
        raise WeightsNotAvailableError(
            f"ResNet50's ImageNet weights are not in Keras' cache ({cached}) and the download "
            f"is disabled (--no-download).\n{weights_help()}"
        )
    try:
        with contextlib.ExitStack() as stack:  # the default display is closed after the download
            report = progress or stack.enter_context(shown_progress(f"downloading {WEIGHTS_FILE}"))
            path = download(url, cached, md5=WEIGHTS_MD5, progress=report)
    except (DataNotFoundError, OSError) as exc:  # OSError: the cache is not writable
        raise WeightsNotAvailableError(
            f"ResNet50's ImageNet weights could not be downloaded: {exc}\n"
            f"{weights_help()}\n(or put the file in Keras' cache, {cached})"
        ) from exc
    return Weights(path=path, origin=url)


def keras_cache() -> Path:
    """Where Keras keeps downloaded application weights (`keras.utils.get_file`'s folder)."""
    return _keras_home() / "models"


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def load_class_index(data: Path | None) -> tuple[list[list[str]], Path]:
    """The 1000 (WordNet id, name) pairs in output order, and the file they came from.

    From --data (the file, or a folder holding it), else the copy shipped with the package:
    no search and no download.
    """
    if data is None:
        path = SHIPPED_CLASS_INDEX
        if not path.is_file():  # a broken installation
            raise DataNotFoundError(
                f"The ImageNet class index that ships with modelserve is missing ({path}). "
                f"Reinstall modelserve, or give --data PATH to Keras' {CLASS_INDEX_FILE} "
                f"({CLASS_INDEX_URL})."
            )
    else:
        path = data / CLASS_INDEX_FILE if data.is_dir() else data
        if not path.is_file():
            problem = f"no {CLASS_INDEX_FILE} in that folder" if data.is_dir() else "no such file"
            raise DataNotFoundError(f"The ImageNet class index: --data {data}: {problem}.")
    return read_class_index(path), path


def read_class_index(path: Path) -> list[list[str]]:
    """Keras' imagenet_class_index.json -> [[wnid, name], ...] for classes 0..999."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        classes = [index[str(i)] for i in range(NUM_CLASSES)]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataNotFoundError(f"{path} is not a readable JSON file: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise DataNotFoundError(
            f"{path} is not Keras' ImageNet class index: it needs keys '0'..'999' ({exc!r})"
        ) from exc
    for i, entry in enumerate(classes):
        if not (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(s, str) for s in entry)
        ):
            raise DataNotFoundError(f"{path}: class {i} must be [wordnet_id, name], got {entry!r}")
    if len(index) != NUM_CLASSES:
        raise DataNotFoundError(f"{path} has {len(index)} classes, expected {NUM_CLASSES}")
    return classes


def build_model(weights: Weights, seed: int) -> Any:
    """Keras' ResNet50 (1000-class head, softmax) with the chosen weights."""
    import keras

    keras.utils.set_random_seed(seed)  # random weights are repeatable
    model = keras.applications.ResNet50(weights=None)
    if weights.path is not None:
        try:
            model.load_weights(weights.path)
        except Exception as exc:  # h5py/Keras raise many types for a wrong or damaged file
            raise WeightsNotAvailableError(
                f"could not load ResNet50 weights from {weights.path}: {exc}\n{weights_help()}"
            ) from exc
    return model


def pil_nearest_indices(sizes: Any, target: int) -> Any:
    """For each output row and column, the source row and column PIL's NEAREST resize samples.

    `sizes` is int32 [2] (height, width); returns int32 [target, 2].
    """
    import tensorflow as tf

    # DivNoNan rather than `/`: grappler rewrites division by a constant as multiplication by
    # its reciprocal, which rounds differently from PIL's division.
    step = tf.math.divide_no_nan(tf.cast(sizes, tf.float64), tf.constant(target, tf.float64))
    # PIL starts half a step in and adds `step` once per output pixel, truncating each sum.
    # Where a sample falls exactly on a pixel border (sizes that are multiples of 64, such as
    # 640 or 1024) that sequential float64 rounding decides which neighbour is taken, so the
    # sum is repeated step by step: not computed as (i + 0.5) * step, and with tf.scan rather
    # than tf.math.cumsum, whose summation order is up to the kernel (parallel on GPUs). The
    # loop costs about 1 ms per image, next to ResNet50's ~50 ms.
    first = 0.5 * step
    rest = tf.scan(lambda position, _: position + step, tf.range(target - 1), initializer=first)
    positions = tf.concat([first[tf.newaxis], rest], axis=0)
    return tf.minimum(tf.cast(positions, tf.int32), sizes - 1)


def resize_like_pil(image: Any, target: int = IMAGE_SIZE) -> Any:
    """[h, w, c] -> [target, target, c], picking the same pixels as Keras' `load_img`.

    `load_img(path, target_size=(224, 224))` (Keras' ResNet50 example) resizes with PIL's
    nearest neighbour, without keeping the aspect ratio.
    """
    import tensorflow as tf

    indices = pil_nearest_indices(tf.shape(image)[:2], target)
    rows = tf.gather(image, indices[:, 0], axis=0)
    return tf.gather(rows, indices[:, 1], axis=1)


def decode_and_resize(encoded: Any) -> Any:
    """One encoded image (scalar tf.string) -> float32 [224, 224, 3] RGB in 0..255."""
    import tensorflow as tf

    # channels=3 turns grayscale into RGB and drops alpha, as PIL's convert("RGB") does;
    # expand_animations=False gives a GIF's first frame. JPEG is decoded with the accurate
    # integer DCT, as PIL does it: TF's default fast DCT differs by a few levels per pixel.
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return tf.cast(resize_like_pil(image), tf.float32)


def serving_functions(model: Any) -> tuple[Any, Any]:
    """The bytes and float signatures around a Keras model that takes preprocessed images.

    `model` maps `preprocess_input(images)` ([batch, 224, 224, 3]) to its outputs; ResNet50 in
    production, any small stand-in in tests.
    """
    import tensorflow as tf
    from keras.applications.resnet50 import preprocess_input

    def classify(images: Any) -> dict[str, Any]:
        # Keras' own preprocess_input ("caffe": RGB -> BGR, minus the ImageNet channel means),
        # traced into the graph, so serving cannot drift from Keras.
        return {OUTPUT: model(preprocess_input(images), training=False)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name=FLOAT_INPUT)
        ]
    )
    def predict_images(images: Any) -> dict[str, Any]:
        return classify(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    def serve_bytes(image_bytes: Any) -> dict[str, Any]:
        images = tf.map_fn(
            decode_and_resize,
            image_bytes,
            fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32),
        )
        return classify(images)

    return serve_bytes, predict_images


def check_signatures(loaded: Any) -> dict[str, Any]:
    """Both signatures of the exported model on one synthetic image: they must agree.

    The float signature gets the image as Keras' `load_img` would resize it (PIL, nearest),
    so this also checks the graph's decode and resize against Keras' pipeline.
    """
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    y, x = np.mgrid[0:300, 0:451]
    image = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    resized = Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.NEAREST)
    from_bytes = loaded.signatures[BYTES_SIGNATURE](
        **{BYTES_INPUT: tf.stack([tf.io.encode_png(image)])}
    )
    from_floats = loaded.signatures[FLOAT_SIGNATURE](
        **{FLOAT_INPUT: np.asarray(resized, dtype=np.float32)[np.newaxis]}
    )
    difference = float(np.abs(from_bytes[OUTPUT].numpy() - from_floats[OUTPUT].numpy()).max())
    return {
        "image": "synthetic 451x300 RGB gradient: PNG bytes vs PIL-resized floats",
        "max_abs_difference": difference,
        "agree": difference <= 1e-4,
    }


def train(options: TrainOptions) -> Path:
    """Build ResNet50 with the chosen weights, export the next version, return its folder."""
    return export(options, fetch(options))


def fetch(options: TrainOptions, progress: Progress | None = None) -> Weights:
    """The weights `options` ask for, downloaded first if need be (reporting to `progress`;
    by default a bar on a terminal, else lines).

    Raises WeightsNotAvailableError (saying how to provide them) when they cannot be had."""
    load_class_index(options.data)  # a wrong --data fails before a long download
    weights = resolve_weights(options.weights, options.allow_download, progress)
    if weights.path is None:
        print(f"warning: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    else:
        print(f"ResNet50 weights: {weights.path}")
    return weights


def export(options: TrainOptions, weights: Weights) -> Path:
    """ResNet50 with `weights`, exported as the next version; its folder."""
    from training.export import ExportRequest, export_model

    classes, index_path = load_class_index(options.data)
    model = build_model(weights, options.seed)
    serve_bytes, predict_images = serving_functions(model)
    print("exporting ResNet50 (tracing both signatures)")

    def evaluate(loaded: Any, extra: Path) -> dict[str, Any]:
        return {"signature_check": check_signatures(loaded)}

    request = ExportRequest(
        name=NAME,
        model=model,
        serving_fn=serve_bytes,
        labels=[name for _, name in classes],
        card=_card(options, weights, index_path),
        evaluate=evaluate,
        other_signatures={FLOAT_SIGNATURE: predict_images},
        other_assets=[index_path],
    )
    return export_model(request, options.output, options.keep_versions, options.model_dir)


def _weights_card(weights: Weights, seed: int) -> dict[str, Any]:
    if weights.path is None:
        return {
            "weights": "random",
            "warning": RANDOM_WEIGHTS_WARNING,
            "weights_source": {"origin": weights.origin, "seed": seed},
        }
    md5 = hashlib.md5(weights.path.read_bytes()).hexdigest()
    card: dict[str, Any] = {
        "weights": "imagenet",
        "weights_source": {
            "origin": weights.origin,
            "file": weights.path.name,
            "sha256": sha256_of(weights.path),
            "matches_keras_release": md5 == WEIGHTS_MD5,
        },
    }
    if md5 != WEIGHTS_MD5:
        card["warning"] = (
            f"the weights file {weights.path.name} is not Keras' published {WEIGHTS_FILE} "
            f"(md5 {md5}, expected {WEIGHTS_MD5}); predictions are only as good as that file."
        )
    return card


def _card(options: TrainOptions, weights: Weights, index_path: Path) -> dict[str, Any]:
    return {
        "task": "image classification: ImageNet (ILSVRC-2012), 1000 classes",
        "description": "Keras' ResNet50 (He et al. 2015) exported as is, no training; decode, "
        "resize and preprocess_input run inside the graph.",
        **_weights_card(weights, options.seed),
        "input": {
            BYTES_INPUT: f"{BYTES_SIGNATURE}: tf.string [batch], encoded JPEG, PNG, GIF (first "
            "frame), BMP or WebP of any size; decoded to RGB (grayscale replicated, alpha "
            "dropped), resized to 224x224 like keras.utils.load_img(target_size=(224, 224)) "
            "(PIL nearest neighbour, aspect ratio not kept)",
            FLOAT_INPUT: f"{FLOAT_SIGNATURE}: float32 [batch, 224, 224, 3], RGB in 0..255, "
            "as keras.utils.img_to_array(load_img(path, target_size=(224, 224))) gives",
        },
        "output": {
            OUTPUT: "float32 [batch, 1000]: softmax over the ImageNet classes in the order of "
            f"labels (assets/labels.txt) and assets/{CLASS_INDEX_FILE} (WordNet ids), as "
            "keras.applications.resnet50.decode_predictions reads them"
        },
        "preprocessing": "keras.applications.resnet50.preprocess_input in the graph: RGB to "
        "BGR, minus the ImageNet channel means (103.939, 116.779, 123.68), no scaling",
        "data": {
            **data_provenance(
                index_path,
                source=f"Keras' ImageNet class index, {CLASS_INDEX_URL}",
                license_="Apache-2.0 (Keras); WordNet ids and names of the ILSVRC-2012 classes",
            ),
            "classes": NUM_CLASSES,
        },
        "hyperparameters": {"image_size": IMAGE_SIZE, "seed": options.seed},
        **provenance(),
    }


READY_MADE = ReadyMade(
    name=NAME,
    fetches=f"Keras' ResNet50 ImageNet weights ({WEIGHTS_SIZE}, kept in Keras' cache: "
    "$KERAS_HOME/models, by default ~/.keras/models)",
    source_setting="resnet50_weights",
    how_to_provide=f"download {WEIGHTS_FILE} (md5 {WEIGHTS_MD5}) from {WEIGHTS_URL} and start "
    "with --resnet50-weights PATH (or run `modelserve train resnet50 --weights PATH`)",
    fetch=fetch,
    export=export,
)
