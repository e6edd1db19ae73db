"""The inference core: models, their versions and batches, with no HTTP and no gRPC.

`inference.InferenceCore` is what every protocol calls; below it the model repository
(`repository/`: version sources, loaders, the manager), the batchers (`batching`), a version's
state (`servable`), model instances (`runtime`, `remote`) and the values they take
(`signatures`, `dtypes`, `tensors`, `decoding`)."""
