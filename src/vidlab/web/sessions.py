"""Per browser tab state (conversation, chosen media, open results), kept here rather than in gr.State,
which deep-copies its value for every tab: a conversation holds the model's caches."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from vidlab.web.backend import Conversation, MediaChoice, Preview

MAX_TABS = 64  # tabs remembered at once; the least recently used is forgotten first


@dataclass
class TabState:
    media: MediaChoice = field(default_factory=MediaChoice)
    preview: Preview | None = None
    preview_key: tuple | None = None  # (media, settings) the preview was made for
    talk: Conversation | None = None
    talk_key: tuple | None = None  # (model, media, settings, system) the conversation was started with
    results: Any = None  # vidlab.web.results.Results
    uploads: dict[str, list[str]] = field(default_factory=dict)  # per tab ("chat", "compare"): the files held
    asked: tuple[str, bool] | None = None  # the last question, and whether its answer finished (Regenerate)
    warned: bool = False  # the status line shows a warning (⚠): a new preview clears it
    # Held while the tab's media and preview change (a setting left, an upload) and while it answers: an answer
    # waits for a preview still being made rather than being refused.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Held while the tab answers (Ask, Regenerate): a second question meanwhile is refused, not queued.
    answering: threading.Lock = field(default_factory=threading.Lock)


class Sessions:
    def __init__(self, limit: int = MAX_TABS):
        self.limit = limit
        self._tabs: OrderedDict[str, TabState] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tabs)

    def get(self, request) -> TabState:
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            state = self._tabs.get(key)
            if state is None:
                state = self._tabs[key] = TabState()
                while len(self._tabs) > self.limit:
                    self._tabs.popitem(last=False)
            self._tabs.move_to_end(key)
            return state
