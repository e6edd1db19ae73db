"""The resnet50 job: in-graph preprocessing against Keras' own pipeline, the export, the errors.

Preprocessing is checked on a stand-in network that returns its (preprocessed) input, so every
pixel is compared. One real ResNet50 with random weights is exported once for this module, by
`modelserve train resnet50 --weights none --no-download` run offline: from an empty folder,
with an empty HOME (no Keras cache), an empty $MODELSERVE_DATA_DIR (no data folder, and none
beside the checkout either) and no network, so it proves the job needs nothing but the package
(about 30 s on 2 cores). No test needs the ImageNet weights.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from service.core.layout import existing_versions, read_model_card
from tests.conftest import REPO_ROOT
from training import resnet50
from training.data import DATA_DIR_ENV, DataNotFoundError, sha256_of

MODELSERVE = shutil.which("modelserve") or str(Path(sys.executable).parent / "modelserve")
SEED = 1337


def write_class_index(path: Path, classes: int = 1000) -> Path:
    """A file in the layout of Keras' imagenet_class_index.json, with made-up classes."""
    index = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(classes)}
    path.write_text(json.dumps(index), encoding="utf-8")
    return path


def encode(array: np.ndarray, image_format: str, mode: str | None = None, **options: Any) -> bytes:
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode) if mode != "P" else image.quantize(64)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB: smooth gradients (JPEG-friendly) plus noise (every pixel distinct)."""
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    noise = np.random.default_rng(seed).integers(0, 40, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def rgba(height: int, width: int) -> np.ndarray:
    alpha = np.random.default_rng(1).integers(0, 256, (height, width, 1), dtype=np.uint8)
    return np.concatenate([photo(height, width), alpha], axis=-1)


# Sizes include 640 and 1024 (multiples of 64, where PIL's nearest neighbour breaks ties by
# its float rounding), upscaling (37x53) and 224x224 itself (no resize).
SAMPLES: dict[str, bytes] = {
    "jpeg": encode(photo(480, 640), "JPEG", quality=90),
    "jpeg_gray": encode(photo(300, 451)[..., 0], "JPEG"),
    "png_rgb": encode(photo(224, 224), "PNG"),
    "png_rgba": encode(rgba(1024, 300), "PNG"),
    "png_gray": encode(photo(37, 53)[..., 1], "PNG"),
    "png_palette": encode(photo(256, 192), "PNG", mode="P"),
    "gif": encode(photo(333, 250), "GIF"),
    "bmp": encode(photo(120, 640), "BMP"),
    "webp": encode(photo(200, 300), "WEBP", lossless=True),
}
FORMATS_OF_THE_ISSUE = ["jpeg", "png_rgb", "png_rgba", "png_gray", "gif", "bmp"]


def keras_pixels(encoded: bytes) -> np.ndarray:
    """Keras' documented ResNet50 input: img_to_array(load_img(f, target_size=(224, 224)))."""
    image = keras.utils.load_img(io.BytesIO(encoded), target_size=(224, 224))
    return np.asarray(keras.utils.img_to_array(image), dtype=np.float32)


