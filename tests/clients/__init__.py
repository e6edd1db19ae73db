"""Scripts that drive the gateway with clients no one here wrote, each in a process of its own
(Triton's and KServe's clients register the same protobuf names, so they cannot share one)."""
