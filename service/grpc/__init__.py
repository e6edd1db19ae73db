"""The gRPC side: the `grpc.aio` server (`server`), TF Serving's PredictionService and
ModelService (`services`), their TensorProto codec and the helper process that parses large
messages off the event loop (`message_split`)."""
