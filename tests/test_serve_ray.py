"""vidlab serve on Ray Serve with 2 CPU replicas of the tiny model, in a network namespace of the test's own (only a
loopback there, so Ray and all it starts listen on 127.0.0.1 and reach nothing else): both replicas serve, a replica
killed mid-load is replaced, and no accepted request is lost (each answered, or a 503 with Retry-After; never a 500);
questions about the same video go to one replica (its prefix cache hit) and answer as one server does.
The work runs in tests/serve_ray_check.py; this test starts it and stops it by process id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_frames
from serve_support import post, running

from vidlab.media.writer import write_video
from vidlab.serve import ServeOptions, create_app
from vidlab.settings import GenerationOptions

pytest.importorskip("ray.serve", reason="Ray Serve is an optional extra: pip install 'vidlab[ray]'")


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs `unshare -n` (root or user namespaces) to keep Ray on a "
                    "loopback-only network")
def test_two_replicas_serve_and_a_killed_one_is_replaced_without_losing_requests(tiny_model_dir, sample_video,
                                                                                  tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(sample_video, root / "moving.mp4")
    write_video(root / "flipped.mp4", [np.ascontiguousarray(f[::-1]) for f in gradient_frames(40)], fps=10)
    out = tmp_path / "ray.json"
    check = Path(__file__).with_name("serve_ray_check.py")
    ray_tmp = tempfile.mkdtemp(prefix="vidlab-ray-")  # short: Ray's socket paths must fit 107 bytes
    uploads = tmp_path / "tmp"  # where the replicas' temporary folders go (TMPDIR)
    uploads.mkdir()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_TMPDIR": ray_tmp, "TMPDIR": str(uploads)}
    process = subprocess.Popen(["unshare", "-n", sys.executable, str(check), str(tiny_model_dir), str(root), str(out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=360)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the group this test started, by its leader's id
            process.wait(10)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.exists(), output[-4000:]
    report = json.loads(out.read_text())
    print("\n" + json.dumps({k: v for k, v in report.items() if k != "during_errors"}))

    # The check runs in a network namespace of its own whose only interface is loopback (asserted first), so a
    # wildcard address there (Ray's own services bind one) reaches 127.0.0.1 and nothing else.
    assert report["interfaces"] == ["lo"]
    assert all(address in ("127.0.0.1", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1") for address in report["listening"])
    assert report["first_statuses"] == [200] and report["consistent"]
    assert len(report["first_fingerprints"]) == 2  # both replicas answered
    statuses = report["during_statuses"]
    assert len(statuses) == 24 and set(statuses) <= {200, 503}, report["during_errors"]
    assert all(after is not None and int(after) >= 1 for after in report["during_retry_after"])
    assert report["resent"] >= 1  # the killed replica had requests in flight: the gateway sent them again
    assert statuses.count(200) >= 20 and report["during_consistent"]  # retried on the other replica: same answers
    pids = {int(f.rsplit("-", 1)[1]) for f in report["after_fingerprints"]}
    assert len(pids - {report["killed"]}) >= 2  # a new replica took the killed one's place
    # Each replica's own metrics at the gateway, by replica: both served; the killed one drops out, the new one in.
    first = report["first_replica_tokens"]
    assert set(first) == set(report["first_fingerprints"]) and all(value > 0 for value in first.values())
    after = report["after_replica_tokens"]
    assert set(after) == set(report["after_fingerprints"]) - {report["first_fingerprints"][0]}
    assert all(value > 0 for value in after.values())
    assert report["left_after_kill"] == []
    # Replicas stopped by Ray remove their temporary folder; the killed one could not (it is empty).
    left = list(uploads.glob("vidlab-serve-*"))
    assert len(left) <= 1 and all(not any(folder.iterdir()) for folder in left)

    # Media-affine routing: every question about a video answered by one replica, whose prefix cache the later
    # ones hit (at the gateway's /metrics, by replica); a replica that got no video saw no prefix hits.
    affinity = report["affinity"]
    assert [row["status"] for row in affinity] == [200] * len(affinity)
    by_video: dict[str, set[str]] = {}
    for row in affinity:
        by_video.setdefault(row["video"], set()).add(row["replica"])
    assert sorted(by_video) == ["flipped.mp4", "moving.mp4"] and all(len(got) == 1 for got in by_video.values())
    questions = len(affinity) // 2
    for replica, hits in report["affinity_prefix_hits"].items():
        videos_there = sum(got == {replica} for got in by_video.values())
        assert hits >= videos_there * (questions - 1) and (videos_there or hits == 0), report["affinity_prefix_hits"]
    # The same answers as one server without Ray.
    options = ServeOptions(media_root=root, max_batch=4, max_queue=64, generation=GenerationOptions(max_new_tokens=24))
    with running(create_app(str(tiny_model_dir), name="tiny", device="cpu", options=options)) as url:
        for row in affinity:
            body = {"model": "tiny", "max_tokens": 120, "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": row["video"]}}, {"type": "text", "text": row["prompt"]}]}]}
            single = post(url, body, key=None).json()
            assert single["choices"][0]["message"]["content"] == row["answer"], row


def test_the_media_key_names_the_media_parts_by_uuid_else_url():
    from vidlab.serve.ray_routing import media_key

    def body(*parts, text: str = "What happens?") -> dict:
        return {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": [*parts, {"type": "text", "text": text}]}]}

    video = {"type": "video_url", "video_url": {"url": "moving.mp4"}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert media_key(body(video)) == media_key(body(video, text="Which way?"))  # the question does not count
    assert media_key(body(video)) != media_key(body({"type": "video_url", "video_url": {"url": "flipped.mp4"}}))
    assert media_key(body(video, image)) != media_key(body(image, video))
    assert media_key(body({**video, "uuid": "clip-7"})) == media_key(body({"type": "video_url", "uuid": "clip-7"}))
    assert media_key(body()) is None and media_key({"messages": "not a list"}) is None
