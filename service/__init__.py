"""modelserve: a model-serving gateway for TensorFlow SavedModels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelserve")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
