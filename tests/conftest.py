"""Shared fixtures: the tiny model (built once per session) and small generated videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidlab.media.writer import write_video


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
