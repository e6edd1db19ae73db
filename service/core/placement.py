"""Devices: set up once before TensorFlow initialises, and a model's instances spread
round-robin over the devices its `device` setting picks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from service.core.serving_config import PlacementConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSetup:
    virtual_cpus: int = 0  # 0/1: the CPU as one device
    gpu_memory_limit_mb: int | None = None
    auto_gpu_min_mb: float = 20.0  # `auto` puts models at least this large on GPUs
    intra_op_threads: int | None = None  # None: TensorFlow's default (every core it sees)
    inter_op_threads: int | None = None


def configure_devices(setup: DeviceSetup) -> list[str]:
    """Returns the logical device names, e.g. ['/device:CPU:0', '/device:GPU:0']. GPU memory
    growth is on unless limited, so several models share a GPU."""
    try:
        if setup.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(setup.intra_op_threads)
        if setup.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(setup.inter_op_threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            if setup.gpu_memory_limit_mb:
                tf.config.set_logical_device_configuration(
                    gpu,
                    [tf.config.LogicalDeviceConfiguration(memory_limit=setup.gpu_memory_limit_mb)],
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        if setup.virtual_cpus > 1:
            (cpu,) = tf.config.list_physical_devices("CPU")
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * setup.virtual_cpus
            )
    except RuntimeError as exc:  # TF already initialised in this process (tests, notebooks)
        log.warning("device setup left as it is: %s", exc)
    devices = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("CPU", "GPU")]
    log.info(
        "devices: %s; TensorFlow threads: %d intra-op, %d inter-op",
        ", ".join(devices),
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )
    return devices


def place_instances(
    config: PlacementConfig, devices: list[str], model_dir: Path, setup: DeviceSetup
) -> list[str]:
    """The device of each instance of a model, in instance order."""
    chosen = _choose(config.device, devices, model_dir, setup)
    return [chosen[i % len(chosen)] for i in range(config.instances)]


def _choose(device: str, devices: list[str], model_dir: Path, setup: DeviceSetup) -> list[str]:
    cpus = [d for d in devices if ":CPU:" in d]
    gpus = [d for d in devices if ":GPU:" in d]
    if device == "auto":
        big = _size_mb(model_dir) >= setup.auto_gpu_min_mb
        return gpus if gpus and big else cpus
    kind, _, number = device.partition(":")
    candidates = gpus if kind == "gpu" else cpus
    if not candidates:
        raise ValueError(f"device {device!r} requested but this machine has no {kind.upper()}")
    if not number:
        return candidates
    wanted = f"/device:{kind.upper()}:{number}"
    if wanted not in candidates:
        raise ValueError(f"device {device!r} not found; devices: {', '.join(devices)}")
    return [wanted]


def _size_mb(model_dir: Path) -> float:
    variables = model_dir / "variables"
    files = variables.iterdir() if variables.is_dir() else iter(())
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20
