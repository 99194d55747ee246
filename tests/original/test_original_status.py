"""Our classic ``-status`` and ``status`` against HTCondor's own ``condor_annex`` 23.9.6 on the
same endpoint, the same annexes and the same collector (fixtures: conftest.py): stdout, stderr
and exit status must be identical, apart from times (condor_status's ``ActvtyTime``, which
moves between the two runs).  Instance ids are the same on both sides (one endpoint).

Not compared: a bare ``condor_annex status`` (no option before the word), which is our modern
``status`` verb; the classic form needs an option first, e.g. ``-annex-name N status``.
"""

from __future__ import annotations

import re

import pytest

from benchmarks import original

_TIME = re.compile(r"\b\d+\+\d\d:\d\d:\d\d\b")


def _both(side, *args: str) -> tuple[tuple[str, str, int], tuple[str, str, int]]:
    theirs = side.orig.completed(*args)
    ours = original.ours_completed(*args, path_first=side.tools)
    return tuple((_TIME.sub("<time>", p.stdout), _TIME.sub("<time>", p.stderr), p.returncode)
                 for p in (theirs, ours))


def test_status_of_an_account_without_annexes_is_the_originals(side_by_side):
    assert side_by_side.empty["ours"] == side_by_side.empty["original"] == \
        ("Found no instances in any annex.\n", "", 0)


CASES = {
    "all annexes": ("-status",),
    "one annex": ("-status", "-annex-name", "alpha"),
    "a name in another case": ("-status", "-annex-name", "BETA"),
    "an annex of terminated instances": ("-status", "-annex-name", "gamma"),
    "an unknown annex": ("-status", "-annex-name", "nosuch"),
    "classads of all": ("-status", "-classads"),
    "classads of one": ("-status", "-annex-name", "alpha", "-classads"),
    "condor_status of one": ("-annex-name", "alpha", "status"),
    "condor_status with its own arguments": ("-annex-name", "beta", "status", "-af", "Name",
                                             "State"),
    "condor_status of an unknown annex": ("-annex-name", "nosuch", "status"),
}


@pytest.mark.parametrize("args", list(CASES.values()), ids=list(CASES))
def test_output_is_the_originals(side_by_side, args):
    theirs, ours = _both(side_by_side, *args)
    assert ours == theirs


def test_the_tables_have_content(side_by_side):
    # What the comparisons above compare: each state, the wrapped id list, the slot rows and
    # the "not in Annex" rows are there (a comparison of two empty outputs proves nothing).
    alpha, beta = side_by_side.ids["alpha"], side_by_side.ids["beta"]
    out = original.ours_completed("-status").stdout
    assert out.splitlines()[:4] == [
        "NAME                        TOTAL in-pool running stopped terminated",
        "alpha                           6       1       4       0          1",
        "beta                            2       1       0       1          0",
        "gamma                           1       0       0       0          1"]
    out = original.ours_completed("-status", "-annex-name", "alpha").stdout
    assert f"running {' '.join(alpha[2:5])}\n        {alpha[5]}\n" in out
    out = original.ours_completed("-annex-name", "alpha", "status",
                                  path_first=side_by_side.tools).stdout
    assert out.count("@ip-") == 2 and "Claimed" in out
    assert re.search(rf"^{alpha[0]} alpha +terminated Client\.UserInitiatedShutdown", out, re.M)
    assert beta[0] not in out and alpha[1] not in out.split("Instance ID")[-1]


def test_a_slot_the_cloud_does_not_list_is_counted_as_the_original_counts_it(side_by_side,
                                                                              slot_ad):
    # The original adds every slot of the annex to its count, even one whose instance the
    # cloud does not list (here a made-up id): TOTAL includes it, as in-pool.
    phantom = "i-0000000000000beef"
    side_by_side.orig.advertise("UPDATE_STARTD_AD", slot_ad(phantom, "beta", 7))
    try:
        for args in (("-status", "-annex-name", "beta"),
                     ("-status", "-annex-name", "beta", "-classads"), ("-status",)):
            theirs, ours = _both(side_by_side, *args)
            assert ours == theirs, args
        out = original.ours_completed("-status", "-annex-name", "beta").stdout
        assert "in-pool            2\n" in out and "TOTAL              3\n" in out
    finally:
        side_by_side.orig.advertise(
            "INVALIDATE_STARTD_ADS",
            f'MyType = "Query"\nTargetType = "Machine"\nRequirements = EC2InstanceID == '
            f'"{phantom}"\n')
