"""Protocol adapters: parse and validate requests, call a model version, encode answers.

They know their wire formats (JSON and HTTP, protobuf and gRPC), never TensorFlow internals.
"""
