"""Whether two replays decided alike: the check the A/B benches share."""

from __future__ import annotations


def same_acts(first: list, second: list, names: tuple[str, str]) -> bool:
    """Whether two replays' acting decisions (`(t, admits, preempts)` entries
    of a decision log that admit or preempt) are the same, at the same
    moments; print the first where they part, as a speed-up or a skipped
    cycle must not move one."""
    for i, (x, y) in enumerate(zip(first, second, strict=False)):
        if x != y:
            print(f"they part at decision {i}:\n  {names[0]:9s} {x}\n  {names[1]:9s} {y}")
            return False
    if len(first) != len(second):
        print(f"one stops acting before the other ({len(first)} against {len(second)})")
        return False
    print("identical: every admission and preemption at the same moment")
    return True
