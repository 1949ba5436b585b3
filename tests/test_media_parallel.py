"""Long videos decoded in parallel: runs of whole keyframe groups, one per worker thread, give the frames and
pixels one stream gives, on every encoder layout; short videos and MPEG streams stay on one stream."""

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import coded, index_of

from vidlab.media import load_video
from vidlab.media.decode import decode_frames, gop_spans
from vidlab.media.table import read_frame_table
from vidlab.media.writer import write_video
from vidlab.settings import Sampling

FIXTURES = Path(__file__).parent / "data" / "fidelity" / "media"
GOP = {"keyint_min": "1", "sc_threshold": "0"}
LAYOUTS = {
    "short-gops.mp4": {"count": 400, "fps": 25, "encoder_options": {"preset": "ultrafast", "g": "10", **GOP}},
    "long-gops.mp4": {"count": 900, "fps": 30, "encoder_options": {"preset": "ultrafast", "g": "100", **GOP}},
    "b-frames.mp4": {"count": 480, "fps": 24, "encoder_options": {"g": "48", **GOP}},  # veryfast: B-frames, edit list
    "variable-rate.mp4": {"times": [round(0.004 * i * i, 3) for i in range(240)], "encoder_options": {"g": "20"}},
    "late-start.mkv": {"times": [7.5 + i / 24 for i in range(360)], "encoder_options": {"g": "30"}},
    "rotated.mp4": {"count": 300, "fps": 25, "rotation": 90, "encoder_options": {"g": "25", **GOP}},
}


def write_layout(folder: Path, name: str) -> Path:
    spec = dict(LAYOUTS[name])
    times = spec.pop("times", None)
    count = len(times) if times else spec.pop("count")
    return write_video(folder / name, [coded(i, 48, 96) for i in range(count)], fps=spec.pop("fps", 10),
                       times=times, **spec)


def assert_same(one, parallel) -> None:
    """The same frames decoded into the same rows, pixel for pixel."""
    assert parallel.rows == one.rows
    rows = sorted(one.rows.values())
    assert np.array_equal(parallel.buffer[rows], one.buffer[rows])


