"""``-status -classads``: one ``Annex`` ClassAd per annex, as HTCondor's ``condor_annex`` 23.9.6
printed them (``StatusReply.cpp``: ``printClassAds``; reference §6), in the text form
``condor_advertise`` reads.

Each ad has ``AnnexID``, ``MyType = "Annex"``, ``Name = "<annex> [<md5 of the access key
file>]"`` (unique per annex and credentials, so several users' ads can live in one collector),
``TotalInstances``, ``NumInstances<State>`` and, except for ``InPool``, ``<State>InstancesList``
(a ClassAd list of ids), attributes in case-insensitive order as ``fPrintAd`` prints them.

One defect is not kept: without ``-annex-name``, a slot in the collector whose instance the
cloud does not list (e.g. another account's annex in the same pool) sent the original into an
endless recursion (a crash, no output); such slots are left out here.
"""

from __future__ import annotations

import hashlib
import re

from condor_annex.service.classic_status import IN_POOL

#: What the original printed (on stderr) when the access key file could not be read.
HASH_FAILED = "Failed to hash the access (public) key file, aborting."


def state_attr(state: str) -> str:
    """``"in-pool"`` -> ``"InPool"``, ``"shutting-down"`` -> ``"ShuttingDown"``: letters only,
    each word capitalised (the original's loop)."""
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z]+", state) if w)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def key_file_md5(path: str | None) -> str | None:
    """Hex MD5 of the access key file's bytes, or None when it cannot be read."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.md5(f.read(), usedforsecurity=False).hexdigest()
    except OSError:
        return None


def annex_ad(annex_id: str, states: dict[str, str], key_md5: str) -> str:
    """One annex's ad: ``Name = value`` lines, each ending in a newline.

    Args:
        annex_id: the annex's name as the user typed it (``-annex-name``) or as tagged.
        states: instance id -> state (EC2 state name or ``in-pool``).
        key_md5: hex MD5 of the access key file.
    """
    by_state: dict[str, list[str]] = {}
    for iid in sorted(states):
        by_state.setdefault(states[iid], []).append(iid)
    attrs = {"AnnexID": _quote(annex_id), "MyType": '"Annex"',
             "Name": _quote(f"{annex_id} [{key_md5}]"), "TotalInstances": str(len(states))}
    for state, ids in by_state.items():
        attr = "InPool" if state == IN_POOL else state_attr(state)
        attrs[f"NumInstances{attr}"] = str(len(ids))
        if attr != "InPool":
            attrs[f"{attr}InstancesList"] = "{ " + ",".join(_quote(i) for i in ids) + " }"
    return "".join(f"{k} = {attrs[k]}\n" for k in sorted(attrs, key=str.lower))


def classads_text(states: dict[str, str], annexes: dict[str, str], name: str | None,
                  key_md5: str | None) -> tuple[str, str]:
    """The ``-classads`` output.

    Args:
        states: instance id -> state (with the slots' ids, as the original joined them).
        annexes: instance id -> annex name, for the instances the cloud listed.
        name: ``-annex-name`` as typed, or None for every annex.
        key_md5: the access key file's MD5, or None when it could not be read.

    Returns:
        (stdout text, stderr text): with a name, the annex's ad; without, each annex's ad
        followed by a blank line; an unreadable key file puts :data:`HASH_FAILED` on stderr
        instead of each ad.
    """
    groups: list[tuple[str, dict[str, str]]]
    if name is not None:
        groups = [(name, states)]
    else:
        per: dict[str, dict[str, str]] = {}
        for iid, state in states.items():
            if iid in annexes:
                per.setdefault(annexes[iid], {})[iid] = state
        groups = sorted(per.items())
    out, err = [], []
    for annex_id, annex_states in groups:
        if key_md5 is None:
            err.append(HASH_FAILED + "\n")
        else:
            out.append(annex_ad(annex_id, annex_states, key_md5))
        if name is None:
            out.append("\n")
    return "".join(out), "".join(err)
