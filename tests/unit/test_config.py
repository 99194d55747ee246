"""The user's knobs: managed blocks, region prefixes, and HTCondor's configuration system."""

from __future__ import annotations

import json
import subprocess
import sys

from condor_annex import config


def test_write_block_twice_keeps_one_block_and_other_lines(user_config):
    user_config.parent.mkdir(parents=True)
    user_config.write_text("MY_OWN = 1\n")
    config.write_block("setup", {"ANNEX_DEFAULT_S3_BUCKET": "b1"})
    config.write_block("setup", {"ANNEX_DEFAULT_S3_BUCKET": "b2"})

    text = user_config.read_text()
    assert text.count("# BEGIN condor-annex setup") == 1
    assert config.read_knobs(user_config) == {"MY_OWN": "1", "ANNEX_DEFAULT_S3_BUCKET": "b2"}
    assert user_config.stat().st_mode & 0o777 == 0o600


def test_region_prefixed_knob_wins():
    knobs = {"ANNEX_DEFAULT_S3_BUCKET": "plain", "us_east_1.ANNEX_DEFAULT_S3_BUCKET": "east"}
    assert config.knob(knobs, "ANNEX_DEFAULT_S3_BUCKET", "us-east-1") == "east"
    assert config.knob(knobs, "ANNEX_DEFAULT_S3_BUCKET", "eu-west-1") == "plain"


def test_knobs_come_from_htcondor_config_and_the_user_file_overrides(tmp_path, user_config):
    site = tmp_path / "condor_config"
    site.write_text("ANNEX_DEFAULT_AWS_REGION = eu-west-1\n"
                    "eu_west_1.ANNEX_DEFAULT_ODI_KEY_NAME = site-key\n"
                    "COLLECTOR_HOST = cm.example.org:9618\n"
                    "NOT_OURS = 1\n")
    user_config.parent.mkdir(parents=True)
    user_config.write_text("ANNEX_DEFAULT_AWS_REGION = us-west-2\n")
    code = ("import json; from condor_annex import config; "
            "print(json.dumps(config.read_knobs()))")
    env = {"CONDOR_CONFIG": str(site), "CONDOR_ANNEX_USER_CONFIG": str(user_config),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    knobs = json.loads(out)

    assert knobs["ANNEX_DEFAULT_AWS_REGION"] == "us-west-2"          # user file wins
    assert config.knob(knobs, "ANNEX_DEFAULT_ODI_KEY_NAME", "eu-west-1") == "site-key"
    assert knobs["COLLECTOR_HOST"] == "cm.example.org:9618"
    assert "NOT_OURS" not in knobs
