"""OpenAI's `stop` strings: the answer ends before the first one, which is not part of it.

Generation runs on until the model's own end (or max_tokens), so the text is cut here; a stream
holds back only what could still become a stop string, and ends as soon as one appears.
"""

from __future__ import annotations


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """(text before the earliest stop string, whether one was found)."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


class StopScanner:
    """Feeds streamed pieces; gives back the text that is safe to send."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self._held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text to send now, whether a stop string was reached: then nothing more is sent)."""
        if not self.stops:
            return piece, False
        text = self._held + piece
        cut, stopped = cut_at_stop(text, self.stops)
        if stopped:
            self._held = ""
            return cut, True
        # Keep back the longest tail that is the start of a stop string: the next piece may complete it.
        keep = max((n for stop in self.stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """What was held back, once the answer has ended without a stop string."""
        held, self._held = self._held, ""
        return held
