"""Large gRPC requests parsed in the helper process (service.grpc.message_split): what
comes back is what was sent, in order, through a real helper process; what is never valid is
refused there with a reason; a helper that dies is replaced; the helper never imports
TensorFlow. Through the server: requests above the inline size answer as small ones do.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.core.decoding import CHUNK_ITEMS
from service.errors import InvalidInputError, UnavailableError
from service.grpc import message_split
from service.grpc.message_split import CLASSIFY, EXAMPLES, PREDICT, MessageSplitter
from tests.server import assert_same, grpc_target, wait_for
from tests.test_classify_regress import as_rows, classify_request, example, expected_classes

pytest_plugins = ["tests.gateway_fixtures"]

SIZES = [0, 1, 7, 300, 0, 2]  # string lengths, repeated: empty strings among long ones


@pytest.fixture(scope="module")
def splitter() -> Iterator[MessageSplitter]:
    helper = MessageSplitter()
    yield helper
    helper.close()


def strings(count: int) -> list[bytes]:
    """Distinct strings of varied lengths, all 256 byte values among them."""
    return [
        bytes((index + offset) % 256 for offset in range(SIZES[index % len(SIZES)]))
        + str(index).encode() * (index % 3)
        for index in range(count)
    ]


def predict_message(values: list[bytes], numbers: list[float]) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "text"
    request.output_filter.append("length")
    text = request.inputs["text"]
    text.dtype = types_pb2.DT_STRING
    text.tensor_shape.dim.add().size = len(values)
    text.string_val.extend(values)
    x = request.inputs["x"]
    x.dtype = types_pb2.DT_FLOAT
    x.tensor_shape.dim.add().size = len(numbers)
    x.float_val.extend(numbers)
    return request.SerializeToString() + b"\xf8\x07\x05"  # and an unknown field (127: 5)


def test_predict_strings_come_back_in_pieces_in_order(splitter: MessageSplitter) -> None:
    values = strings(2 * CHUNK_ITEMS + 123)
    numbers = [0.5 * index for index in range(1000)]
    split = splitter.split(PREDICT, predict_message(values, numbers))

    rest = predict_pb2.PredictRequest.FromString(split.rest)
    assert set(split.strings) == {"text"}
    pieces = split.strings["text"]
    assert len(pieces.pieces) == 3
    assert len(pieces) == len(values)
    assert pieces.array().tolist() == values
    assert len(rest.inputs["text"].string_val) == 0  # moved, not copied
    assert [dim.size for dim in rest.inputs["text"].tensor_shape.dim] == [len(values)]
    assert list(rest.inputs["x"].float_val) == numbers  # the small input stays where it was
    assert list(rest.output_filter) == ["length"]
    assert rest.model_spec.name == "text"
    # ignored anyway, and each would be parsed again
    assert len(UnknownFieldSet(predict_pb2.PredictRequest.FromString(predict_message([], [])))) == 1
    assert len(UnknownFieldSet(rest)) == 0


def test_a_few_strings_stay_in_the_message(splitter: MessageSplitter) -> None:
    values = strings(10)
    split = splitter.split(PREDICT, predict_message(values, [1.0]))
    assert split.strings == {}
    assert list(predict_pb2.PredictRequest.FromString(split.rest).inputs["text"].string_val) == (
        values
    )


def test_examples_come_back_serialized_with_their_context(splitter: MessageSplitter) -> None:
    examples = [example(x=float(index), bias=index % 5) for index in range(CHUNK_ITEMS + 10)]
    context = example(bias=3, extra=1)
    request = classify_request(examples, context=context)
    split = splitter.split(CLASSIFY, request.SerializeToString())

    rest = classification_pb2.ClassificationRequest.FromString(split.rest)
    assert rest.input.WhichOneof("kind") is None
    assert rest.model_spec.signature_name == "classify"
    serialized = split.strings[EXAMPLES].array()
    assert len(serialized) == len(examples)
    for item, sent in zip(serialized, examples, strict=True):
        merged = example_pb2.Example()  # the example over its context: the example wins
        merged.CopyFrom(context)
        merged.MergeFrom(sent)
        assert example_pb2.Example.FromString(item) == merged
    assert example_pb2.Example.FromString(serialized[7]).features.feature[
        "bias"
    ].int64_list.value == [2]


def tensor_request(**fields: object) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "text"
    tensor = request.inputs["text"]
    tensor.dtype = types_pb2.DT_STRING
    for name, value in fields.items():
        if name == "dims":
            for _ in range(int(value)):  # type: ignore[call-overload]
                tensor.tensor_shape.dim.add().size = 1
        else:
            getattr(tensor, name).add()
    return request.SerializeToString()


def many_inputs() -> bytes:
    request = predict_pb2.PredictRequest()
    for index in range(message_split.MAX_INPUTS + 1):
        request.inputs[f"x{index}"].dtype = types_pb2.DT_FLOAT
    return request.SerializeToString()


def many_outputs() -> bytes:
    request = predict_pb2.PredictRequest()
    request.output_filter.extend(["y"] * (message_split.MAX_INPUTS + 1))
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (b"\x12\xff\xff\xff\x0f", ["not a valid PredictRequest"]),
        (many_inputs(), ["1025 inputs", "at most 1024"]),
        (many_outputs(), ["1025 outputs", "at most 1024"]),
        (tensor_request(dims=message_split.MAX_DIMS + 1), ["255 dimensions", "at most 254"]),
        (tensor_request(variant_val=1), ["variant_val is not accepted"]),
        (tensor_request(resource_handle_val=1), ["resource_handle_val is not accepted"]),
    ],
    ids=["malformed", "inputs", "outputs", "dims", "variant", "resource"],
)
def test_what_is_never_valid_is_refused_in_the_helper(
    splitter: MessageSplitter, message: bytes, words: list[str]
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        splitter.split(PREDICT, message)
    for word in words:
        assert word in refused.value.message, refused.value.message
    # the same rules hold for small messages, which the server parses itself
    if words[0] != "not a valid PredictRequest":
        with pytest.raises(InvalidInputError):
            message_split.check_predict(predict_pb2.PredictRequest.FromString(message))


def working_helper() -> tuple[MessageSplitter, multiprocessing.Process]:
    """A new splitter, its helper proven working by one split, and that helper process."""
    others = {child.pid for child in multiprocessing.active_children()}
    splitter = MessageSplitter()
    assert splitter.split(PREDICT, predict_message(strings(10), [1.0])).rest
    (helper,) = [child for child in multiprocessing.active_children() if child.pid not in others]
    assert helper.pid is not None
    return splitter, helper


def test_a_helper_that_dies_is_replaced() -> None:
    splitter, helper = working_helper()
    try:
        assert helper.pid is not None
        os.kill(helper.pid, signal.SIGKILL)  # as the kernel's OOM killer would
        message = predict_message(strings(10), [1.0])
        with pytest.raises(UnavailableError) as refused:
            splitter.split(PREDICT, message)
        assert "retry" in refused.value.message
        assert splitter.split(PREDICT, message).rest  # a new helper answers
    finally:
        splitter.close()


def test_close_ends_a_helper_that_does_not_end_when_asked() -> None:
    """A helper stopped (SIGSTOP) cannot take the request to end: close kills it instead of
    leaving the process's exit waiting for it."""
    splitter, helper = working_helper()
    assert helper.pid is not None
    os.kill(helper.pid, signal.SIGSTOP)
    splitter.close(wait_seconds=0.5)
    wait_for(lambda: helper.exitcode is not None, timeout=60, what="the helper reaped")
    assert helper.exitcode == -signal.SIGKILL


