"""HTCondor's own admin tools on annex nodes, run by the annex's owner on the submit host
(issue 13 item 3): ``condor_config_val -rset`` + ``condor_reconfig``, ``condor_drain`` and
``condor_off -annex NAME``, which takes the annex's nodes out of the pool; their masters then
exit (``MASTER.DAEMON_SHUTDOWN_FAST``) and the agents power the instances off.

On the local cloud the annex's owner is root (who ran ``condor_annex``); on the submit host
(the central manager's namespace and chroot, with its configuration) root's tools read their
tokens from the central manager's ``SEC_TOKEN_DIRECTORY``, where the local cloud's
``ANNEX_TOKEN_DIRECTORY`` has ``create`` write the annex's administrator token.
"""

from __future__ import annotations

import stat
import subprocess
import time

import pytest

from condor_annex.model import AnnexSpec
from condor_annex.pool import annex_admin
from condor_annex.pool.collector import annex_slots
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local import netns
from condor_annex.providers.local.layout import CM_DIR, ROOT
from condor_annex.service import annex as svc

from tests.e2e.helpers import alive, wait

pytestmark = pytest.mark.e2e


def _on_submit_host(*argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Run an HTCondor tool on the submit host as the annex's owner (root), with the pool's
    configuration, as a user there would."""
    cmd = ["ip", "netns", "exec", netns.prefix() + "cm", "chroot", str(ROOT), "env",
           f"CONDOR_CONFIG={CM_DIR}/etc/condor_config", "PATH=/usr/bin:/bin:/usr/sbin:/sbin",
           *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


def _ok(p: subprocess.CompletedProcess) -> str:
    """The tool's stdout; fails with the command line as typed on the submit host."""
    typed = " ".join(p.args[p.args.index("PATH=/usr/bin:/bin:/usr/sbin:/sbin") + 1:])
    assert p.returncode == 0, f"{typed}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _addresses(kind: str, name: str) -> list[str]:
    """The ``MyAddress`` of the annex's daemons of ``kind`` (``-master``, ``-startd``), as
    ``condor_status`` on the submit host lists them."""
    return [line.strip() for line in _ok(_on_submit_host(
        "condor_status", kind, "-constraint", f'AnnexName =?= "{name}"',
        "-af", "MyAddress")).splitlines() if line.strip()]


def test_the_owner_runs_condor_off_drain_and_rset_on_the_annex_nodes(local_cloud):
    ctx = local_cloud
    ec2 = make_client(ctx.aws, "ec2")
    name = "e2e-admin"
    spec = AnnexSpec(name=name, count=2, lease_seconds=900, idle_seconds=1800,
                     owners=("annexuser",))
    created = svc.create_annex(ctx, spec)
    try:
        assert svc.wait_for_join(ctx, name, 2, timeout_s=180) == 2
        token = annex_admin.token_path(name, ctx.knobs)
        assert stat.S_IMODE(token.stat().st_mode) == 0o600, token

        # The nodes' masters and startds, as the pool lists them (a master's first ad may come
        # after its startd's). The local cloud's submit host, like one outside the annex's VPC,
        # cannot resolve the nodes' private host names: the tools are given addresses.
        masters = wait("both masters' ads", lambda: len(m := _addresses("-master", name)) == 2
                       and m, timeout_s=90)
        first = masters[0]

        # condor_config_val -rset (CONFIG), then condor_reconfig (ADMINISTRATOR): the node's
        # master now has the value.
        _ok(_on_submit_host("condor_config_val", "-addr", first, "-rset",
                            "ANNEX_E2E_RSET = 42"))
        _ok(_on_submit_host("condor_reconfig", "-addr", first))
        value = wait("the runtime setting on the node", lambda: _on_submit_host(
            "condor_config_val", "-addr", first, "ANNEX_E2E_RSET").stdout.strip()
            == "42", timeout_s=30)
        assert value

        # condor_drain (ADMINISTRATOR) on one node: its slots go to Drained.
        startd = _addresses("-startd", name)[0]
        machine = next(s.machine for s in annex_slots(ctx.collector, name)
                       if s.machine and f"alias={s.machine}&" in startd)
        _ok(_on_submit_host("condor_drain", "-graceful", startd))
        wait("the drained node's slots", lambda: {
            s.state for s in annex_slots(ctx.collector, name) if s.machine == machine}
            == {"Drained"}, timeout_s=90)

        # condor_off -annex NAME: every node leaves the pool, and its instance ends.
        t0 = time.monotonic()
        out = _ok(_on_submit_host("condor_off", "-annex", name))
        assert "AUTHENTICATE" not in out
        wait("the annex's slots to leave the pool",
             lambda: annex_slots(ctx.collector, name) == [], timeout_s=120)
        wait("the annex's instances to end", lambda: not alive(ec2, name), timeout_s=240)
        print(f"\nE2E: condor_off -annex: instances ended after {time.monotonic() - t0:.1f} s")
    finally:
        try:
            svc.end_annex(ctx, name, grace_s=0)
        except Exception:   # noqa: BLE001 - already ended (its lease remains until off)
            pass
    # The annex ended: its administrator token is gone from the owner's token directory.
    assert not annex_admin.token_path(name, ctx.knobs).exists()
    assert len(created.instance_ids) == 2 and not alive(ec2, name)
