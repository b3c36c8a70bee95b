"""Which nodes a job's replicas go to: best-fit packing of whole replicas.

Every replica needs all its GPUs on one node, and replicas of one job go to
distinct nodes: that is how distributed training is laid out, and it lets
the operator pin one batch Job's pods exactly (node affinity to the chosen
set plus anti-affinity between the pods). Best fit (the node with the
fewest free GPUs that still fits) keeps whole nodes free for wide jobs, so
fragmentation delays them less. Nodes sit in buckets by free-GPU count, which
makes a lookup cost O(GPUs per node) rather than O(nodes): the decision core
places thousands of jobs per cycle. Among equally free nodes the first in
node order wins (then the one that reached that count first), so placement
is deterministic across runs.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable


class FreeGpus:
    """Free GPUs per node, with tentative placements that can be undone."""

    __slots__ = ("_buckets", "_free", "_max", "total_free")

    def __init__(self, free_by_node: Iterable[tuple[str, int]]) -> None:
        free = dict(free_by_node)
        if free and min(free.values()) < 0:  # over-committed by someone else: none free
            free = {name: max(0, v) for name, v in free.items()}
        self._free: dict[str, int] = free
        self._max = max(free.values(), default=0)
        self.total_free = sum(free.values())
        # nodes by free count, each bucket in arrival order: placement is
        # deterministic across runs (lists: a site's buckets are short)
        self._buckets: list[list[str]] = [[] for _ in range(self._max + 1)]
        for name, n in free.items():
            self._buckets[n].append(name)

    def free_on(self, node: str) -> int:
        return self._free.get(node, 0)

    def _move(self, node: str, delta: int) -> None:
        old = self._free[node]
        new = old + delta
        self._buckets[old].remove(node)
        self._buckets[new].append(node)
        self._free[node] = new
        self.total_free += delta

    def place(self, replicas: int, gpus_per_replica: int) -> tuple[str, ...] | None:
        """Take GPUs for every replica, or take nothing and return None."""
        if replicas * gpus_per_replica > self.total_free or gpus_per_replica > self._max:
            return None
        chosen: list[str] = []
        buckets = self._buckets
        for _ in range(replicas):
            node = None
            for k in range(gpus_per_replica, self._max + 1):
                for name in buckets[k]:
                    if name not in chosen:
                        node = name
                        break
                if node is not None:
                    break
            if node is None:
                self.release(chosen, gpus_per_replica)
                return None
            self._move(node, -gpus_per_replica)
            chosen.append(node)
        return tuple(chosen)

    def release(self, nodes: Iterable[str], gpus_per_replica: int) -> None:
        """Give back GPUs taken by `place` (one entry per replica)."""
        for node in nodes:
            if node in self._free:
                self._move(node, gpus_per_replica)


class NodeOrderIndex:
    """Free GPUs per node, kept by a caller across cycles (the simulator).

    `fits()` gives the `FreeGpus` that building one from the nodes, in node
    order, would give, without the build: each bucket is kept in node order
    as GPUs are taken and released. Decide copies it and works on the copy.
    """

    __slots__ = ("_buckets", "_free", "_rank")

    def __init__(self, free_by_node: Iterable[tuple[str, int]]) -> None:
        self._free = {name: max(0, n) for name, n in free_by_node}
        self._rank = {name: i for i, name in enumerate(self._free)}
        self._buckets: list[list[str]] = [
            [] for _ in range(max(self._free.values(), default=0) + 1)
        ]
        for name, n in self._free.items():
            self._buckets[n].append(name)

    def _move(self, node: str, delta: int) -> None:
        old = self._free[node]
        new = old + delta
        self._buckets[old].remove(node)
        if new >= len(self._buckets):
            self._buckets.extend([] for _ in range(new + 1 - len(self._buckets)))
        insort(self._buckets[new], node, key=self._rank.__getitem__)
        self._free[node] = new

    def take(self, nodes: Iterable[str], gpus_per_replica: int) -> None:
        """A job started on these nodes (one entry per replica)."""
        for node in nodes:
            self._move(node, -gpus_per_replica)

    def release(self, nodes: Iterable[str], gpus_per_replica: int) -> None:
        """A job on these nodes stopped."""
        for node in nodes:
            self._move(node, gpus_per_replica)

    def fits(self) -> FreeGpus:
        """A fresh FreeGpus, equal to one built from the nodes in node order."""
        out = object.__new__(FreeGpus)
        out._free = dict(self._free)
        buckets = self._buckets
        top = len(buckets) - 1
        while top > 0 and not buckets[top]:
            top -= 1
        out._max = top
        out._buckets = [b.copy() for b in buckets[: top + 1]]
        out.total_free = sum(n * len(b) for n, b in enumerate(buckets))
        return out
