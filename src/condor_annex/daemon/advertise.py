"""annexd's ad in the collector: a generic ad (``MyType = "Generic"``, sent with
``UPDATE_AD_GENERIC``, which needs ADVERTISE_MASTER-level authorization: the same as a
daemon started by the pool's master), so ``condor_status -any`` shows the daemon, its annexes,
instances, last pass and errors.  See the condor_advertise manual page
(htcondor.readthedocs.io/en/latest/man-pages/condor_advertise.html) for the command, and the
collector's "ClassAd types" for generic ads.
"""

from __future__ import annotations

import logging
from typing import Any

from condor_annex.errors import PoolError

log = logging.getLogger(__name__)

#: ``MyType`` of annexd's ad; ``condor_status -any -constraint 'MyType == "AnnexDaemon"'``
#: finds it (a generic ad keeps the MyType it is given).
AD_TYPE = "AnnexDaemon"


def daemon_ad(name: str, report: dict[str, Any]) -> Any:
    """The ClassAd for ``report`` (the daemon's report as kept in the store).

    Attributes set: ``MyType``, ``Name``, ``AnnexdPid``, ``AnnexdPasses``, ``AnnexdErrors``,
    ``AnnexdThrottledCalls``, ``AnnexdAnnexes``, ``AnnexdInstances``, ``AnnexdLastPass``
    (Unix seconds), ``AnnexdLastPassSeconds``, ``AnnexdLastError`` and ``AnnexdStateFile``.
    """
    import classad2

    last = report.get("last_pass") or {}
    ad = classad2.ClassAd()
    ad["MyType"] = AD_TYPE
    ad["Name"] = name
    ad["AnnexdPid"] = int(report.get("pid", 0))
    ad["AnnexdPasses"] = int(report.get("passes", 0))
    ad["AnnexdErrors"] = int(report.get("errors", 0))
    ad["AnnexdThrottledCalls"] = int(report.get("throttled_calls", 0))
    ad["AnnexdAnnexes"] = int(last.get("annexes", 0))
    ad["AnnexdInstances"] = int(last.get("instances", 0))
    ad["AnnexdLastPass"] = int(report.get("last_pass_unix", 0))
    ad["AnnexdLastPassSeconds"] = float(last.get("seconds", 0.0))
    ad["AnnexdLastError"] = str(report.get("last_error", ""))
    ad["AnnexdStateFile"] = str(report.get("state_file", ""))
    return ad


def advertise(collector: str, ad: Any) -> None:
    """Send the ad to the collector (UPDATE_AD_GENERIC over TCP).

    Raises:
        PoolError: the collector refused it or could not be reached.
    """
    import htcondor2

    try:
        htcondor2.Collector(collector).advertise([ad], "UPDATE_AD_GENERIC")
    except Exception as e:   # the bindings raise HTCondorException/IOError subclasses
        raise PoolError(f"collector {collector}: advertising annexd failed: {e}") from e


def invalidate(collector: str, name: str) -> None:
    """Remove the ad at a clean exit (INVALIDATE_ADS_GENERIC); best effort."""
    import classad2
    import htcondor2

    ad = classad2.ClassAd()
    ad["MyType"] = "Query"
    ad["TargetType"] = AD_TYPE
    ad["Requirements"] = classad2.ExprTree(f'Name == "{name}"')
    try:
        htcondor2.Collector(collector).advertise([ad], "INVALIDATE_ADS_GENERIC")
    except Exception as e:   # noqa: BLE001 - exiting anyway
        log.info("annexd: could not withdraw its ad: %s", e)
