"""vidlab serve: throughput and latency for 1, 8 and 32 concurrent clients, batching on against off; and (case a)
continuous against static batching with mixed answer lengths.

    python benchmarks/serve.py [--model DIR] [--requests-per-client 8] [--max-tokens 16] [--json OUT]
    python benchmarks/serve.py --case a [--model DIR] [--requests-per-client 2] [--rounds 6] [--client httpx2]
        [--json OUT]
    python benchmarks/serve.py prefix [--model DIR] [--questions 8] [--videos 4] [--json OUT]   (or --case b)

`prefix` (case b): many questions about a few videos, with the prefix cache against without it (`prefix_main`).

Case a: 32 clients, answers of 4 to 128 tokens (each request asks for one of 4, 8, 16, 32, 64, 128 with
ignore_eos, so every answer has that length), `--batching static` against `--batching continuous` (both
--max-batch 8), the two servers running side by side and taking turns. Prints requests per second, p50 / p99
latency, the mean batch size and each server's peak memory (resident set), and the speed-up (goal: 1.5x, lower p99).

The clients: one thread each, on a keep-alive connection of the standard library's `http.client` (`--client
httpx2`: an httpx client each, the old way, which costs several times the CPU per request on the machine the server
shares). The clock starts once every client is connected; the speed-up with the clients' set-up on the clock (how
it was measured before: making 32 httpx clients took 1-3 s of each round) is printed too.

Starts `vidlab serve --batching static` twice on 127.0.0.1 (a subprocess each, one torch thread): with
--max-batch 8 (batching on) and with --max-batch 1 (off), the tiny model by default (built in a temporary
folder); the two take turns at each client count. Each client sends its requests one after
another (at least 32 requests per setting), half of them about a 4-second video (the same file:
decoded once, then from the caches), half text only, all greedy. Prints requests per second, the
p50 / p99 latency and the mean batch size of every setting, the speed-up of batching with 8
clients (goal: 2x), and the machine's load average meanwhile (other work skews the numbers).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

CLIENTS = (1, 8, 32)
MIN_REQUESTS = 32  # per setting, so that one client's numbers are not a handful of requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, root: Path, max_batch: int, max_tokens: int,
                 extra: tuple[str, ...] = ("--batching", "static"), device: str = "cpu",
                 wait: float = 120) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "vidlab.cli", "serve", "--model", model, "--name", "tiny", "--port", str(port),
               "--media-root", str(root), "--max-batch", str(max_batch), "--max-queue", "512",
               "--max-new-tokens", str(max_tokens), "--device", device, "--log-level", "warning", *extra]
    # One intra-op thread: the tiny model's matrices are too small to share, and 2 cores are shared with the clients.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx2

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server did not start: {process.stderr.read()[-2000:]}")
        try:
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx2.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server did not start within {wait:.0f} s")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def body(i: int) -> dict:
    question = {"type": "text", "text": f"Question {i}: what happens in it?"}
    content = [{"type": "video_url", "video_url": {"url": "clip.mp4"}}, question] if i % 2 else [question]
    return {"model": "tiny", "messages": [{"role": "user", "content": content}]}


MIXED_LENGTHS = (4, 8, 16, 32, 64, 128)  # case a: answer lengths, in turn


def mixed_body(i: int) -> dict:
    return {**body(i), "max_tokens": MIXED_LENGTHS[i % len(MIXED_LENGTHS)], "ignore_eos": True}


def peak_rss_mib(process: subprocess.Popen) -> float:
    """The server's peak resident memory so far (Linux: VmHWM)."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class LightClient:
    """One keep-alive HTTP/1.1 connection through the standard library: a fraction of httpx's CPU per request, so
    that 32 client threads on the server's 2 cores take less of the machine (`--client httpx2`: the old client)."""

    def __init__(self, url: str, timeout: float):
        parsed = urlsplit(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
        self.connection.connect()

    def post(self, path: str, body: dict) -> dict:
        self.connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {data[:500]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.connection.close()


class HttpxClient:
    def __init__(self, url: str, timeout: float):
        import httpx2

        self.url, self.http = url, httpx2.Client(timeout=timeout)

    def post(self, path: str, body: dict) -> dict:
        response = self.http.post(f"{self.url}{path}", json=body)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.http.close()


CLIENT_KINDS = {"light": LightClient, "httpx2": HttpxClient}


def run_clients(url: str, clients: int, per_client: int, make_body=body, kind: str = "light") -> dict:
    """`clients` threads, each sending `per_client` requests one after another. The clock starts once every client
    is connected and ready (`seconds`); `setup_seconds` also counts making the clients (the old clock: 32 httpx
    clients take ~0.1 s each to make, which counted as serving time before)."""
    latencies: list[float] = []
    batches: list[int] = []
    lock = threading.Lock()
    ready: list[float] = []
    start = threading.Barrier(clients, action=lambda: ready.append(time.perf_counter()))

    def client(n: int) -> None:
        http = CLIENT_KINDS[kind](url, 300)
        try:
            start.wait()
            for k in range(per_client):
                began = time.perf_counter()
                answer = http.post("/v1/chat/completions", make_body(n * per_client + k))
                with lock:
                    latencies.append(time.perf_counter() - began)
                    batches.append(answer["vidlab"]["batch_size"])
        finally:
            http.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    ended = time.perf_counter()
    return {**summary(latencies, batches, ended - ready[0]), "setup_seconds": ended - began}


def summary(latencies: list[float], batches: list[int], seconds: float) -> dict:
    latencies = sorted(latencies)
    return {"requests": len(latencies), "rps": len(latencies) / seconds, "batch": statistics.mean(batches),
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "seconds": seconds, "latencies": latencies, "batches": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Checkpoint folder (default: the tiny model, built in a temporary folder).")
    parser.add_argument("--requests-per-client", type=int, help="Default: 8 (case batching), 2 (case a).")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    parser.add_argument("--rounds", type=int, default=6,
                        help="Case a: rounds per server, taken in turn (a round takes a few seconds: on a shared "
                        "machine fewer rounds mostly measure its load).")
    parser.add_argument("--client", choices=tuple(CLIENT_KINDS), default="light",
                        help="light: the standard library's http.client (default); httpx2: the old, heavier client.")
    parser.add_argument("--case", choices=("batching", "a"), default="batching",
                        help="batching: on against off at 1, 8, 32 clients; a: continuous against static batching, "
                        "32 clients, answers of 4-128 tokens.")
    args = parser.parse_args()
    if args.case == "a":
        mixed_lengths(args)
        return
    args.requests_per_client = args.requests_per_client or 8

    import numpy as np

    from vidlab.media.writer import write_video

    with tempfile.TemporaryDirectory(prefix="vidlab-serve-bench-") as temp:
        temp = Path(temp)
        root = temp / "media"
        root.mkdir()
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        write_video(root / "clip.mp4", [np.roll(base, 5 * i, axis=1) for i in range(40)], fps=10)
        model = args.model
        if model is None:
            from vidlab.models.tiny import build_tiny_model

            model = str(build_tiny_model(temp / "tiny", seed=0))
        rows = []
        servers = {}
        try:
            for batching, max_batch in (("off", 1), ("on", 8)):
                servers[batching] = start_server(model, root, max_batch, args.max_tokens)
                run_clients(servers[batching][1], 4, 2)  # warm up: decode the video once, first calls
            # Both servers run all along and take turns, so a change in the machine's load hits both alike.
            for clients in CLIENTS:
                per_client = max(args.requests_per_client, -(-MIN_REQUESTS // clients))
                for batching, (_, url) in servers.items():
                    result = run_clients(url, clients, per_client, kind=args.client)
                    result = {k: v for k, v in result.items() if k not in ("latencies", "batches", "seconds")}
                    rows.append({"batching": batching, "clients": clients, **result})
                    print(f"batching {batching:3}  clients {clients:2}  {result['rps']:6.1f} req/s  "
                          f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                          f"batch {result['batch']:.1f}", file=sys.stderr, flush=True)
        finally:
            for process, _ in servers.values():
                stop_server(process)
        rows.sort(key=lambda row: (row["batching"] == "on", row["clients"]))

    print(f"\nvidlab serve, {'the tiny model' if args.model is None else args.model}, {args.max_tokens} tokens per "
          f"answer, half the requests with a 4 s video")
    print(f"{'batching':<9}{'clients':>8}{'requests':>10}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'batch':>7}")
    for row in rows:
        print(f"{row['batching']:<9}{row['clients']:>8}{row['requests']:>10}{row['rps']:>8.1f}{row['p50_ms']:>9.1f}"
              f"{row['p99_ms']:>9.1f}{row['batch']:>7.1f}")
    rps = {(row["batching"], row["clients"]): row["rps"] for row in rows}
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    speedup = rps[("on", 8)] / rps[("off", 8)]
    print(f"batching speed-up with 8 clients: {speedup:.2f}x (goal: at least 2x); load average {load}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "speedup_8_clients": speedup}, indent=2))


def mixed_lengths(args) -> None:
    """Case a: continuous against static batching, 32 clients, answers of 4-128 tokens."""
    clients, per_client = 32, args.requests_per_client or 2
    with tempfile.TemporaryDirectory(prefix="vidlab-serve-bench-") as temp:
        temp = Path(temp)
        root, model = prepare(temp, args.model)
        servers, rows = {}, []
        try:
            for batching in ("static", "continuous"):
                servers[batching] = start_server(model, root, 8, 128, ("--batching", batching))
                run_clients(servers[batching][1], 4, 2, mixed_body)  # warm up
            # Rounds in turn (static first, then continuous first, ...), so a change in the machine's load hits both.
            rounds = {batching: [] for batching in servers}
            for turn in range(args.rounds):
                for batching in list(servers)[:: 1 if turn % 2 == 0 else -1]:
                    result = run_clients(servers[batching][1], clients, per_client, mixed_body, args.client)
                    rounds[batching].append(result)
                    print(f"round {turn + 1}  {batching:10}  {result['rps']:6.2f} req/s  p50 {result['p50_ms']:8.1f} "
                          f"ms  p99 {result['p99_ms']:8.1f} ms  batch {result['batch']:.1f}  (with client set-up "
                          f"{result['requests'] / result['setup_seconds']:.2f} req/s)", file=sys.stderr, flush=True)
            for batching, results in rounds.items():
                together = summary([t for r in results for t in r["latencies"]],
                                   [b for r in results for b in r["batches"]], sum(r["seconds"] for r in results))
                kept = {k: v for k, v in together.items() if k not in ("latencies", "batches")}
                setup = sum(r["setup_seconds"] for r in results)
                rows.append({"batching": batching, **kept, "rps_with_setup": together["requests"] / setup,
                             "peak_rss_mib": peak_rss_mib(servers[batching][0])})
        finally:
            for process, _ in servers.values():
                stop_server(process)
    print(f"\nvidlab serve, case a: {'the tiny model' if args.model is None else args.model}, {clients} clients x "
          f"{per_client} requests x {args.rounds} rounds, answers of {'/'.join(map(str, MIXED_LENGTHS))} tokens "
          f"(ignore_eos), max_batch 8, {args.client} clients")
    print(f"{'batching':<12}{'requests':>9}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}{'batch':>7}{'peak MiB':>10}")
    for row in rows:
        print(f"{row['batching']:<12}{row['requests']:>9}{row['rps']:>8.2f}{row['p50_ms']:>10.1f}"
              f"{row['p99_ms']:>10.1f}{row['batch']:>7.1f}{row['peak_rss_mib']:>10.0f}")
    static, continuous = rows
    speedup = continuous["rps"] / static["rps"]
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    old_clock = continuous["rps_with_setup"] / static["rps_with_setup"]
    print(f"continuous over static: {speedup:.2f}x requests/s (goal: at least 1.5x), p99 "
          f"{continuous['p99_ms'] / static['p99_ms']:.2f}x (goal: below 1); with the clients' set-up on the clock "
          f"(the old figure): {continuous['rps_with_setup']:.2f} against {static['rps_with_setup']:.2f} req/s, "
          f"{old_clock:.2f}x; load average {load}")
    if args.json:
        args.json.write_text(json.dumps({"case": "a", "rows": rows, "speedup": speedup,
                                         "speedup_with_setup": old_clock}, indent=2))


def prepare(temp: Path, model: str | None) -> tuple[Path, str]:
    """The media folder (a 4 s clip) and the model (the tiny one, built here, unless given)."""
    import numpy as np

    from vidlab.media.writer import write_video

    root = temp / "media"
    root.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    write_video(root / "clip.mp4", [np.roll(base, 5 * i, axis=1) for i in range(40)], fps=10)
    if model is None:
        from vidlab.models.tiny import build_tiny_model

        model = str(build_tiny_model(temp / "tiny", seed=0))
    return root, model


def prefix_server(model: str, root: Path, prefix_mb: float, max_tokens: int) -> tuple[subprocess.Popen, str]:
    """`vidlab serve` with the prefix cache of `prefix_mb` MiB (0: off), batches of one (one client)."""
    return start_server(model, root, 1, max_tokens, extra=("--prefix-cache-mb", str(prefix_mb)), device="auto",
                        wait=300)


def prefix_request(http, url: str, video: str | None, question: str) -> tuple[float, float]:
    """One streamed question about `video` (None: text only): (seconds to the first piece of the answer, in all)."""
    media = [{"type": "video_url", "video_url": {"url": video}}] if video else []
    body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": [
        *media, {"type": "text", "text": question}]}]}
    began = time.perf_counter()
    first = None
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: {") and '"content":"' in line.replace(" ", "") \
                    and '"content":""' not in line.replace(" ", ""):
                first = time.perf_counter() - began
    total = time.perf_counter() - began
    return (first if first is not None else total), total


def prefix_videos(root: Path, count: int, seconds: int, size: int) -> list[str]:
    """`count` videos of `seconds` seconds at 10 fps, `size` x `size`, each with its own pixels."""
    import numpy as np

    from vidlab.media.writer import write_video

    names = []
    for v in range(count):
        base = np.random.default_rng(v).integers(0, 255, (size, size, 3), dtype=np.uint8)
        frames = (np.roll(base, 3 * i, axis=1) for i in range(seconds * 10))
        write_video(root / f"video{v}.mp4", frames, fps=10)
        names.append(f"video{v}.mp4")
    return names


def prefix_main(argv: list[str]) -> None:
    """Case (b): `--questions` questions about each of `--videos` two-minute videos, interleaved (every video's
    first question, then every video's second, ...), one client, streamed. Two servers run side by side, one with
    the prefix cache (the video's prompt start prefilled once, then reused) and one without (every request
    prefills its video's tokens again; both keep decoded frames and vision-encoder outputs); they take turns
    request by request, so the machine's load hits both alike. Prints the time to first token of first and of
    repeated questions, requests per second, and the speed-up of repeated-prefix TTFT (goal: at least 5x)."""
    parser = argparse.ArgumentParser(prog="serve.py prefix", description=prefix_main.__doc__.splitlines()[0])
    parser.add_argument("--model", help="Checkpoint folder (default: the tiny model, built in a temporary folder).")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--size", type=int, default=64, help="Frame width and height (pixels).")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    args = parser.parse_args(argv)
    import httpx2

    with tempfile.TemporaryDirectory(prefix="vidlab-prefix-bench-") as temp:
        temp = Path(temp)
        root = temp / "media"
        root.mkdir()
        videos = prefix_videos(root, args.videos, args.seconds, args.size)
        model = args.model
        if model is None:
            from vidlab.models.tiny import build_tiny_model

            model = str(build_tiny_model(temp / "tiny", seed=0))
        servers = {}
        timings: dict[str, list[tuple[int, float, float]]] = {"off": [], "on": []}
        try:
            servers["off"] = prefix_server(model, root, 0, args.max_tokens)
            servers["on"] = prefix_server(model, root, 1024, args.max_tokens)
            with httpx2.Client(timeout=600) as http:
                for _, url in servers.values():  # each server's first call (text only: no video is cached)
                    prefix_request(http, url, None, "Warm up.")
                for q in range(args.questions):
                    for video in videos:
                        question = f"Question {q + 1}: what happens in the video?"
                        for setting in ("off", "on"):
                            ttft, total = prefix_request(http, servers[setting][1], video, question)
                            timings[setting].append((q, ttft, total))
                            print(f"prefix {setting:3} q{q + 1} {video}  ttft {1000 * ttft:7.1f} ms  total "
                                  f"{1000 * total:7.1f} ms", file=sys.stderr, flush=True)
            metrics = httpx2.get(f"{servers['on'][1]}/metrics", timeout=10).text
        finally:
            for process, _ in servers.values():
                stop_server(process)

    saved = next((float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("vidlab_serve_prefix_tokens_saved_total")), 0.0)
    rows = {}
    for setting, done in timings.items():
        first = [ttft for q, ttft, _ in done if q == 0]
        repeated = [ttft for q, ttft, _ in done if q > 0]
        rows[setting] = {"first_ttft_ms": 1000 * statistics.median(first),
                         "repeated_ttft_ms": 1000 * statistics.median(repeated),
                         "repeated_p99_ttft_ms": 1000 * max(repeated),
                         "rps": len(done) / sum(total for _, _, total in done)}
    speedup = rows["off"]["repeated_ttft_ms"] / rows["on"]["repeated_ttft_ms"]
    rps_ratio = rows["on"]["rps"] / rows["off"]["rps"]
    print(f"\nvidlab serve, {'the tiny model' if args.model is None else args.model}: {args.questions} questions about "
          f"each of {args.videos} videos of {args.seconds} s ({args.size}x{args.size}), interleaved, one client, "
          f"{args.max_tokens} tokens per answer")
    print(f"{'prefix cache':<13}{'first TTFT ms':>14}{'repeated TTFT ms':>17}{'max ms':>8}{'req/s':>8}")
    for setting, row in rows.items():
        print(f"{setting:<13}{row['first_ttft_ms']:>14.1f}{row['repeated_ttft_ms']:>17.1f}"
              f"{row['repeated_p99_ttft_ms']:>8.1f}{row['rps']:>8.2f}")
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"repeated-prefix TTFT speed-up: {speedup:.2f}x (goal: at least 5x); requests/s {rps_ratio:.2f}x; "
          f"prompt tokens not prefilled again: {saved:.0f}; load average {load}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "repeated_ttft_speedup": speedup, "rps_ratio": rps_ratio,
                                         "tokens_saved": saved}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["prefix"] or sys.argv[1:3] == ["--case", "b"]:
        prefix_main(sys.argv[2 if sys.argv[1] == "prefix" else 3:])
    else:
        main()
