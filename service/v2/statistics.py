"""Triton's statistics extension: per served version, the counts and times its batchers keep
(`BatchStats`, summed over the version's signatures), in the JSON form of Triton's
`ModelStatistics`, which Triton's clients (`get_inference_statistics`) and dashboards read.

What each field holds here:
- `inference_count`: rows answered (each row of a batched request counts, as in Triton);
  `execution_count`: successful model calls.
- `success`: requests answered with outputs, and their time from entering the batch queue to
  the answer; `fail`: requests answered with a model error or past their deadline.
- `queue`: time from entering the batch queue to leaving it for the model.
- `compute_input`, `compute_infer`, `compute_output`: each answered request's share of its batch's
  model call, by stage: the batch's inputs assembled (concatenated, padded); the model run, its
  outputs checked; the outputs split among the requests. A request run alone (batching off)
  has nothing to assemble or split: its input and output stages take 0 ns.
- `batch_stats`: successful model calls per (padded) batch size, and their stages' time.
Time is counted by the model process, from when a request reaches its batcher: HTTP, gRPC and
decoding in the front end are in modelserve's Prometheus metrics, not here."""

from __future__ import annotations

from typing import Any

from service.core.inference import InferenceCore, ModelRef
from service.core.record import RequestRecord
from service.core.routing import Servable
from service.core.servable import VersionState

NS_PER_SECOND = 1_000_000_000


async def statistics(
    core: InferenceCore, ref: ModelRef | None, record: RequestRecord
) -> dict[str, Any]:
    """Every available version's statistics: of every model (`ref` None), of one model, or of
    one version (an unknown model or version: 404)."""
    repository = core.repository
    await repository.refresh()  # the versions' counters are current then, in a worker too
    if ref is None:
        servables = [v for name in repository.model_names() for v in repository.statuses(name)]
    else:
        servables = list(core.statuses(ref, record))
    available = [v for v in servables if v.state == VersionState.AVAILABLE]
    return {"model_stats": [version_statistics(servable) for servable in available]}


def version_statistics(servable: Servable) -> dict[str, Any]:
    timings = [
        batcher["timing"]
        for batcher in servable.serving_details().get("batching", {}).values()
        if "timing" in batcher
    ]

    def total(name: str) -> Any:
        return sum(timing[name] for timing in timings)

    by_size: dict[int, list[float]] = {}  # size: [calls, input, compute, output seconds]
    for timing in timings:
        for size, entry in timing["calls_by_size"].items():
            summed = by_size.setdefault(int(size), [0, 0.0, 0.0, 0.0])
            for index, value in enumerate(entry):
                summed[index] += value
    last = max((timing["last_answered"] for timing in timings), default=0.0)
    return {
        "name": servable.model,
        "version": str(servable.version),
        "last_inference": round(last * 1000),  # ms since the epoch; 0: never
        "inference_count": total("answered_rows"),
        "execution_count": int(sum(entry[0] for entry in by_size.values())),
        "inference_stats": {
            "success": _duration(total("answered"), total("answered_seconds")),
            "fail": _duration(total("failed"), total("failed_seconds")),
            "queue": _duration(total("queued"), total("queue_seconds")),
            "compute_input": _duration(total("answered"), total("input_seconds")),
            "compute_infer": _duration(total("answered"), total("compute_seconds")),
            "compute_output": _duration(total("answered"), total("output_seconds")),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(int(calls), input_seconds),
                "compute_infer": _duration(int(calls), compute_seconds),
                "compute_output": _duration(int(calls), output_seconds),
            }
            for size, (calls, input_seconds, compute_seconds, output_seconds) in sorted(
                by_size.items()
            )
        ],
    }


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": round(seconds * NS_PER_SECOND)}
