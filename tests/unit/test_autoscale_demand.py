"""Demand for autoscaled annexes (issue 13): idle jobs are matched against a template slot of
the annex's type with the ClassAd library, as the negotiator would — real ``classad2`` ads,
requirements as condor_submit writes them."""

from __future__ import annotations

import classad2
import pytest

from condor_annex.errors import PoolError
from condor_annex.pool import demand
from condor_annex.pool.demand import count_matching, slot_template, targets_annex

#: m5.large: 2 vCPUs, 8 GiB.
SLOT = slot_template("a1", cpus=2, memory_mib=8192, arch="x86_64", owners=("alice",))
#: What condor_submit writes into a job's Requirements (arch, OS, disk, memory, file transfer).
SUBMIT_REQS = ('(TARGET.Arch == "X86_64") && (TARGET.OpSys == "LINUX") && '
               "(TARGET.Disk >= RequestDisk) && (TARGET.Memory >= RequestMemory) && "
               "(TARGET.HasFileTransfer)")


def job(requirements: str, *, status=1, owner="alice", memory=128, cpus=1, **extra):
    ad = classad2.ClassAd({"MyType": "Job", "JobStatus": status, "Owner": owner,
                           "RequestMemory": memory, "RequestCpus": cpus, "RequestDisk": 1024,
                           **extra})
    ad["Requirements"] = classad2.ExprTree(requirements)
    return ad


def test_a_job_requiring_the_annex_by_name_counts():
    j = job(f'{SUBMIT_REQS} && (TARGET.AnnexName == "a1")')
    assert count_matching([j], {"a1": SLOT}) == {"a1": 1}


def test_a_job_of_condor_submit_annex_name_counts():
    # condor_submit -annex-name: +TargetAnnexName and a clause comparing it.
    j = job(f"{SUBMIT_REQS} && (TARGET.AnnexName =?= MY.TargetAnnexName)",
            TargetAnnexName="a1")
    assert count_matching([j], {"a1": SLOT}) == {"a1": 1}


def test_a_job_needing_more_memory_than_a_slot_of_the_type_does_not_count():
    j = job(f'{SUBMIT_REQS} && (TARGET.AnnexName == "a1")', memory=64 * 1024)
    assert count_matching([j], {"a1": SLOT}) == {"a1": 0}


def test_a_job_needing_more_cores_than_the_type_does_not_count():
    j = job(f'{SUBMIT_REQS} && (TARGET.Cpus >= RequestCpus) && (TARGET.AnnexName == "a1")',
            cpus=4)
    assert count_matching([j], {"a1": SLOT}) == {"a1": 0}


def test_a_job_for_another_annex_or_no_annex_does_not_count():
    other = job(f'{SUBMIT_REQS} && (TARGET.AnnexName == "b2")')
    anywhere = job(SUBMIT_REQS)
    assert count_matching([other, anywhere], {"a1": SLOT}) == {"a1": 0}
    assert not targets_annex(anywhere, "a1")


def test_a_job_whose_owner_the_annex_does_not_accept_does_not_count():
    # The template's Requirements are the node's START (its --owner list).
    j = job(f'{SUBMIT_REQS} && (TARGET.AnnexName == "a1")', owner="mallory")
    assert count_matching([j], {"a1": SLOT}) == {"a1": 0}


def test_running_and_held_jobs_are_not_demand():
    reqs = f'{SUBMIT_REQS} && (TARGET.AnnexName == "a1")'
    assert count_matching([job(reqs, status=2), job(reqs, status=5)], {"a1": SLOT}) == {"a1": 0}


def test_an_arm_type_does_not_run_x86_jobs():
    arm = slot_template("a1", cpus=2, memory_mib=8192, arch="arm64")
    j = job(f'{SUBMIT_REQS} && (TARGET.AnnexName == "a1")')
    assert count_matching([j], {"a1": arm}) == {"a1": 0}


def test_a_requirement_string_mentioning_the_name_is_not_how_it_is_matched():
    # A job whose requirements merely contain the text "a1" in a string is not targeting it.
    j = job(f'{SUBMIT_REQS} && (TARGET.Machine != "a1")')
    assert count_matching([j], {"a1": SLOT}) == {"a1": 0}


class _Collector:
    def __init__(self, schedds):
        self.schedds = schedds

    def locateAll(self, _kind):
        return self.schedds


class _Schedd:
    jobs: dict = {}

    def __init__(self, ad):
        self.name = ad["Name"]

    def query(self, constraint=""):
        if self.jobs[self.name] is None:
            raise OSError("Failed to fetch ads from schedd")
        return self.jobs[self.name]


def test_a_schedd_that_does_not_answer_makes_the_view_partial(monkeypatch):
    import htcondor2
    reqs = f'{SUBMIT_REQS} && (TARGET.AnnexName == "a1")'
    _Schedd.jobs = {"s1": [job(reqs)], "s2": None}
    monkeypatch.setattr(htcondor2, "Collector",
                        lambda _c: _Collector([{"Name": "s1"}, {"Name": "s2"}]))
    monkeypatch.setattr(htcondor2, "Schedd", _Schedd)
    seen = demand.annex_demand("cm:9618", {"a1": SLOT})
    assert seen.partial and seen.unanswered == ("s2",) and seen.counts == {"a1": 1}


def test_a_collector_that_does_not_answer_is_a_pool_error():
    # Nothing listens on this port: the bindings fail, the caller holds.
    with pytest.raises(PoolError, match="schedd list not read"):
        demand.annex_demand("127.0.0.1:1", {"a1": SLOT})


def test_owner_start_is_evaluated_with_htcondors_functions_in_a_fresh_interpreter():
    # Regression: stringListMember (the START of an annex with owners) is registered by the
    # htcondor2 module; counting in a process that had imported only classad2 found every job
    # of an owner-restricted annex unmatched (ERROR).
    import subprocess
    import sys
    code = ("import classad2\n"
            "from condor_annex.pool.demand import count_matching, slot_template\n"
            "j = classad2.ClassAd({'MyType': 'Job', 'JobStatus': 1, 'Owner': 'alice'})\n"
            "j['Requirements'] = classad2.ExprTree('TARGET.AnnexName == \"a1\"')\n"
            "t = slot_template('a1', cpus=2, memory_mib=8192, owners=('alice', 'bob'))\n"
            "print(count_matching([j], {'a1': t})['a1'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "1"


def test_the_schedd_is_asked_only_for_idle_jobs_that_may_target_an_annex():
    """The schedd-side constraint keeps every job :func:`targets_annex` counts and drops the
    pool's other idle jobs (and running ones)."""
    import classad2

    from condor_annex.pool.demand import IDLE_ANNEX_JOBS, targets_annex
    constraint = classad2.ExprTree(IDLE_ANNEX_JOBS)
    kept = ['[JobStatus = 1; Requirements = (AnnexName =?= "auto") && TARGET.Memory > 1]',
            '[JobStatus = 1; TargetAnnexName = "auto"; Requirements = true]']
    dropped = ['[JobStatus = 1; Requirements = TARGET.Memory > 1]',
               '[JobStatus = 2; Requirements = (AnnexName =?= "auto")]']
    for text in kept:
        ad = classad2.ClassAd(text)
        assert constraint.eval(ad) is True and targets_annex(ad, "auto"), text
    for text in dropped:
        assert constraint.eval(classad2.ClassAd(text)) is False, text
