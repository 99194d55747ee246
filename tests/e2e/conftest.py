"""End-to-end fixtures: the real local cloud (moto + namespaces + a real HTCondor pool).

Needs root (network namespaces, chroot) and Debian's packages (the chroot is built once and
cached under /var/cache/condor-annex).  The tests run against their own user config, so they
never touch the invoking user's ~/.condor.
"""

from __future__ import annotations

import os
import time

import pytest


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory):
    """Bring the local cloud up for the session (and setup), then down; yields a Context."""
    if os.geteuid() != 0:
        pytest.skip("the local cloud needs root (network namespaces)")
    cfg = tmp_path_factory.mktemp("e2e-home") / "user_config"
    old = os.environ.get("CONDOR_ANNEX_USER_CONFIG")
    os.environ["CONDOR_ANNEX_USER_CONFIG"] = str(cfg)
    # The local cloud's AWS delays (Lambda retries, the lease sweep's 5 minutes) run 10x
    # faster in the suite; lease ends, schedules' minutes and the agents' margin stay wall time.
    os.environ.setdefault("CONDOR_ANNEX_TIME_SCALE", "10")
    from condor_annex.cli import local
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context

    from condor_annex.providers.local.cloud import exclusive_session

    class Args:
        json = False
    with exclusive_session():
        if local.running_state() is not None:   # a leftover from an interrupted run
            local.cmd_down(Args())
        t0 = time.monotonic()
        local.cmd_up(Args())
        up_s = time.monotonic() - t0
        try:
            svc.setup_cloud(Context.load())
            ctx = Context.load()
            ctx.up_seconds = up_s
            yield ctx
        finally:
            local.cmd_down(Args())
    if old is None:
        os.environ.pop("CONDOR_ANNEX_USER_CONFIG", None)
    else:
        os.environ["CONDOR_ANNEX_USER_CONFIG"] = old
