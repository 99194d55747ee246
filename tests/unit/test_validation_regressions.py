"""Regression tests for the bad input issue 8 found getting through, each as a user meets it:
the command line's exit status and its one line on stderr (no cloud is needed: every check runs
before the first cloud call; tests/unit/test_bad_inputs.py checks the cloud stays untouched)."""

from __future__ import annotations

import os
import time

import pytest

from condor_annex import config, validate
from condor_annex.cli import classic
from condor_annex.cli.main import build_parser, main
from condor_annex.errors import BadInputError, PoolError
from condor_annex.pool.tokens import mint_annex_token


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, (out, err)
    return err


def test_regression_owner_with_a_quote_and_a_newline_is_refused(user_config, capsys):
    # It wrote its own "START = TRUE" line into the node's configuration.
    assert main(["create", "a1", "--count", "1", "--owner", 'alice"\nSTART = TRUE\n#']) == 2
    assert one_line(capsys).startswith("condor_annex: --owner: 'alice\"\\nSTART")
    assert main(["-annex-name", "a1", "-count", "1", "-owner", 'a"\nSTART = TRUE']) == 2
    assert one_line(capsys).startswith("condor_annex: -owner: ")


def test_regression_reserved_tag_is_refused(user_config, capsys):
    # --tag htcondor:AnnexOff now told every node's agent to shut down at once.
    assert main(["create", "a1", "--count", "1", "--tag", "htcondor:AnnexOff", "now"]) == 2
    assert "--tag: 'htcondor:AnnexOff' is reserved" in one_line(capsys)
    assert main(["-annex-name", "a1", "-count", "1", "-tag", "HTCondor:AnnexOff", "now"]) == 2
    assert "-tag: 'HTCondor:AnnexOff' is reserved" in one_line(capsys)


def test_regression_bare_duration_is_refused_in_the_modern_syntax(user_config, capsys):
    # --duration 2 was a 2-second lease; -duration 2 (classic) is 2 hours.
    assert main(["create", "a1", "--count", "1", "--duration", "2"]) == 2
    assert "--duration: '2' has no unit; add a unit, e.g. --duration 2h" in one_line(capsys)
    assert main(["extend", "a1", "90"]) == 2
    assert "DURATION: '90' has no unit" in one_line(capsys)
    p = classic.make_plan(classic.parse_args(["-annex-name", "a1", "-count", "1",
                                              "-duration", "2"]))
    assert p.spec.lease_seconds == 7200


def test_regression_count_with_underscore_is_refused(user_config, capsys):
    # int("1_0") == 10: the annex got 10 instances.
    for argv in (["create", "a1", "--count", "1_0"], ["-annex-name", "a1", "-count", "1_0"]):
        assert main(argv) == 2
        assert "count: '1_0' is not a whole number" in one_line(capsys)


def test_regression_colon_endpoint_line_is_refused_naming_file_and_line(user_config, capsys):
    # "KEY: value" was skipped silently: the tool then talked to the real AWS endpoint.
    user_config.parent.mkdir(parents=True)
    user_config.write_text("# mine\nANNEX_DEFAULT_AWS_REGION = us-east-1\n"
                           "ANNEX_AWS_ENDPOINT_URL: http://127.0.0.1:5000\n")
    assert main(["status"]) == 2
    assert one_line(capsys).startswith(f"condor_annex: {user_config}:3: "
                                       "'ANNEX_AWS_ENDPOINT_URL: http://127.0.0.1:5000' is not "
                                       "NAME = value")


def test_htcondor_syntax_that_the_user_config_accepts(user_config):
    user_config.parent.mkdir(parents=True)
    user_config.write_text("A=1\n  b = two words  \nC = long \\\n# note\n   value\nD =\r\n")
    assert config.read_knobs(user_config) == {"A": "1", "B": "two words", "C": "long value",
                                              "D": ""}


def test_endpoint_that_is_not_a_url_is_refused(user_config, capsys):
    user_config.parent.mkdir(parents=True)
    user_config.write_text("ANNEX_AWS_ENDPOINT_URL = 127.0.0.1:5000\n")
    assert main(["status"]) == 2
    assert "ANNEX_AWS_ENDPOINT_URL: '127.0.0.1:5000' is not an http(s) URL" in one_line(capsys)


def test_trailing_newline_is_refused_everywhere():
    # "^...$" with re.match accepted "name\n"; fullmatch does not.
    checks = [(validate.annex_name, "a1\n"), (validate.instance_type, "m5.large\n"),
              (validate.image_id, "ami-12345678\n"), (validate.region, "us-east-1\n"),
              (validate.owner, "alice\n"), (validate.url, "http://x\n")]
    for check, value in checks:
        with pytest.raises(BadInputError):
            check(value, "--x")
    with pytest.raises(BadInputError):
        validate.count("5\n", "--count")


def test_lease_explicit_only_when_the_duration_is_given():
    from condor_annex.cli import annex
    spec = annex.spec_from_args(build_parser().parse_args(["create", "a", "--count", "1"]))
    assert (spec.lease_seconds, spec.lease_explicit) == (3000, False)
    spec = annex.spec_from_args(build_parser().parse_args(
        ["create", "a", "--count", "1", "--duration", "2h", "--idle", "90s"]))
    assert (spec.lease_seconds, spec.idle_seconds, spec.lease_explicit) == (7200, 90, True)
    plan = classic.make_plan(classic.parse_args(["-annex-name", "a", "-count", "1"]))
    assert not plan.spec.lease_explicit
    plan = classic.make_plan(classic.parse_args(["-annex-name", "a", "-count", "1",
                                                 "-duration", "1"]))
    assert plan.spec.lease_explicit


def test_no_arguments_prints_usage_on_stderr_and_exits_2(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: condor_annex")


def test_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(BadInputError, match="is not a regular file"):
        validate.read_file(str(fifo), "-aws-user-data-file")
    assert time.monotonic() - started < 1


def test_token_command_timeout_is_one_line(tmp_path):
    with pytest.raises(PoolError, match="did not mint the annex token within 0.5 s") as e:
        mint_annex_token("a1", 60, command="sh -c 'sleep 5'", timeout_s=0.5)
    assert "\n" not in str(e.value)


def test_user_data_limit_is_counted_on_base64():
    validate.user_data(b"x" * 12288, "-aws-user-data")          # 16384 in base64
    with pytest.raises(BadInputError, match="16388 in base64"):
        validate.user_data(b"x" * 12289, "-aws-user-data")
