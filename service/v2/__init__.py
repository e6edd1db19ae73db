"""What the Open Inference Protocol's REST (service.http) and gRPC (service.grpc) front ends share:
raw tensors, model metadata, Triton's model configuration and statistics extensions."""
