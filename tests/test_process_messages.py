"""Between a worker and the model process: the shared-memory arenas (service.processes.arena)
and the messages on the socket (service.processes.protocol, service.processes.wire)."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.layout import existing_versions
from service.core.routing import ExportNote, ModelSnapshot, VersionSnapshot
from service.core.servable import VersionState
from service.core.serving_config import ModelConfig, discover_serving_config
from service.core.signatures import read_signatures
from service.errors import QueueFullError, ServingError
from service.processes import arena, protocol, wire
from service.processes.protocol import Failure
from tests.conftest import MODELS_DIR


def test_ring_reuses_space_once_blocks_are_freed_in_any_order() -> None:
    ring = arena.Ring(0, 1024)
    first, second, third = (ring.allocate(300) for _ in range(3))
    assert (first, second, third) == (0, 320, 640)  # 64-byte aligned
    assert ring.allocate(300) is None  # full
    ring.free(second)  # out of order: the tail stays at the oldest block
    assert ring.allocate(300) is None
    ring.free(first)  # now [0, 640) is free: the head wraps to the start
    assert ring.allocate(600) == 0  # 640 bytes once aligned: up to the third block
    assert ring.allocate(64) is None  # wrapped: nothing free before the oldest block
    ring.free(third)
    assert ring.allocate(64) == 640  # the oldest is gone: after the head again
    ring.free(640)
    ring.free(0)
    assert ring.used == 0
    assert ring.allocate(1024) == 0  # empty: from the start again


def test_tensors_round_trip_through_an_arena_or_inline_when_it_is_full() -> None:
    shared = arena.Arena.create(1 << 16)
    writer = arena.Writer(shared)
    tensors = {
        "floats": np.arange(12, dtype=np.float32).reshape(3, 4),
        "ints": np.array([[-(2**40)], [2**40]], dtype=np.int64),
        "strings": np.array([[b"a", b""], [b"\xff\x00", "caf\u00e9".encode()]], dtype=object),
        "big": np.arange(40_000, dtype=np.float64).reshape(200, 200).T,  # 320 kB: too big
        "big_strings": np.array([b"x" * 70_000, b"y"], dtype=object),  # 70 kB: too big
    }
    refs, blocks = writer.put(tensors)
    by_name = {ref.name: ref for ref in refs}
    for name in ("big", "big_strings"):
        assert by_name[name].inline is not None and by_name[name].offset == -1
    assert all(by_name[name].inline is None for name in ("floats", "ints", "strings"))
    assert len(blocks) == 3
    read = arena.read(arena.Arena(shared.fd), refs, copy=True)  # as the peer maps it
    for name, tensor in tensors.items():
        assert read[name].dtype == tensor.dtype and read[name].shape == tensor.shape
        assert read[name].tolist() == tensor.tolist()
    writer.free(blocks)
    assert writer.ring.used == 0


def test_a_string_tensor_must_hold_bytes_or_text() -> None:
    writer = arena.Writer(arena.Arena.create(1 << 12))
    with pytest.raises(TypeError, match="holds a int"):
        writer.put({"s": np.array([b"a", 3], dtype=object)})


def test_acknowledgements_are_shared_between_mappings() -> None:
    shared = arena.Arena.create(1 << 12)
    peer = arena.Arena(shared.fd)
    peer.acknowledge(41)
    assert shared.acknowledged == 41


def test_failures_come_back_as_the_same_error_class() -> None:
    error = Failure.of(7, QueueFullError("model m has 2 requests queued")).error()
    assert type(error) is QueueFullError and error.http_status == 429
    assert error.message == "model m has 2 requests queued"
    assert type(Failure(7, "NoSuchError", "x").error()) is ServingError


VOTES_DIR = MODELS_DIR / "votes" / str(existing_versions(MODELS_DIR / "votes")[-1])


def votes_snapshot() -> ModelSnapshot:
    (config,) = [m for m in discover_serving_config(MODELS_DIR).models if m.name == "votes"]
    version = VersionSnapshot(
        "votes",
        1,
        VOTES_DIR,
        config,
        VersionState.AVAILABLE,
        "OK",
        "",
        (3, 1_700_000_000),
        1.25,
        0.5,
        read_signatures(VOTES_DIR),
        {"batching": {"serving_default": {"requests": 7, "mean_batch_size": 3.5}}},
    )
    return ModelSnapshot(
        "votes", config, {1: version}, (1,), 0, (1,), {"tmp": "why"}, False, "", None
    )


def exported_snapshot() -> ModelSnapshot:
    """A model the server is exporting: no version yet, an export note."""
    config = ModelConfig(name="resnet50", base_path=MODELS_DIR / "resnet50")
    note = ExportNote(True, "downloading 41 %", "being exported: 41.2 of 102.9 MB (41 %)")
    reason = f" ({note.detail})"
    return ModelSnapshot("resnet50", config, {}, (), 0, (), {}, False, reason, note)


@pytest.mark.parametrize(
    "message",
    [
        protocol.Hello(3),
        protocol.Welcome(),
        protocol.Predict(
            9,
            "votes",
            1,
            "serving_default",
            (
                arena.TensorRef("votes", "<f4", (2, 16), 64, 128),
                arena.TensorRef("s", "object", (1,), -1, 5, b"\x01\x00\x00\x00a"),
            ),
            ("probabilities",),
            0.25,
            "f" * 32,
            0.0125,
        ),
        protocol.Predict(9, "votes", 1, "", (), (), 0.25, "-", None),
        protocol.Cancel(9),
        protocol.Answer(9, 4, (arena.TensorRef("probabilities", "<f4", (2, 2), 128, 16),), 12),
        protocol.Failure(9, "DeadlineExceededError", "too late"),
        protocol.Command(2, "unload", "votes"),
        protocol.Reply(2, b"# HELP x\n", None),
        protocol.Reply(2, None, protocol.Failure(2, "NotFoundError", "no model")),
        protocol.Catalog((votes_snapshot(), exported_snapshot())),
    ],
    ids=lambda message: type(message).__name__,
)
def test_every_message_survives_the_wire_unchanged(message: protocol.Message) -> None:
    framed = wire.encode(message)
    assert int.from_bytes(framed[:4], "little") == len(framed) - 4
    assert wire.decode(framed[4:]) == message


def test_a_catalog_brings_the_signatures_back_whole() -> None:
    (model,) = wire.decode(wire.encode(protocol.Catalog((votes_snapshot(),)))[4:]).models  # type: ignore[union-attr]
    signature = model.versions[1].signature("serving_default")
    assert signature.inputs["votes"].shape == (None, 16)
    assert model.serving[1].config.batching.max_batch_size == 32


@pytest.mark.parametrize("payload", [b"", b"\x93\x63\x01\x02", b"\x92\x02\x01", b"\xc1"])
def test_anything_else_is_refused_as_malformed(payload: bytes) -> None:
    with pytest.raises(ValueError, match="malformed message"):
        wire.decode(payload)
