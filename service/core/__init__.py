"""The inference core (`inference.InferenceCore`, what every protocol calls): models, their
versions and batches, with no HTTP and no gRPC."""
