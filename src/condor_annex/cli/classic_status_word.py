"""The classic ``[-annex-name N] status [condor_status args]``: what ``condor_status -annex``
prints, run the way HTCondor's ``condor_annex`` 23.9.6 ran it (``CondorStatusReply.cpp``;
reference §6).

The annex's instances (every annex's without ``-annex-name``), terminated ones included, become
``AnnexInstance`` ads on ``condor_status``'s standard input, and ``condor_status -annex -sort
EC2InstanceID -merge - [-annex-name N] ARGS`` prints the slot table of the annexes' slots and
then, merged in, one ``not in Annex`` row per instance without a slot (``Instance ID``,
annex, EC2 state, ``Reason (if known)``).  Its exit status is ours, as the original
``exec``'d it.  ``condor_status`` is HTCondor's own (on ``PATH``, or in the ``BIN`` directory
of the HTCondor configuration the bindings read); the original ran the one installed beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from condor_annex.errors import PoolError
from condor_annex.service.classic_status import ClassicInstance


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def instance_ad(inst: ClassicInstance) -> str:
    """One ``AnnexInstance`` ad in the text form ``condor_status -merge`` reads, attributes in
    the order the original printed them; values the EC2 GAHP had none for read ``"NULL"``
    (as its replies did), and ``EC2StatusReasonCode`` is left out when there is none."""
    attrs = [("AnnexName", _quote(inst.annex_name)),
             ("EC2ClientToken", _quote(inst.client_token or "NULL")),
             ("EC2InstanceID", _quote(inst.instance_id)),
             ("EC2KeyPair", _quote(inst.key_name or "NULL"))]
    if inst.reason_code:
        attrs.append(("EC2StatusReasonCode", _quote(inst.reason_code)))
    attrs += [("GridJobStatus", _quote(inst.state)),
              ("Machine", _quote(inst.public_dns or "NULL")),
              ("MyType", '"AnnexInstance"'), ("Name", "EC2InstanceID")]
    return "".join(f"{k} = {v}\n" for k, v in attrs) + "\n"


def condor_status_argv(name: str | None, args: Sequence[str]) -> list[str]:
    """The arguments after ``condor_status``, as the original built them."""
    return ["-annex", "-sort", "EC2InstanceID", "-merge", "-",
            *(["-annex-name", name] if name is not None else []), *args]


def find_condor_status() -> str:
    """The path of HTCondor's ``condor_status``: on ``PATH``, else in HTCondor's ``BIN``.

    Raises:
        PoolError: neither has it.
    """
    found = shutil.which("condor_status")
    if found:
        return found
    try:
        import htcondor2
        bin_dir = htcondor2.param.get("BIN") or ""
    except Exception:  # noqa: BLE001 - no HTCondor configuration: nothing to read
        bin_dir = ""
    candidate = os.path.join(bin_dir, "condor_status") if bin_dir else ""
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    raise PoolError("status: HTCondor's condor_status is not on PATH (the classic 'status' "
                    "runs it, as the original did); install HTCondor's tools or add their "
                    "directory to PATH, or use 'condor_annex -status'")


def run_condor_status(instances: Sequence[ClassicInstance], name: str | None,
                      args: Sequence[str]) -> int:
    """Run ``condor_status`` with ``instances`` as ads on its standard input; its output goes
    straight to ours.

    Returns:
        condor_status's exit status.

    Raises:
        PoolError: condor_status is not installed.
    """
    tool = find_condor_status()
    ads = "".join(instance_ad(i) for i in instances)
    sys.stdout.flush()
    return subprocess.run([tool, *condor_status_argv(name, args)], input=ads, text=True,
                          check=False).returncode
