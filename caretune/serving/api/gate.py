"""Bounded work: one generation at a time behind a bounded queue, and the job each admitted request runs."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.requests import Request

from caretune.serving.api.settings import ApiError

DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


class Gate:
    """One generation at a time; at most `max_queue` requests wait. Retry-After comes from recent durations."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.durations: deque[float] = deque(maxlen=20)

    def retry_after(self) -> int:
        """Seconds a turned-away client should wait: recent answer time x the queue ahead of it."""
        typical = sum(self.durations) / len(self.durations) if self.durations else 1.0
        return max(1, math.ceil(typical * (self.waiting + 1)))

    def admit(self) -> None:
        """Take a waiting slot before any work on the request (tokenizing included): 503 when the queue is full."""
        if (self.lock.locked() or self.waiting) and self.waiting >= self.max_queue:
            raise ApiError(
                503,
                f"the server is busy ({self.waiting} requests waiting); retry later",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after())},
            )
        self.waiting += 1

    def withdraw(self) -> None:
        """Give back an admitted request's slot (refused before it waited for the model)."""
        self.waiting -= 1

    async def enter(self, deadline: float) -> None:
        """Wait for the model with the slot `admit` gave (504 past the deadline)."""
        try:
            await asyncio.wait_for(self.lock.acquire(), timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ApiError(504, "the request timed out waiting in the queue", code="timeout") from None
        finally:
            self.waiting -= 1

    def leave(self, started: float) -> None:
        """Free the model for the next request and record how long this one held it."""
        self.durations.append(time.monotonic() - started)
        self.lock.release()


@dataclass
class Job:
    """One admitted request's generation, running in a worker thread."""

    deadline: float
    shutdown: threading.Event
    stop: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        """Asked after every token: the client went away, the server is stopping, or time is up."""
        return self.stop.is_set() or self.shutdown.is_set() or time.monotonic() >= self.deadline

    def cancelled_error(self, timeout_s: float) -> ApiError:
        """What to answer a cancelled generation: 503 when shutting down, 504 past the time limit."""
        if self.shutdown.is_set():
            return ApiError(503, "the server is shutting down", code="shutting_down")
        return ApiError(504, f"the answer took longer than the {timeout_s:g} s request limit", code="timeout")


async def watch(request: Request, job: Job) -> None:
    """Return when the job's client goes away, stopping its generation, or when the server begins to shut down
    (polled: a non-streaming request is never told of either)."""
    while not job.shutdown.is_set():
        if await request.is_disconnected():
            job.stop.set()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)
