"""Shared fixtures: the tiny model (built once per session) and small generated videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidlab.media.torchcodec_decode import torchcodec_missing
from vidlab.media.writer import write_video

# Tests of the optional torchcodec decoder run where it is installed (.ci/run installs it, and FFmpeg).
needs_torchcodec = pytest.mark.skipif(torchcodec_missing() is not None, reason=str(torchcodec_missing()))
# Both decoders, for tests parametrized over `decoder`.
DECODERS = ["pyav", pytest.param("torchcodec", marks=needs_torchcodec)]


def gradient_frames(count: int, height: int = 64, width: int = 64, moving: bool = True) -> list[np.ndarray]:
    """Frames whose content changes every frame (moving=True) or never (moving=False)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    frames = []
    for i in range(count):
        frame = base.copy()
        if moving:
            frame = np.roll(frame, shift=5 * i, axis=1)
        frames.append(frame)
    return frames


CODE_BITS = 10


def coded(index: int, height: int = 48, width: int = 80) -> np.ndarray:
    """A frame that shows its own index in binary, as black and white bars (survives lossy coding)."""
    frame = np.zeros((height, width, 3), np.uint8)
    bar = width // CODE_BITS
    for bit in range(CODE_BITS):
        if (index >> bit) & 1:
            frame[:, bit * bar : (bit + 1) * bar] = 255
    return frame


def index_of(frame: np.ndarray) -> int:
    bar = frame.shape[1] // CODE_BITS
    return sum(1 << bit for bit in range(CODE_BITS) if frame[:, bit * bar : (bit + 1) * bar].mean() > 127)



@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from vidlab.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from vidlab.models import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> Path:
    """4 s at 10 fps, 64x64, content changing every frame."""
    path = tmp_path_factory.mktemp("videos") / "moving.mp4"
    return write_video(path, gradient_frames(40), fps=10)
