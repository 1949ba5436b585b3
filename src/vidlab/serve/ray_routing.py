"""Media-affine routing under Ray: requests about the same media go to the same live replica, whose prefix and
vision caches already hold that media's work.

The gateway names each request's media (`media_key`: the uuids or URLs of its image and video parts, in order;
none for text-only requests) and `MediaAffinityRouter`, a Ray Serve request router (Ray's own extension point for
routing, `request_router_config`), ranks the live replicas for that key by rendezvous hashing: each key has one
first choice among the replicas alive now, and when a replica goes or comes only its own keys move. A request goes
to the next choices (the least loaded, as Ray's default router does) when its first choice is full or has
`imbalance` more requests in flight than the least busy replica; text-only requests are balanced as usual.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

KEY_ARGUMENT = "media_key"  # the keyword the gateway sends the key in (replicas ignore it)


def media_key(body: dict[str, Any]) -> str | None:
    """A short key naming the media of a chat request (its image and video parts' uuids, or their URLs or
    media-root paths when they have none, in order); None when it has none or its messages are malformed (the
    replica answers those with its own error)."""
    names = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("image_url", "video_url"):
                continue
            name = part.get("uuid")
            if not name:
                name = part.get(kind)
                name = name.get("url") if isinstance(name, dict) else name
            if isinstance(name, str) and name:
                names.append(f"{kind}:{name}")
    if not names:
        return None
    # hashed: a data: URL can be megabytes, and the router hashes the key again for each replica
    return hashlib.blake2b("\n".join(names).encode(), digest_size=16).hexdigest()


def _score(key: str, replica: RunningReplica) -> int:
    digest = hashlib.blake2b(f"{key}|{replica.replica_id.unique_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class MediaAffinityRouter(RequestRouter):
    """Ray Serve request router: a request with a media key to its rendezvous-hash first choice among the live
    replicas, unless that one is saturated; everything else to the less loaded of two random replicas (by
    queue length, probed by Ray as for its default router)."""

    def initialize_state(self, imbalance: int = 4, **kwargs) -> None:
        self.imbalance = imbalance

    def _queue(self, replica: RunningReplica) -> int:
        length = self.replica_queue_len_cache.get(replica.replica_id)
        return 0 if length is None else length

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        key = pending_request.kwargs.get(KEY_ARGUMENT) if pending_request is not None else None
        if key is None or len(candidate_replicas) == 1:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        ranked = sorted(candidate_replicas, key=lambda replica: _score(key, replica), reverse=True)
        first, others = ranked[0], ranked[1:]
        if self._queue(first) - min(self._queue(replica) for replica in others) >= self.imbalance:
            return [others, [first]]  # saturated: balance among the others (Ray picks the least loaded)
        # Ray skips a rank whose replicas are full (or do not answer its probe), so a full first choice falls
        # through to the least loaded of the others.
        return [[first], others]
