"""Demand for demand-driven annexes (issue 13): idle jobs that could run on an annex.

A job counts for annex A when it is idle (``JobStatus == 1``), it targets A — its
``TargetAnnexName`` is A (``condor_submit -annex-name``), or its ``Requirements`` refer to
``AnnexName`` — and it matches a template slot of A's instance type: the job's
``Requirements`` evaluated with the template as ``TARGET`` and the template's own
``Requirements`` (the annex's START policy, its owners) with the job as ``TARGET``, by the
ClassAd library (``classad2.ClassAd.symmetricMatch``; HTCondor manual, *ClassAd Mechanism*,
"matchmaking"), never by string matching.  A job asking for more memory or cores than one node
of the type has is not demand for that annex: no node it could launch would run it.

The template (:func:`slot_template`) holds what an annex node's slot advertises: HTCondor's own
``Arch``, ``OpSys``, ``Cpus``, ``Memory``, ``Disk``, ``HasFileTransfer``, and what the bundle's
``config.d/50-annex.config`` adds (``AnnexName``, ``IsAnnex``, ``START``;
:mod:`condor_annex.pool.configs`).

Every schedd the collector knows is asked (one query each, idle jobs only).  A schedd that does
not answer makes the view partial (:attr:`DemandView.unanswered`): the planner then holds each
autoscaled annex's size, since the jobs it did not see may be exactly the annex's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from condor_annex.errors import PoolError

log = logging.getLogger(__name__)

#: HTCondor's ``Arch`` for each EC2 architecture (DescribeInstanceTypes
#: ``ProcessorInfo.SupportedArchitectures``).
ARCH = {"x86_64": "X86_64", "arm64": "aarch64", "i386": "INTEL"}
#: Share of an instance type's memory a slot advertises: the kernel keeps some of it, so
#: HTCondor's ``Memory`` (from /proc/meminfo) is below the type's nominal size.
MEMORY_SHARE = 0.95
#: ``Disk`` (KiB) the template advertises: the root volume of the distribution's images
#: (8 GiB) less the system's share.
TEMPLATE_DISK_KIB = 6 * 1024 * 1024


def start_expression(owners: Iterable[str]) -> str:
    """The START expression of an annex node (as :func:`condor_annex.pool.configs.
    annex_config` writes it): only the owners' jobs, or any job."""
    names = ",".join(owners)
    if not names:
        return "TRUE"
    return 'stringListMember(TARGET.Owner, "' + names.replace('"', '') + '")'


def slot_template(annex_name: str, *, cpus: int, memory_mib: int, arch: str = "x86_64",
                  owners: Iterable[str] = ()) -> dict[str, Any]:
    """The attributes of one slot of an annex node of an instance type (JSON-ready, kept in
    the store at create).

    Args:
        annex_name: the annex (``AnnexName``).
        cpus: the type's vCPUs (``Cpus``: the whole node, as one partitionable slot).
        memory_mib: the type's memory, MiB (``Memory`` is :data:`MEMORY_SHARE` of it).
        arch: the EC2 architecture (x86_64, arm64).
        owners: the users whose jobs may start (START); empty: anyone.
    """
    memory = int(memory_mib * MEMORY_SHARE)
    return {"MyType": "Machine", "AnnexName": annex_name, "IsAnnex": True,
            "Arch": ARCH.get(arch, arch), "OpSys": "LINUX", "Cpus": int(cpus),
            "TotalCpus": int(cpus), "Memory": memory, "TotalMemory": memory,
            "Disk": TEMPLATE_DISK_KIB, "HasFileTransfer": True, "State": "Unclaimed",
            "Activity": "Idle", "SlotType": "Partitionable",
            "Start": start_expression(owners)}


def template_ad(template: Mapping[str, Any]) -> Any:
    """The template as a ``classad2.ClassAd`` whose ``Requirements`` is its START."""
    import classad2
    # HTCondor's own ClassAd functions (stringListMember, the START of an annex with owners)
    # are registered by the htcondor2 module; without it they evaluate to ERROR.
    import htcondor2  # noqa: F401
    ad = classad2.ClassAd({k: v for k, v in template.items() if k != "Start"})
    ad["Requirements"] = classad2.ExprTree(str(template.get("Start") or "TRUE"))
    return ad


def targets_annex(job: Any, annex_name: str) -> bool:
    """True when the job targets the annex: ``TargetAnnexName`` is its name, or the job's
    ``Requirements`` refer to ``AnnexName`` (which annex is then the match's business)."""
    if job.get("TargetAnnexName") == annex_name:
        return True
    requirements = job.lookup("Requirements") if "Requirements" in job else None
    if requirements is None:
        return False
    refs = job.externalRefs(requirements)
    return any(str(r).rsplit(".", 1)[-1].lower() == "annexname" for r in refs)


def count_matching(jobs: Iterable[Any], templates: Mapping[str, Mapping[str, Any]]
                   ) -> dict[str, int]:
    """Idle jobs per annex that target it and match its template (see the module docstring).

    Args:
        jobs: job ads (``classad2.ClassAd``), idle ones (others are skipped).
        templates: annex name -> :func:`slot_template`'s attributes.

    Returns:
        annex -> matching idle jobs (every annex of ``templates``, 0 when none).
    """
    ads = {name: template_ad(t) for name, t in templates.items()}
    counts = dict.fromkeys(templates, 0)
    for job in jobs:
        if job.get("JobStatus") != 1:
            continue
        for name, slot in ads.items():
            if targets_annex(job, name) and job.symmetricMatch(slot):
                counts[name] += 1
    return counts


@dataclass(frozen=True)
class DemandView:
    """What one pass saw of the queues.

    Attributes:
        counts: annex -> idle jobs that could run on it (see :func:`count_matching`).
        unanswered: the schedds (names) that did not answer; non-empty means partial.
        schedds: the schedds asked.
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    unanswered: tuple[str, ...] = ()
    schedds: int = 0

    @property
    def partial(self) -> bool:
        """True when a schedd did not answer (the counts may be too low)."""
        return bool(self.unanswered)


#: The schedd's side of the filter: idle jobs that may target an annex (a superset of
#: :func:`targets_annex`), so a pass does not fetch every idle job of a big pool every 10 s.
IDLE_ANNEX_JOBS = ('JobStatus == 1 && (TargetAnnexName isnt undefined || '
                   'regexp("annexname", unparse(Requirements), "i"))')


def annex_demand(collector: str, templates: Mapping[str, Mapping[str, Any]]) -> DemandView:
    """Count demand for each annex of ``templates`` in every schedd the collector knows.

    Args:
        collector: ``host:port`` of the pool's collector.
        templates: annex name -> slot template.

    Returns:
        :class:`DemandView` (partial when a schedd did not answer).

    Raises:
        PoolError: the collector did not answer (no schedd list: nothing can be counted).
    """
    import htcondor2

    try:
        schedds = htcondor2.Collector(collector).locateAll(htcondor2.DaemonType.Schedd)
    except Exception as e:  # the bindings raise HTCondorException/IOError subclasses
        raise PoolError(f"collector {collector}: schedd list not read: {e}") from e
    jobs: list[Any] = []
    unanswered: list[str] = []
    for ad in schedds:
        name = str(ad.get("Name", "?"))
        try:
            jobs += htcondor2.Schedd(ad).query(constraint=IDLE_ANNEX_JOBS)
        except Exception as e:  # noqa: BLE001 - any failure: this schedd did not answer
            log.info("schedd %s did not answer: %s", name, e)
            unanswered.append(name)
    return DemandView(count_matching(jobs, templates), tuple(unanswered), len(schedds))
