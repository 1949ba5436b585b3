"""Run by tests/test_serve_ray.py inside a network namespace of its own (`unshare -n`), so that Ray and everything it
starts can reach no address but this namespace's loopback: a local Ray with 2 CPU replicas of the tiny model behind
vidlab's gateway, both replicas answering, one killed mid-load and replaced, no request lost. Writes what it saw as
JSON to the path in argv[3]; stops everything it started (by process id), and reports any process left over.

    python tests/serve_ray_check.py MODEL_DIR MEDIA_ROOT OUT_JSON
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2

PROMPTS = ["What happens?", "Describe the video.", "Which way does it move?", "What colour is it?"]
AFFINITY_VIDEOS = ["moving.mp4", "flipped.mp4"]  # in the media root


def loopback_up() -> None:
    """A new network namespace starts with its loopback down (SIOCGIFFLAGS / SIOCSIFFLAGS, IFF_UP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, 0x8913, request))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sh", b"lo", flags | 0x1))


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def listening() -> list[str]:
    """Local addresses of every listening TCP socket in this namespace (from /proc/net/tcp and tcp6)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address = fields[1].split(":")[0]
            raw = bytes.fromhex(address)
            if width == 8:
                found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, words))
    return sorted(set(found))


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pids: set[int] | list[int]) -> list[int]:
    """The processes among `pids` that still run (zombies, already ended, do not count)."""
    running = []
    for pid in sorted(pids):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.append(pid)
    return running


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replica_values(client, url: str, name: str, **labels: str) -> dict[str, float]:
    """The value of sample `name` (with `labels`) per `replica` label at the gateway's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(client.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and "replica" in sample.labels and labels.items() <= sample.labels.items():
                values[sample.labels["replica"]] = sample.value
    return values