def test_close_lets_a_working_helper_end_by_itself() -> None:
    """Given all the time it needs (a started helper ended in 0.1-0.15 s here), it ends when
    asked: exit code 0, not killed."""
    splitter, helper = working_helper()
    splitter.close(wait_seconds=60)
    wait_for(lambda: helper.exitcode is not None, timeout=60, what="the helper reaped")
    assert helper.exitcode == 0


def test_the_helper_does_its_work_without_tensorflow(tmp_path: Path) -> None:
    """The helper's whole work (load the message classes from the serialized proto files,
    read a message from shared memory, split it, write the pieces) in a fresh interpreter, as
    the spawned helper is: TensorFlow is never imported."""
    files = message_split._file_protos(
        message_split._message_file(name) for name in (PREDICT, CLASSIFY, message_split.REGRESS)
    )
    for index, serialized in enumerate(files):
        (tmp_path / f"{index:03d}.proto.bin").write_bytes(serialized)
    (tmp_path / "message.bin").write_bytes(predict_message(strings(CHUNK_ITEMS + 1), [1.0]))
    script = """
import sys
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from service.grpc import message_split as m
folder = Path(sys.argv[1])
m._load_classes([path.read_bytes() for path in sorted(folder.glob("*.proto.bin"))])
raw = (folder / "message.bin").read_bytes()
inbox = SharedMemory(create=True, size=len(raw))
inbox.buf[: len(raw)] = raw
layout = m._split(m.PREDICT, inbox.name, len(raw))
inbox.close(); inbox.unlink()
outbox = SharedMemory(name=layout.outbox)
split = m._read(outbox.buf, layout)
outbox.close(); outbox.unlink()
assert len(split.strings["text"]) == m.CHUNK_ITEMS + 1
assert "tensorflow" not in sys.modules, sorted(name for name in sys.modules if "tensorflow" in name)
print("split without tensorflow")
"""
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "split without tensorflow" in run.stdout


