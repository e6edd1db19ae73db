"""The REST side: the FastAPI app (`app`), its middleware and HTTP limits, and the adapters of
TF Serving's REST API and the Open Inference Protocol (V2), each parse -> core -> encode."""