def spread_picks(count: int, table, seed: int) -> list[int]:
    """Picks over the whole video: evenly spaced (what frame rules take), plus random ones."""
    rng = np.random.default_rng(seed)
    return sorted({*np.linspace(0, count - 1, 40).round().astype(int).tolist(),
                   *rng.choice(count, size=20, replace=False).tolist()})


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_parallel_decode_equals_one_stream_pixel_for_pixel(tmp_path, name):
    """Worker processes (the default), and threads (where no process may be started)."""
    path = write_layout(tmp_path, name)
    table = read_frame_table(path)
    wanted = spread_picks(len(table), table, seed=len(name))
    for size in (None, (40, 24)):  # full size, and scaled while decoding (upright width, height)
        one = decode_frames(path, table, wanted, size, workers=1)
        assert one.workers == 1 and len(one.rows) == len(wanted)
        for workers, backend in ((2, "auto"), (4, "auto"), (2, "threads"), (4, "threads")):
            parallel = decode_frames(path, table, wanted, size, workers=workers, backend=backend)
            assert parallel.workers == workers and parallel.parallel == {"auto": "processes"}.get(backend, backend)
            assert_same(one, parallel)
            if size is None:  # and they are the right frames: each shows its own index (stored before turning)
                turns = (table.rotation // 90) % 4
                shown = {i: index_of(np.rot90(frame, -turns)) for i, frame in parallel.frames.items()}
                assert shown == {i: i for i in wanted}


def test_every_worker_gets_whole_keyframe_groups_of_about_equal_work(tmp_path):
    path = write_layout(tmp_path, "long-gops.mp4")
    table = read_frame_table(path)
    order = list(range(5, 900, 7))
    groups = table.keyframes_at_or_before(order)
    for workers in (2, 3, 4):
        spans = gop_spans(table, order, workers)
        assert len(spans) == workers and spans[0][0] == 0 and spans[-1][1] == len(order)
        assert all(stop == next_start for (_, stop), (next_start, _) in zip(spans, spans[1:]))  # disjoint, contiguous
        assert all(groups[stop - 1] != groups[stop] for _, stop in spans[:-1])  # no group split between workers
        work = [order[stop - 1] - groups[first] for first, stop in spans]
        assert max(work) < 2 * min(work)


def test_short_videos_and_few_keyframe_groups_stay_on_one_stream(tmp_path):
    path = write_layout(tmp_path, "long-gops.mp4")  # keyframes every 100 frames
    table = read_frame_table(path)
    assert gop_spans(table, [3, 50, 99], 4) == [(0, 3)]  # one group
    assert gop_spans(table, [3, 150, 250], 4) == [(0, 3)]  # three groups: too few to pay for a second stream
    assert len(gop_spans(table, [3, 150, 250, 350], 4)) == 2  # four: two workers, two groups each
    assert decode_frames(path, table, [3, 150, 250], workers=4).workers == 1
    short = write_video(tmp_path / "short.mp4", [coded(i) for i in range(40)], fps=10)  # 4 s, one keyframe
    assert decode_frames(short, read_frame_table(short), list(range(0, 40, 5)), workers=4).workers == 1


def test_mpeg_streams_which_cannot_seek_exactly_stay_on_one_stream(tmp_path):
    ts = write_video(tmp_path / "broadcast.ts", [coded(i) for i in range(300)], fps=25,
                     encoder_options={"g": "25", **GOP})
    for path in (ts, FIXTURES / "mpeg2.mpg"):
        table = read_frame_table(path)
        wanted = list(range(2, len(table), 9))
        assert len(gop_spans(table, wanted, 4)) > 1  # splitting would pay, were it seekable
        one, parallel = (decode_frames(path, table, wanted, workers=w) for w in (1, 4))
        assert parallel.workers == 1 and parallel.rows
        assert_same(one, parallel)


def test_a_clip_window_decodes_the_same_frames_in_parallel(tmp_path):
    path = write_layout(tmp_path, "short-gops.mp4")  # 16 s, a keyframe every 0.4 s
    one, parallel = (load_video(path, Sampling(fps=4, gop_workers=w), start=3.0, end=11.5) for w in (1, 2))
    assert parallel.frame_indices == one.frame_indices and parallel.stamps == one.stamps
    assert np.array_equal(parallel.frames, one.frames)
    assert [index_of(f) for f in parallel.frames] == parallel.frame_indices and parallel.frame_indices[0] >= 75


def test_a_damaged_packet_costs_the_same_frame_in_parallel(tmp_path):
    path = write_video(tmp_path / "clip.mp4", [coded(i) for i in range(200)], fps=10,
                       encoder_options={"preset": "ultrafast", "g": "20", **GOP})
    with av.open(str(path)) as container:
        damaged = list(container.streams.video[0].index_entries)[125]
    data = bytearray(path.read_bytes())
    data[damaged.pos : damaged.pos + 4] = b"\xff\xff\xff\xff"  # its NAL length: the decoder rejects the packet
    broken = tmp_path / "damaged.mp4"
    broken.write_bytes(bytes(data))
    table = read_frame_table(broken)
    wanted = list(range(0, 200, 5))
    one, parallel = (decode_frames(broken, table, wanted, workers=w) for w in (1, 4))
    assert parallel.workers == 4 and parallel.damaged_packets == one.damaged_packets >= 1
    assert 125 not in one.rows and 130 in one.rows  # its own frames lost, not the rest
    assert_same(one, parallel)


def test_a_cut_download_decodes_the_same_frames_in_parallel(tmp_path):
    path = write_video(tmp_path / "whole.mp4", [coded(i) for i in range(300)], fps=10, faststart=True,
                       encoder_options={"preset": "ultrafast", "g": "20", **GOP})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    one, parallel = (load_video(cut, Sampling(fps=2, allow_partial=True, gop_workers=w)) for w in (1, 2))
    assert 20 < len(one) < 60 and parallel.frame_indices == one.frame_indices
    assert np.array_equal(parallel.frames, one.frames)
    assert [index_of(f) for f in parallel.frames] == parallel.frame_indices


def test_keyframe_mode_in_parallel(tmp_path):
    path = write_layout(tmp_path, "long-gops.mp4")
    one, parallel = (load_video(path, Sampling(fps=1, keyframes=True, gop_workers=w)) for w in (1, 2))
    assert parallel.frame_indices == one.frame_indices == list(range(0, 900, 100))
    assert np.array_equal(parallel.frames, one.frames)


def test_the_setting_is_refused_below_one():
    with pytest.raises(ValueError, match="gop_workers"):
        Sampling(gop_workers=0)


def test_a_worker_that_dies_costs_nothing_its_run_is_decoded_here(tmp_path, monkeypatch):
    from vidlab.media import gop_workers

    path = write_layout(tmp_path, "short-gops.mp4")
    table = read_frame_table(path)
    wanted = list(range(0, 400, 9))
    one = decode_frames(path, table, wanted, workers=1)
    real_send = gop_workers._Worker.send

    def send_then_die(worker, *args):
        real_send(worker, *args)
        worker.process.kill()  # as a decoder crash would end it, mid-run

    names = []
    real_shared = gop_workers.shared_frames

    def shared_frames(shape):
        names.append((made := real_shared(shape))[1])
        return made

    monkeypatch.setattr(gop_workers._Worker, "send", send_then_die)
    monkeypatch.setattr(gop_workers, "shared_frames", shared_frames)
    parallel = decode_frames(path, table, wanted, workers=3)
    assert parallel.workers == 3 and parallel.parallel == "processes"
    assert_same(one, parallel)
    assert len(names) == 1 and not Path(names[0]).exists()  # the shared array's name is gone with the call


def _report_allowed(queue) -> None:
    from vidlab.media.gop_workers import processes_allowed

    queue.put(processes_allowed())


def test_a_daemonic_process_decodes_its_runs_in_threads():
    import multiprocessing

    from vidlab.media.gop_workers import processes_allowed

    assert processes_allowed()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_report_allowed, args=(queue,), daemon=True)  # as a DataLoader worker is
    process.start()
    assert queue.get(timeout=60) is False
    process.join(60)


def test_an_error_in_a_worker_is_raised_to_the_caller(tmp_path, monkeypatch):
    from vidlab.errors import UnreadableMediaError
    from vidlab.media import gop_workers

    path = write_layout(tmp_path, "short-gops.mp4")
    table = read_frame_table(path)
    real_shared = gop_workers.shared_frames

    def shared_then_gone(shape):  # the caller has the file open already; the workers will not find it
        path.unlink()
        return real_shared(shape)

    monkeypatch.setattr(gop_workers, "shared_frames", shared_then_gone)
    with pytest.raises(UnreadableMediaError, match="short-gops.mp4"):
        decode_frames(path, table, list(range(0, 400, 9)), workers=2)
    monkeypatch.undo()
    parallel = decode_frames(write_layout(tmp_path, "short-gops.mp4"), table, [0, 100, 200, 300], workers=2)
    assert parallel.parallel == "processes" and sorted(parallel.rows) == [0, 100, 200, 300]  # the worker is still there
