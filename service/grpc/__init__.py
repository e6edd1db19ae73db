"""The gRPC side: the server, TF Serving's services, their TensorProto codec, and the helper
process that parses large messages (`message_split`)."""