def keras_preprocess(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(keras.applications.resnet50.preprocess_input(pixels.copy()))


# --- preprocessing, on a stand-in network that returns its preprocessed input -------------


@pytest.fixture(scope="module")
def passthrough() -> tuple[Any, Any]:
    """(serve_bytes, predict_images) around a model whose output is its input."""
    inputs = keras.Input((224, 224, 3))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    return resnet50.serving_functions(model)


def test_float_signature_applies_keras_preprocess_input(passthrough: tuple[Any, Any]) -> None:
    _, predict_images = passthrough
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    served = predict_images(images=tf.constant(pixels))[resnet50.OUTPUT].numpy()
    np.testing.assert_allclose(served, keras_preprocess(pixels), rtol=0, atol=1e-5)
    # caffe mode: BGR order, ImageNet means subtracted, no scaling
    np.testing.assert_allclose(served[0, 0, 0], pixels[0, 0, 0, ::-1] - [103.939, 116.779, 123.68])


def test_bytes_signature_matches_keras_load_img_bit_for_bit(passthrough: tuple[Any, Any]) -> None:
    serve_bytes, _ = passthrough
    batch = tf.constant(list(SAMPLES.values()))  # mixed formats and sizes in one batch
    served = serve_bytes(image_bytes=batch)[resnet50.OUTPUT].numpy()
    assert served.shape == (len(SAMPLES), 224, 224, 3)
    for row, (name, encoded) in zip(served, SAMPLES.items(), strict=True):
        np.testing.assert_array_equal(row, keras_preprocess(keras_pixels(encoded)), err_msg=name)


def test_resize_picks_the_same_pixels_as_pil() -> None:
    indices = tf.function(
        lambda sizes: resnet50.pil_nearest_indices(sizes, 224),
        input_signature=[tf.TensorSpec([2], tf.int32)],
    )
    sizes = [*range(1, 300), *range(320, 4097, 64), 4000, 4032, 3024, 2521, 3361]
    for size in sizes:
        column = np.arange(size, dtype=np.int32)[np.newaxis]  # pixel value = its column
        expected = np.asarray(Image.fromarray(column, mode="I").resize((224, 1), Image.NEAREST))
        got = indices(tf.constant([size, size])).numpy()
        np.testing.assert_array_equal(got[:, 0], expected[0], err_msg=f"size {size}")
        np.testing.assert_array_equal(got[:, 1], expected[0], err_msg=f"size {size}")


def test_bytes_signature_rejects_what_is_not_an_image(passthrough: tuple[Any, Any]) -> None:
    serve_bytes, _ = passthrough
    empty = serve_bytes(image_bytes=tf.constant([], tf.string))[resnet50.OUTPUT]
    assert empty.shape == (0, 224, 224, 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve_bytes(image_bytes=tf.constant([b"not an image"]))


def test_download_constants_are_keras_own() -> None:
    from keras.src.applications import imagenet_utils, resnet

    assert resnet50.CLASS_INDEX_URL == imagenet_utils.CLASS_INDEX_PATH
    assert resnet50.CLASS_INDEX_MD5 in inspect.getsource(imagenet_utils.decode_predictions)
    assert resnet50.WEIGHTS_URL == resnet.BASE_WEIGHTS_PATH + resnet50.WEIGHTS_FILE
    assert resnet.WEIGHTS_HASHES["resnet50"][0] == resnet50.WEIGHTS_MD5


# --- the class index that ships with the package -----------------------------------------


def test_the_shipped_class_index_is_keras_own() -> None:
    shipped = resnet50.SHIPPED_CLASS_INDEX
    assert hashlib.md5(shipped.read_bytes()).hexdigest() == resnet50.CLASS_INDEX_MD5
    classes, path = resnet50.load_class_index(None)
    assert path == shipped
    assert classes[0] == ["n01440764", "tench"]
    assert len(classes) == 1000


def test_the_class_index_is_package_data() -> None:
    """Installed from a wheel (as the Docker image is), the package still holds the file."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["training"]
    relative = resnet50.SHIPPED_CLASS_INDEX.relative_to(REPO_ROOT / "training").as_posix()
    assert any(fnmatch(relative, pattern) for pattern in patterns), patterns


def test_class_index_from_an_explicit_file_or_folder(no_shared_data: Path) -> None:
    write_class_index(no_shared_data / resnet50.CLASS_INDEX_FILE)  # the data folder: not used
    assert resnet50.load_class_index(None)[1] == resnet50.SHIPPED_CLASS_INDEX
    folder = no_shared_data / "mine"
    folder.mkdir()
    path = write_class_index(folder / resnet50.CLASS_INDEX_FILE)
    classes, found = resnet50.load_class_index(folder)
    assert found == path
    assert classes[0] == ["n00000000", "class_0"]
    assert resnet50.load_class_index(path)[1] == path


def test_a_missing_explicit_class_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"--data \S*nope\.json: no such file"):
        resnet50.load_class_index(tmp_path / "nope.json")
    with pytest.raises(DataNotFoundError, match=r"no imagenet_class_index\.json in that folder"):
        resnet50.load_class_index(tmp_path)


# --- one real ResNet50, random weights, exported once, offline ---------------------------


def offline_env(root: Path) -> tuple[dict[str, str], Path]:
    """An environment with nothing to find and no way out, and an empty folder to run in:
    HOME is empty (no Keras cache; KERAS_HOME is dropped), $MODELSERVE_DATA_DIR is an empty
    folder (which also keeps the search away from any data folder beside the checkout), and
    the proxy is dead, so a test behaves the same on machines that have internet."""
    for folder in ("home", "data", "work"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    dead_proxy = "http://127.0.0.1:9"
    env = {key: value for key, value in os.environ.items() if key != "KERAS_HOME"}
    env.update(
        {
            "COLUMNS": "200",
            "HOME": str(root / "home"),
            DATA_DIR_ENV: str(root / "data"),
            "https_proxy": dead_proxy,
            "HTTPS_PROXY": dead_proxy,
            "http_proxy": dead_proxy,
            "HTTP_PROXY": dead_proxy,
            "no_proxy": "",
            "NO_PROXY": "",
        }
    )
    return env, root / "work"


def run_train(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`modelserve train resnet50 ...` in `offline_env(root)`."""
    env, cwd = offline_env(root)
    return subprocess.run(
        [MODELSERVE, "train", "resnet50", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    output = root / "models"
    result = run_train(
        "--weights",
        "none",
        "--no-download",
        "--seed",
        str(SEED),
        "--output",
        str(output),
        root=root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RANDOM WEIGHTS" in result.stderr
    return output / resnet50.NAME / "1"


def test_offline_export_needs_nothing_but_the_package(exported: Path) -> None:
    root = exported.parents[2]
    card = read_model_card(exported)
    assert card["data"]["file"] == resnet50.CLASS_INDEX_FILE
    assert card["data"]["sha256"] == sha256_of(resnet50.SHIPPED_CLASS_INDEX)
    assert "Apache-2.0" in card["data"]["license"]
    assert "--no-download" in card["training_command"]
    assert list((root / "data").iterdir()) == []  # nothing was fetched into the data folder
    assert not (root / "home" / ".keras" / "models").exists()  # nor into Keras' cache


@pytest.fixture(scope="module")
def loaded(exported: Path) -> Any:
    return tf.saved_model.load(str(exported))


def test_exports_both_signatures(exported: Path, loaded: Any) -> None:
    assert exported.name == "1"
    expected = {
        "serving_default": ("image_bytes", tf.string, [None]),
        "predict_images": ("images", tf.float32, [None, 224, 224, 3]),
    }
    assert set(loaded.signatures) == set(expected)
    card = read_model_card(exported)
    for signature_name, (input_name, dtype, shape) in expected.items():
        signature = loaded.signatures[signature_name]
        _, inputs = signature.structured_input_signature
        assert list(inputs) == [input_name]
        assert inputs[input_name].dtype == dtype
        assert inputs[input_name].shape.as_list() == shape
        output = signature.structured_outputs["probabilities"]
        assert list(signature.structured_outputs) == ["probabilities"]
        assert (output.dtype, output.shape.as_list()) == (tf.float32, [None, 1000])
        assert card["signatures"][signature_name] == {
            "inputs": {input_name: {"dtype": dtype.name, "shape": shape}},
            "outputs": {"probabilities": {"dtype": "float32", "shape": [None, 1000]}},
        }


def test_labels_and_class_index_ship_as_assets(exported: Path) -> None:
    class_index = resnet50.SHIPPED_CLASS_INDEX
    assets = exported / "assets"
    labels = (assets / "labels.txt").read_text(encoding="utf-8").splitlines()
    index = json.loads(class_index.read_text(encoding="utf-8"))
    assert len(labels) == 1000
    assert labels == [index[str(i)][1] for i in range(1000)]
    assert labels[:2] == ["tench", "goldfish"]
    assert (assets / "imagenet_class_index.json").read_bytes() == class_index.read_bytes()
    assert read_model_card(exported)["labels"] == labels


def test_card_says_loudly_that_the_weights_are_random(exported: Path) -> None:
    card = read_model_card(exported)
    assert card["weights"] == "random"
    assert "RANDOM WEIGHTS" in card["warning"]
    assert "meaningless" in card["warning"]
    assert card["weights_source"]["seed"] == SEED
    assert set(card["input"]) == {"image_bytes", "images"}
    assert card["metrics"]["signature_check"]["agree"] is True
    assert card["framework"]["tensorflow"] == tf.__version__


@pytest.mark.parametrize("name", FORMATS_OF_THE_ISSUE)
def test_bytes_and_float_signatures_agree(loaded: Any, name: str) -> None:
    # The float signature gets the image as Keras' load_img decodes and resizes it; the
    # passthrough tests above show the graph does the same, bit for bit.
    encoded = SAMPLES[name]
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([encoded]))
    from_floats = loaded.signatures["predict_images"](images=keras_pixels(encoded)[np.newaxis])
    probabilities = from_bytes["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, from_floats["probabilities"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


def test_lossy_jpeg_agrees_with_tensorflow_decoding_too(loaded: Any) -> None:
    # Independent of PIL: decode with TensorFlow (the accurate DCT, as the graph does), resize
    # the same way, and feed the float signature.
    encoded = SAMPLES["jpeg"]
    pixels = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")
    pixels = tf.cast(resnet50.resize_like_pil(pixels), tf.float32)[tf.newaxis]
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([encoded]))
    from_floats = loaded.signatures["predict_images"](images=pixels)
    np.testing.assert_allclose(
        from_bytes["probabilities"], from_floats["probabilities"], rtol=1e-4, atol=1e-4
    )


def test_float_signature_is_keras_resnet50_on_preprocess_input(loaded: Any) -> None:
    # Random weights seeded as the export seeded them give the same network.
    model = resnet50.build_model(resnet50.Weights(path=None, origin="test"), seed=SEED)
    pixels = np.stack([keras_pixels(SAMPLES[name]) for name in ("jpeg", "png_rgba", "gif")])
    expected = model.predict(keras.applications.resnet50.preprocess_input(pixels.copy()), verbose=0)
    served = loaded.signatures["predict_images"](images=pixels)["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)


# --- weights and data that are not there ---------------------------------------------------


def test_local_weights_file_is_loaded_and_recorded(tmp_path: Path) -> None:
    source = resnet50.build_model(resnet50.Weights(path=None, origin="test"), seed=7)
    weights_file = tmp_path / "resnet50-seed7.weights.h5"
    source.save_weights(weights_file)

    weights = resnet50.resolve_weights(str(weights_file), allow_download=False)
    assert weights == resnet50.Weights(path=weights_file, origin="local file")
    model = resnet50.build_model(weights, seed=SEED)  # the file, not the seed, decides
    for got, want in zip(model.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

    card = resnet50._weights_card(weights, SEED)
    assert card["weights"] == "imagenet"
    assert card["weights_source"]["sha256"] == sha256_of(weights_file)
    assert card["weights_source"]["matches_keras_release"] is False
    assert "not Keras' published" in card["warning"]


def test_a_file_that_is_not_resnet50_weights_is_a_clear_error(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(b"not hdf5")
    weights = resnet50.resolve_weights(str(damaged), allow_download=False)
    with pytest.raises(resnet50.WeightsNotAvailableError, match="could not load ResNet50 weights"):
        resnet50.build_model(weights, seed=SEED)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(resnet50.WeightsNotAvailableError) as caught:
        resnet50.resolve_weights(str(tmp_path / "nonexistent.h5"), allow_download=True)
    message = str(caught.value)
    assert "nonexistent.h5: no such file" in message
    assert "--weights none" in message
    assert resnet50.WEIGHTS_FILE in message


def test_no_download_and_nothing_cached_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(resnet50.WeightsNotAvailableError, match="--no-download"):
        resnet50.resolve_weights(None, allow_download=False)
    assert resnet50.resolve_weights("NONE", allow_download=False).path is None


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "not a readable JSON file"),
        (json.dumps({str(i): ["n1", "x"] for i in range(10)}), "keys '0'..'999'"),
        (json.dumps({str(i): "tench" for i in range(1000)}), r"\[wordnet_id, name\]"),
        (json.dumps({str(i): ["n1", "x"] for i in range(1001)}), "1001 classes"),
    ],
)
def test_class_index_in_another_layout_is_rejected(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / resnet50.CLASS_INDEX_FILE
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataNotFoundError, match=complaint):
        resnet50.read_class_index(path)


def test_cli_without_weights_or_network_fails_clearly(tmp_path: Path) -> None:
    index = write_class_index(tmp_path / resnet50.CLASS_INDEX_FILE)
    output = tmp_path / "models"
    result = run_train("--data", str(index), "--output", str(output), root=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert "ImageNet weights could not be downloaded" in message
    assert "--weights PATH" in message
    assert "--weights none" in message
    assert resnet50.WEIGHTS_FILE in message
    assert "Traceback" not in result.stdout + result.stderr
    assert existing_versions(output / "resnet50") == []


def test_cli_with_missing_weights_file_fails_clearly(tmp_path: Path) -> None:
    index = write_class_index(tmp_path / resnet50.CLASS_INDEX_FILE)
    output = tmp_path / "models"
    result = run_train(
        "--data",
        str(index),
        "--output",
        str(output),
        "--weights",
        "/nonexistent.h5",
        root=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "--weights /nonexistent.h5: no such file" in message
    assert "--weights none" in message
    assert "Traceback" not in result.stdout + result.stderr
    assert existing_versions(output / "resnet50") == []
