"""Protocol adapters: parse and validate requests, call a model version, encode answers.

They know JSON and HTTP (and, later, gRPC), never TensorFlow internals.
"""
