"""Run functions in forked child processes and collect what they return, with deadlines."""

from __future__ import annotations

import multiprocessing
import queue
import traceback
from collections.abc import Callable, Sequence
from typing import Any

fork_context = multiprocessing.get_context("fork")


def _child(target: Callable[..., Any], args: tuple, results: Any, index: int) -> None:
    try:
        results.put((index, True, target(*args)))
    except BaseException:
        results.put((index, False, traceback.format_exc()))


def run_forked(target: Callable[..., Any], arg_sets: Sequence[tuple], *, timeout: float) -> list[Any]:
    """Run ``target(*args)`` in one forked process per entry of ``arg_sets``; return results in order."""
    results = fork_context.Queue()
    children = [fork_context.Process(target=_child, args=(target, args, results, i)) for i, args in enumerate(arg_sets)]
    for child in children:
        child.start()
    collected: dict[int, Any] = {}
    try:
        for _ in children:
            index, ok, value = results.get(timeout=timeout)
            assert ok, f"child {index} failed:\n{value}"
            collected[index] = value
    except queue.Empty:
        raise AssertionError(f"only {len(collected)} of {len(children)} children reported within {timeout}s") from None
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
    return [collected[i] for i in range(len(children))]


def barrier(parties: int) -> Any:
    """A barrier that forked children share (created before they fork)."""
    return fork_context.Barrier(parties)