def wait_for_replicas(client, url: str, wanted, seconds: float = 30) -> dict[str, float]:
    """Generated tokens per replica at the gateway, once `wanted(values)` holds (or after `seconds`): a replica
    sends its metrics with each health check, so the gateway's may be a check behind."""
    deadline = time.monotonic() + seconds
    while True:
        values = replica_values(client, url, "vidlab_serve_generated_tokens_total")
        if wanted(values) or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def main(model_dir: str, media_root: str, out: str) -> None:
    loopback_up()
    from vidlab.serve import ServeOptions
    from vidlab.serve.ray_serve import RayOptions, start_ray
    from vidlab.settings import GenerationOptions

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report: dict = {"interfaces": interfaces()}
    started = time.monotonic()
    options = ServeOptions(media_root=media_root, max_batch=4, max_queue=64,
                           generation=GenerationOptions(max_new_tokens=24))
    seen_processes: set[int] = set()
    server = None
    try:
        server = start_ray(model_dir, name="tiny", options=options, device="cpu", host="127.0.0.1", port=port,
                           ray_options=RayOptions(replicas=2, cpus_per_replica=1, health_check_seconds=1, retries=6),
                           num_cpus=3)
        report["startup_seconds"] = round(time.monotonic() - started, 1)
        url = f"{server.url}/v1/chat/completions"
        client = httpx2.Client(timeout=120)

        def ask(i: int) -> tuple[int, int, dict, str | None]:
            # A uuid of its own per request: requests about the same media go to one replica, these to both.
            body = {"model": "tiny", "max_tokens": 120, "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": "moving.mp4"}, "uuid": f"moving-{i}"},
                {"type": "text", "text": PROMPTS[i % 4]}]}]}
            response = client.post(url, json=body)
            return i, response.status_code, response.json(), response.headers.get("retry-after")

        # Both replicas serve: each answer names its process (system_fingerprint).
        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(ask, range(16)))
        report["first_statuses"] = sorted({status for _, status, _, _ in first})
        answers = {i % 4: body["choices"][0]["message"]["content"] for i, status, body, _ in first if status == 200}
        report["first_fingerprints"] = sorted({body.get("system_fingerprint") for _, _, body, _ in first})
        report["consistent"] = all(body["choices"][0]["message"]["content"] == answers[i % 4]
                                   for i, status, body, _ in first if status == 200)
        report["listening"] = listening()
        seen_processes |= descendants(os.getpid())
        # The replicas' own metrics reach the gateway's /metrics with their health checks, labelled by replica.
        first_replicas = set(report["first_fingerprints"])
        tokens = wait_for_replicas(client, server.url, lambda values: first_replicas <= {r for r, v in values.items()
                                                                                          if v > 0})
        report["first_replica_tokens"] = tokens

        # Media-affine routing: questions about video A and about video B, interleaved, each video on one replica,
        # whose prefix cache the later questions hit (its /metrics by replica); the others' caches see none.
        def prefix_hits() -> dict[str, float]:
            return {replica: value for replica, value in
                    replica_values(client, server.url, "vidlab_serve_cache_hits_total", cache="prefix").items()}

        hits_before = prefix_hits()
        affine = []
        for i in range(len(PROMPTS)):
            for video in AFFINITY_VIDEOS:
                body = {"model": "tiny", "max_tokens": 120, "messages": [{"role": "user", "content": [
                    {"type": "video_url", "video_url": {"url": video}}, {"type": "text", "text": PROMPTS[i]}]}]}
                response = client.post(url, json=body)
                answer = response.json()
                affine.append({"video": video, "prompt": PROMPTS[i], "status": response.status_code,
                               "replica": answer.get("system_fingerprint"),
                               "answer": answer["choices"][0]["message"]["content"] if response.is_success else None})
        report["affinity"] = affine
        wanted = {}
        for video in AFFINITY_VIDEOS:
            for replica in {row["replica"] for row in affine if row["video"] == video}:
                wanted[replica] = wanted.get(replica, 0) + len(PROMPTS) - 1
        deadline = time.monotonic() + 30
        while True:  # the replicas' metrics reach the gateway with their next health checks
            hits = prefix_hits()
            delta = {replica: value - hits_before.get(replica, 0) for replica, value in hits.items()}
            if all(delta.get(replica, 0) >= n for replica, n in wanted.items()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        report["affinity_prefix_hits"] = delta

        # Kill one replica while 24 requests are in flight.
        victim = int(report["first_fingerprints"][0].rsplit("-", 1)[1])
        report["killed"] = victim
        with ThreadPoolExecutor(24) as pool:
            idle = cpu_seconds(victim)
            futures = [pool.submit(ask, i) for i in range(24)]
            # Killed once it has worked on its share for a moment (not after a fixed sleep: on a loaded machine the
            # requests may not have reached it yet), so that requests are in flight on it when it dies.
            deadline = time.monotonic() + 60
            while cpu_seconds(victim) - idle < 0.1 and time.monotonic() < deadline:
                time.sleep(0.02)
            report["victim_busy_seconds"] = round(cpu_seconds(victim) - idle, 2)
            os.kill(victim, signal.SIGKILL)
            during = [f.result() for f in futures]
        report["during_statuses"] = [status for _, status, _, _ in during]
        report["during_completion_tokens"] = [body["usage"]["completion_tokens"] for _, status, body, _ in during
                                              if status == 200]
        report["during_from_victim"] = sum(body.get("system_fingerprint", "").endswith(f"-{victim}")
                                           for _, status, body, _ in during if status == 200)
        report["during_retry_after"] = [after for _, status, _, after in during if status == 503]
        report["during_errors"] = [body.get("error") for _, status, body, _ in during if status != 200]
        metrics = client.get(f"{server.url}/metrics").text
        report["resent"] = sum(float(line.split()[-1]) for line in metrics.splitlines()
                               if line.startswith("vidlab_serve_replica_retries_total"))
        report["during_consistent"] = all(body["choices"][0]["message"]["content"] == answers[i % 4]
                                          for i, status, body, _ in during if status == 200)

        # The replica is replaced: two processes answer again, one of them new.
        deadline = time.monotonic() + 90
        fingerprints: set[str] = set()
        while time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                fingerprints |= {body.get("system_fingerprint") for _, status, body, _ in pool.map(ask, range(8))
                                 if status == 200}
            pids = {int(f.rsplit("-", 1)[1]) for f in fingerprints}
            if len(pids - {victim}) >= 2:
                break
            time.sleep(0.5)
        report["after_fingerprints"] = sorted(fingerprints)
        report["replaced_seconds"] = round(time.monotonic() - deadline + 90, 1)
        killed = report["first_fingerprints"][0]
        tokens = wait_for_replicas(client, server.url, lambda values: set(values) == set(fingerprints) - {killed}
                                   and all(v > 0 for v in values.values()))
        report["after_replica_tokens"] = tokens
        seen_processes |= descendants(os.getpid())
    except Exception as err:
        report["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        try:
            if server is not None:
                server.stop()
            else:
                import ray

                ray.shutdown()
        finally:
            time.sleep(1)
            left = alive(seen_processes | descendants(os.getpid()))
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            report["left_after_stop"] = left
            time.sleep(0.5)
            report["left_after_kill"] = alive(left)
            report["total_seconds"] = round(time.monotonic() - started, 1)
            Path(out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    threading.current_thread().name = "serve-ray-check"
    main(*sys.argv[1:4])
