"""The seed node's knobs (issue 13, item 2): recorded by setup beside the others, read by
``config.seed_outputs``, never required of an older setup."""

from __future__ import annotations

import pytest

from condor_annex import config
from condor_annex.errors import NotSetUpError
from condor_annex.model import SetupOutputs

OLD = dict(region="us-west-2", stack_name="condor-annex", bucket="condor-annex-b",
           lease_function_arn="arn:aws:lambda:us-west-2:1:function:condor-annex-lease",
           scheduler_role_arn="arn:aws:iam::1:role/s", instance_profile_arn="arn:aws:iam::1:"
           "instance-profile/p", security_group_id="sg-1", key_name="k",
           spot_fleet_role_arn="arn:aws:iam::1:role/f")
SEED = dict(seed_instance_profile_arn="arn:aws:iam::1:instance-profile/condor-annex/seed",
            seed_role_arn="arn:aws:iam::1:role/condor-annex/seed",
            seed_security_group_id="sg-2")


def test_an_older_setup_records_no_seed_knob_and_still_reads_back():
    knobs = config.setup_knobs(SetupOutputs(**OLD))
    assert not [k for k in knobs if "ANNEX_SEED_" in k]
    assert config.setup_outputs(knobs, "us-west-2") == SetupOutputs(**OLD)
    with pytest.raises(NotSetUpError) as e:
        config.seed_outputs(knobs, "us-west-2")
    assert str(e.value) == ("seed: ANNEX_SEED_INSTANCE_PROFILE_ARN is not set for region "
                            "us-west-2; run 'condor_annex setup' again to add the seed role")


def test_the_seed_knobs_are_region_prefixed_and_read_back():
    knobs = config.setup_knobs(SetupOutputs(**OLD, **SEED))
    assert {k: v for k, v in knobs.items() if "ANNEX_SEED_" in k} == {
        "us_west_2.ANNEX_SEED_INSTANCE_PROFILE_ARN": SEED["seed_instance_profile_arn"],
        "us_west_2.ANNEX_SEED_ROLE_ARN": SEED["seed_role_arn"],
        "us_west_2.ANNEX_SEED_SECURITY_GROUP_IDS": "sg-2"}
    assert config.setup_outputs(knobs, "us-west-2") == SetupOutputs(**OLD, **SEED)
    seed = config.seed_outputs(knobs, "us-west-2")
    assert (seed.region, seed.instance_profile_arn, seed.role_arn, seed.security_group_ids) == (
        "us-west-2", SEED["seed_instance_profile_arn"], SEED["seed_role_arn"], ("sg-2",))
    # another region's setup is not this one's
    with pytest.raises(NotSetUpError, match="region eu-west-1; run 'condor_annex setup' again"):
        config.seed_outputs(knobs, "eu-west-1")


@pytest.mark.parametrize("groups, expected", [("sg-2, sg-3", ("sg-2", "sg-3")),
                                              ("sg-2 sg-3", ("sg-2", "sg-3"))])
def test_several_seed_security_groups(groups, expected):
    knobs = config.setup_knobs(SetupOutputs(**OLD, **SEED))
    knobs["us_west_2.ANNEX_SEED_SECURITY_GROUP_IDS"] = groups
    assert config.seed_outputs(knobs, "us-west-2").security_group_ids == expected


def test_an_empty_seed_knob_names_the_fix():
    knobs = config.setup_knobs(SetupOutputs(**OLD, **SEED))
    knobs["us_west_2.ANNEX_SEED_SECURITY_GROUP_IDS"] = " , "
    with pytest.raises(NotSetUpError, match="ANNEX_SEED_SECURITY_GROUP_IDS is not set .* "
                       "run 'condor_annex setup' again to add the seed role"):
        config.seed_outputs(knobs, "us-west-2")
