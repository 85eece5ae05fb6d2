"""Recent completions, kept so `/v1/explain` can explain one by its id (least recently used dropped)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from reasoning_dspy.steering import SteeringSpec


@dataclass
class CompletionRecord:
    """What explaining a completion needs: its prompt, every choice's tokens and the steering used."""

    id: str
    prompts: list[list[int]]  # prompt token ids, one per choice
    outputs: list[list[int]]  # generated token ids, one per choice
    texts: list[str]
    steering: SteeringSpec | None
    steering_echo: dict[str, Any]


class CompletionStore:
    """The `size` most recent completions by id; safe to use from any thread. `size=0` keeps none."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._items: OrderedDict[str, CompletionRecord] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, record: CompletionRecord) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[record.id] = record
            self._items.move_to_end(record.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, completion_id: str) -> CompletionRecord | None:
        with self._lock:
            record = self._items.get(completion_id)
            if record is not None:
                self._items.move_to_end(completion_id)
            return record