# --- through the server --------------------------------------------------------------------


def test_a_large_predict_answers_as_a_small_one(protocol_server: str) -> None:
    values = [bytes([65 + index % 26]) * (300 + index % 7) for index in range(3500)]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "text"
    request.output_filter.extend(["length", "echo_bytes"])
    tensor = request.inputs["text"]
    tensor.CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING))
    tensor.tensor_shape.dim.add().size = len(values)
    tensor.string_val.extend(values)
    assert request.ByteSize() > message_split.INLINE_BYTES

    with grpc.insecure_channel(grpc_target(protocol_server)) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    assert list(answer.outputs["echo_bytes"].string_val) == values
    lengths = np.frombuffer(answer.outputs["length"].tensor_content, np.int32)
    assert lengths.tolist() == [len(value) for value in values]


def test_a_large_classify_answers_as_a_small_one(protocol_server: str) -> None:
    padding = b"p" * 300  # a feature the model ignores, to pass the inline size
    examples = []
    for index in range(3500):
        item = example(x=float(index % 50), bias=index % 3)
        item.features.feature["padding"].bytes_list.value.append(padding)
        examples.append(item)
    request = classify_request(examples, context=example(bias=1))
    assert request.ByteSize() > message_split.INLINE_BYTES

    with grpc.insecure_channel(grpc_target(protocol_server)) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request)
    expected = [expected_classes(float(index % 50), index % 3) for index in range(3500)]
    assert_same(as_rows(answer.result), expected)


@pytest.mark.parametrize("method", ["Predict", "Classify"])
def test_rows_past_the_bound_are_refused_before_the_values_are_read(
    protocol_server: str, method: str
) -> None:
    """The shape (Predict) or the example count (Classify) says how many rows a request has:
    one of more rows than the model admits is refused from that alone. The Predict request
    declares 5,000 rows and sends no values (decoding would refuse "0 values for shape")."""
    with grpc.insecure_channel(grpc_target(protocol_server)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            if method == "Predict":
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "text"
                text = request.inputs["text"]
                text.dtype = types_pb2.DT_STRING
                text.tensor_shape.dim.add().size = 5000
                stub.Predict(request)
            else:
                stub.Classify(classify_request([example(x=1.0)] * 5000))
    error: Any = refused.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "a request of 5000 rows is more than one request may queue" in error.details()


def test_without_room_in_shared_memory_the_server_parses_the_message_itself(
    protocol_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A container's /dev/shm may be small (64 MB by default): writing past it would kill
    the server (SIGBUS), so a message that does not fit is parsed in the server process, and
    a warning says how to give it room."""
    monkeypatch.setattr(message_split, "SHARED_MEMORY_SPARE_BYTES", 2**62)
    monkeypatch.setattr(message_split, "_warned_small_shared_memory", threading.Event())
    test_a_large_predict_answers_as_a_small_one(protocol_server)
    warnings = [r.getMessage() for r in caplog.records if r.name == message_split.__name__]
    assert len(warnings) == 1, warnings
    assert "too little to hand" in warnings[0] and "more shared memory" in warnings[0]
