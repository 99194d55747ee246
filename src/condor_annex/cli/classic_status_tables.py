"""The classic ``-status`` tables, character for character as HTCondor's ``condor_annex``
23.9.6 printed them (``StatusReply.cpp``: ``printHumanReadableSummary`` and
``printHumanReadable``; reference §6), and its two "nothing found" sentences.

Inputs are the original's two maps: instance id -> state (the EC2 state name, or ``in-pool``
for an instance with a slot in the collector) and instance id -> annex name.  Ordering is
the C++ ``std::map``/``std::set`` byte order, which ``sorted`` reproduces for these ASCII keys.
"""

from __future__ import annotations

from condor_annex.service.classic_status import IN_POOL

#: The original's answer when the cloud lists no annex instance at all (``-status``).
NO_INSTANCES = "Found no instances in any annex."
#: Its answer with ``-annex-name`` when that annex has no instance (even when slots exist).
NO_MACHINES = "Found no machines in that annex."

#: ``printHumanReadable`` wraps the instance ids of one state before this column.
WRAP_COLUMN = 80


def summary_table(states: dict[str, str], annexes: dict[str, str]) -> str:
    """``-status`` without a name: the ``NAME TOTAL <state>...`` table (names cut at 27
    characters, a column per state seen, in byte order), then, when an instance is not in the
    pool, a blank line and the ``NAME STATUS INSTANCES...`` table (one row per annex and state).

    Args:
        states: instance id -> state; may hold ids of slots the cloud does not list (the
            original's collector join adds them; they are not shown here).
        annexes: instance id -> annex name, for the instances the cloud listed (at least one).

    Returns:
        the text, each line ending in a newline.
    """
    counts: dict[str, dict[str, int]] = {}
    for iid, annex in annexes.items():
        per = counts.setdefault(annex, {})
        per[states[iid]] = per.get(states[iid], 0) + 1
    seen = sorted({s for per in counts.values() for s in per})
    lines = [f"{'NAME':<27.27} {'TOTAL':>5.5}" + "".join(f" {s}" for s in seen)]
    for annex in sorted(counts):
        per = counts[annex]
        lines.append(f"{annex:<27.27} {sum(per.values()):>5}"
                     + "".join(f" {per.get(s, 0):>{len(s)}}" for s in seen))
    if not any(s != IN_POOL for per in counts.values() for s in per):
        return "\n".join(lines) + "\n"
    longest = max(len(s) for s in seen)
    lines += ["", f"{'NAME':<27.27} {'STATUS':<{longest}} INSTANCES..."]
    for annex in sorted(counts):
        for state in sorted(counts[annex]):
            if state == IN_POOL:
                continue
            ids = [i for i in sorted(states) if states[i] == state and annexes.get(i) == annex]
            lines.append(f"{annex:<27.27} {state:<{longest}}" + "".join(f" {i}" for i in ids))
    return "\n".join(lines) + "\n"


def annex_table(states: dict[str, str]) -> str:
    """``-status -annex-name N``: the ``STATE COUNT`` table with a ``TOTAL`` row, then, unless
    every instance is in the pool, a blank line, ``Instances not in the pool, grouped by
    state:`` and one line per state with its instance ids, wrapped before column 80 and
    continued under the first id.

    Args:
        states: instance id -> state, the annex's instances and the ids of its slots (the
            original counts a slot whose instance the cloud does not list, too).
    """
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    lines = [f"{'STATE':<14.14} {'COUNT':>5.5}"]
    lines += [f"{state:<14.14} {counts[state]:>5}" for state in sorted(counts)]
    lines.append(f"{'TOTAL':<14.14} {len(states):>5}")
    if counts.get(IN_POOL, 0) != len(states):
        lines += ["", "Instances not in the pool, grouped by state:"]
        for state in sorted(counts):
            if state == IN_POOL:
                continue
            line, column = state, len(state)
            for iid in (i for i in sorted(states) if states[i] == state):
                column += len(iid) + 1
                if column >= WRAP_COLUMN:
                    lines.append(line)
                    line, column = " " * len(state), len(state) + len(iid) + 1
                line += f" {iid}"
            lines.append(line)
    return "\n".join(lines) + "\n"
