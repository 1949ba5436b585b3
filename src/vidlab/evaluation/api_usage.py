"""What an evaluation through an endpoint cost: `api_requests.jsonl` (one line per record asked, written by
`vidlab.evaluation.endpoint`) summed, and report.md's section on it. Light: the report reads it without torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vidlab.files import read_jsonl

REQUESTS_LOG = "api_requests.jsonl"


@dataclass
class EndpointUsage:
    """What a run folder's requests cost in all (every call into it, killed ones included)."""

    records: int = 0  # records asked about (answered or failed), counted once per call
    requests: int = 0  # HTTP requests, retries included
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def endpoint_usage(run_dir: str | Path) -> EndpointUsage | None:
    """The sums of `api_requests.jsonl` (None: the run did not go through an endpoint)."""
    path = Path(run_dir) / REQUESTS_LOG
    if not path.exists():
        return None
    usage = EndpointUsage()
    for row in read_jsonl(path, torn_tail_ok=True):
        usage.records += 1
        usage.requests += int(row.get("requests") or 0)
        usage.retries += max(0, int(row.get("requests") or 0) - 1)
        usage.failed += row.get("error") is not None
        usage.prompt_tokens += int(row.get("prompt_tokens") or 0)
        usage.completion_tokens += int(row.get("completion_tokens") or 0)
        usage.seconds += float(row.get("seconds") or 0)
    return usage


def endpoint_report_lines(run_dir: str | Path, info: dict) -> list[str]:
    """report.md's section on the endpoint: where the answers came from and what they cost."""
    api = info.get("api")
    usage = endpoint_usage(run_dir)
    if not api or usage is None:
        return []
    lines = ["## Endpoint", "",
             f"Answers from `{api.get('model')}` at {api.get('url')}, media sent as {api.get('media')}.", "",
             "| requests | retries | failed records | prompt tokens | completion tokens | request seconds |",
             "| --- | --- | --- | --- | --- | --- |",
             f"| {usage.requests} | {usage.retries} | {usage.failed} | {usage.prompt_tokens} | "
             f"{usage.completion_tokens} | {usage.seconds:.1f} |", ""]
    return lines
