"""A/B runs of a benchmark on two source trees at once, so both see the same machine load.

A :class:`Worker` is a benchmark script started with ``--worker``: it answers one JSON request per
line on stdin with one JSON line on stdout (:func:`serve`). :func:`alternate` asks the "before" and
"after" workers the same request in turns, swapping their order every round. On a shared CPU only the
ratio of the two is meaningful, not the absolute times.

Two ways to point a worker at a tree: run that tree's own copy of the script (``benchmarks/frame.py``
does, so the whole frame path is the other tree's), or run this tree's script with the other tree's
``gags_viewer`` first on the import path (``benchmarks/render.py`` does: the same synthetic scene and
timing code on both sides, only the renderer differs; see :data:`PACKAGE_TREE_ENV`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PACKAGE_TREE_ENV = "GAGS_BENCH_PACKAGE_TREE"
"""Set in a worker's environment to the tree its ``gags_viewer`` must be imported from (scripts that
support it put that tree first on ``sys.path``)."""


class Worker:
    """``python SCRIPT --worker ARGS`` with ``package_tree`` first on its import path (its working
    directory too)."""

    def __init__(self, script: Path, package_tree: Path, args: tuple[str, ...] = ()):
        env = {**os.environ, "PYTHONPATH": str(package_tree), PACKAGE_TREE_ENV: str(package_tree)}
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--worker", *args],
            cwd=package_tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark worker exited ({self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def serve(answer: Callable[[dict], dict]) -> None:
    """The ``--worker`` loop: each JSON request line on stdin is answered with ``answer(request)``."""
    for line in sys.stdin:
        print(json.dumps(answer(json.loads(line))), flush=True)


def alternate(workers: dict[str, Worker], rounds: int, **request) -> dict[str, dict[str, list]]:
    """Ask every worker ``request`` ``rounds`` times, in turns, reversing the order each round.

    Returns {worker name: {key: the concatenation of that list-valued key over its answers}}, e.g. the
    time of every frame under ``"all"``.
    """
    results: dict[str, dict[str, list]] = {name: {} for name in workers}
    names = list(workers)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            for key, value in workers[name].ask(**request).items():
                if isinstance(value, list):
                    results[name].setdefault(key, []).extend(value)
    return results
