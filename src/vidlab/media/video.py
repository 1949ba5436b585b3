"""Video files through PyAV (bundled FFmpeg): mp4, mkv, webm, avi, mov, gif and the rest.

The frame table (table.py) says where every frame is without decoding; the frame rule
(sampling.py) picks frames from it; the decoder (decode.py; torchcodec_decode.py where torchcodec
is installed and faster) decodes just those, scaled down to the size they will be used at and
turned upright.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vidlab.errors import NoFramesError, TruncatedVideoError
from vidlab.media.clip import VideoClip, check_clip_window, require_exists
from vidlab.media.decode import decode_frames
from vidlab.media.sampling import GIF_RATE, Timeline, pick_frames
from vidlab.media.table import FrameTable, read_frame_table
from vidlab.media.torchcodec_decode import decode_with_torchcodec, torchcodec_suits
from vidlab.settings import Sampling

# (height, width, frames) -> (height, width) the frames will be used at; decoding scales to it.
FrameSize = Callable[[int, int, int], tuple[int, int]]


def timeline(table: FrameTable, index_rate: float | None = None) -> Timeline:
    return Timeline(
        times=table.times, end=table.end, first_offset=table.first_offset, stream_start=table.stream_start,
        file_duration=table.file_duration, rate=table.rate, index_rate=index_rate, keyframe=table.keyframe,
        nominal_rate=table.nominal_rate, single_stream=table.single_stream, durations=table.durations,
        ts_discont=table.ts_discont,
    )


def load_video_file(
    path: str | Path,
    sampling: Sampling = Sampling(),
    start: float | None = None,
    end: float | None = None,
    frame_size: FrameSize | None = None,
) -> VideoClip:
    """Decode the frames `sampling` asks for from a video file.

    Args:
        frame_size: given the video's (upright) height, width and the number of picked frames, the
            (height, width) the frames will be used at; frames are scaled to it while decoding.
            None: full size.

    Raises:
        MediaNotFoundError, UnreadableMediaError, NoVideoStreamError, NoFramesError, ClipWindowError,
        TruncatedVideoError: each naming the path and the reason.
    """
    path = require_exists(path)
    table = read_frame_table(path)
    warnings = []
    if table.truncated:
        message = (
            f"{path}: the video's frames end at {table.end:.1f}s but its header says {table.declared_end:.1f}s: the "
            "file was cut short (an incomplete download or copy)"
        )
        if not sampling.allow_partial:
            raise TruncatedVideoError(f"{message}. Get the whole file again, or allow partial videos "
                                      "(allow_partial: --allow-partial, data.allow_partial: true).")
        warnings.append(f"{message}; only its first {table.end:.1f}s were used.")
    check_clip_window(path, start, end, table.end)
    is_gif = path.suffix.lower() == ".gif"
    index_rate = GIF_RATE if is_gif and sampling.frame_rule == "videollama3" else None
    picks = pick_frames(timeline(table, index_rate), sampling, start, end)

    size = None
    if frame_size is not None:
        width, height = table.upright_size
        target_h, target_w = frame_size(height, width, len(picks))
        size = (target_w, target_h)
    decoded = None
    if torchcodec_suits(table, sampling.decoder, sampling.keyframes, size):
        decoded = decode_with_torchcodec(path, table, picks.frames, size)
    if decoded is None:
        decoded = decode_frames(path, table, picks.frames, size, sampling.gop_workers)
    kept = [n for n, frame in enumerate(picks.frames) if frame in decoded.rows]
    if not kept:
        raise NoFramesError(f"{path}: no frame could be decoded. The video is empty or corrupt; re-encode it.")
    lost = len(set(picks.frames) - set(decoded.rows))
    if lost:
        warnings.append(
            f"{path}: {lost} of {len(set(picks.frames))} sampled frames could not be decoded (damaged data, "
            f"{decoded.damaged_packets} bad packet(s)); the others were used."
        )
    frames = [picks.frames[n] for n in kept]
    rows = [decoded.rows[i] for i in frames]
    # Every row once, in order (the usual case): the decoder's array is the clip's, no copy.
    pixels = decoded.buffer if rows == list(range(len(decoded.buffer))) else decoded.buffer[rows]
    return VideoClip(
        path=str(path),
        frames=pixels,
        timestamps=[float(table.times[i]) for i in frames],
        stamps=[picks.stamps[n] for n in kept],
        frame_indices=frames,
        source_fps=table.rate,
        duration=table.end,
        start=start or 0.0,
        end=min(end, table.end) if end is not None else table.end,
        warnings=warnings,
        decoder=decoded.decoder,
        numpy_stamps=picks.numpy_stamps,
    )

