"""A function running in a thread whose outcome the caller polls (used to let `ray status`
confirm the cluster while vLLM starts loading)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """A function running in a thread; `poll()` gives its result, None while it runs, or
    raises what it raised."""

    def __init__(self, fn: Callable[[], T] | None) -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        if fn is not None:
            threading.Thread(target=self._run, args=(fn,), daemon=True, name="background").start()

    @classmethod
    def done(cls, value: T | None) -> Background[T]:
        b: Background[T] = cls(None)
        b._result = value
        b._done.set()
        return b

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # handed to poll()
            self._error = exc
        finally:
            self._done.set()

    def poll(self) -> T | None:
        if not self._done.is_set():
            return None
        if self._error is not None:
            raise self._error
        return self._result
