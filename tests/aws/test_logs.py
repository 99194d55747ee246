"""``condor_annex logs NAME [INSTANCE_ID] [--json]``: each instance's console output under its
id, newest launch last; unknown annex or instance: one line, exit 2.  moto answers
GetConsoleOutput with canned text (the local cloud answers with the instance's real console):
these tests check the plumbing — which instances, in which order, decoded, the ``Latest``
fallback."""

from __future__ import annotations

import io
import json

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.providers.aws.console import decode_output


@pytest.fixture
def cloud(account, outputs, monkeypatch, tmp_path):
    config.write_block("setup", config.setup_knobs(outputs))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return account


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _moto_console_text(ec2, iid) -> str:
    """moto's canned console text (botocore has base64-decoded it)."""
    return ec2.get_console_output(InstanceId=iid)["Output"]


def test_logs_shows_every_instance_under_its_id_oldest_first(cloud, provider, launch_request,
                                                               ec2, capsys):
    first = provider.launch(launch_request("web", count=1)).instance_ids
    second = provider.launch(launch_request("web", count=2)).instance_ids
    provider.launch(launch_request("other", count=1))
    code, out, err = run(["logs", "web"], capsys)
    assert code == 0, err
    # Each of the annex's instances heads its own section, in launch order; no other annex's.
    positions = [out.index(iid) for iid in first + second]
    assert positions[0] < min(positions[1:])
    assert out.count(" (running") == 3
    canned = _moto_console_text(ec2, first[0]).strip().splitlines()[0]
    assert out.count(canned) == 3


def test_logs_one_instance_and_json(cloud, provider, launch_request, ec2, capsys):
    ids = provider.launch(launch_request("web", count=2)).instance_ids
    code, out, err = run(["logs", "web", ids[1], "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["annex"] == "web"
    assert [i["instance_id"] for i in data["instances"]] == [ids[1]]
    entry = data["instances"][0]
    assert entry["output"] == _moto_console_text(ec2, ids[1])
    assert entry["state"] == "running" and entry["captured_at"] and entry["latest"] is True


def test_logs_falls_back_without_latest_when_refused(cloud, provider, launch_request, gateway,
                                                     capsys):
    """EC2 gives the latest output only on Nitro instances; elsewhere ``Latest=True`` is refused
    and the buffered output is asked for instead."""
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    ids = provider.launch(launch_request("web", count=1)).instance_ids
    gateway.fail("ec2.GetConsoleOutput", "UnsupportedOperation",
                 "This instance type does not support retrieving the latest console logs.")
    code, out, err = run(["logs", "web", "--json"], capsys)
    assert code == 0, err
    entry = json.loads(out)["instances"][0]
    assert entry["instance_id"] == ids[0] and entry["latest"] is False
    assert "Linux version" in entry["output"] or entry["output"]
    assert gateway.outcomes("ec2.GetConsoleOutput") == ["fail", "forwarded"]


def test_logs_other_errors_are_not_retried(cloud, provider, launch_request, gateway, capsys):
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    provider.launch(launch_request("web", count=1))
    gateway.fail("ec2.GetConsoleOutput", "UnauthorizedOperation", status=403)
    code, out, err = run(["logs", "web"], capsys)
    assert code == 1
    assert "UnauthorizedOperation" in err and len(err.strip().splitlines()) == 1
    assert gateway.outcomes("ec2.GetConsoleOutput") == ["fail"]


def test_unknown_annex_one_line_exit_2_with_closest_name(cloud, provider, launch_request,
                                                         capsys):
    provider.launch(launch_request("webfarm", count=1))
    code, out, err = run(["logs", "webfar"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "annex 'webfar' does not exist" in err and "webfarm" in err


def test_instance_of_another_annex_one_line_exit_2(cloud, provider, launch_request, capsys):
    mine = provider.launch(launch_request("web", count=1)).instance_ids
    theirs = provider.launch(launch_request("other", count=1)).instance_ids
    code, out, err = run(["logs", "web", theirs[0]], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"INSTANCE_ID: {theirs[0]} is not an instance of annex 'web'" in err
    assert mine[0] in err


@pytest.mark.parametrize("bad", ["i-xyz", "web", "I-0123456789ABCDEF0", "i-0123"])
def test_malformed_instance_id_refused_before_any_call(cloud, bad, gateway, capsys):
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    code, out, err = run(["logs", "web", bad], capsys)
    assert code == 2 and err.startswith("condor_annex: INSTANCE_ID:")
    assert gateway.count() == 0


def test_annex_with_a_lease_but_no_instance_yet(cloud, provider, capsys):
    from datetime import timedelta

    from condor_annex.model import utcnow
    provider.create_lease("pending", utcnow() + timedelta(hours=1))
    code, out, err = run(["logs", "pending"], capsys)
    assert code == 0, err
    assert "Annex pending has launched no instance yet." in out


def test_console_text_is_decoded_once(cloud, provider, launch_request, capsys):
    """EC2 (and moto) send the console base64-encoded; the user sees the text itself, not
    base64 and not garbled by a second decoding."""
    provider.launch(launch_request("web", count=1))
    assert decode_output({}) == ""
    code, out, err = run(["logs", "web", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["instances"][0]["output"].startswith("Linux version 2.6.16-xenU")


def _put_agent_log(aws, outputs, annex, iid, body: bytes) -> None:
    """Put an agent log where a failed boot's agent puts it."""
    from condor_annex.providers.aws.session import make_client
    make_client(aws, "s3").put_object(Bucket=outputs.bucket,
                                      Key=f"logs/{annex}/{iid}/agent.log", Body=body)


def test_logs_shows_the_uploaded_agent_log_below_the_console(cloud, outputs, provider,
                                                             launch_request, capsys):
    failed, good = provider.launch(launch_request("web", count=2)).instance_ids
    text = ("2026-01-02T03:04:05.678Z condor-annex-agent ERROR bootstrap failed after 3.0s, "
            "powering off: bundle s3://b/config-web.tar.gz: NoSuchKey\n")
    # Escape sequences the instance wrote never reach the user's terminal.
    _put_agent_log(cloud, outputs, "web", failed, text.encode() + b"\x1b[2Jcleared\tscreen\n")
    # Another annex's log of the same instance id is not this annex's.
    _put_agent_log(cloud, outputs, "other", good, b"not web's\n")

    code, out, err = run(["logs", "web"], capsys)
    assert code == 0, err
    heading = f"{failed}: agent log (uploaded when its boot failed)"
    assert out.count("agent log (uploaded") == 1 and heading in out
    # Below the failed instance's console, above the next instance's section.
    assert out.index(failed) < out.index(heading) < out.index(good)
    assert text.strip() in out and "[2Jcleared" in out and "\x1b" not in out
    assert "not web's" not in out

    code, out, err = run(["logs", "web", "--json"], capsys)
    assert code == 0, err
    logs = {i["instance_id"]: i["agent_log"] for i in json.loads(out)["instances"]}
    assert logs == {failed: text + "[2Jcleared\tscreen\n", good: None}


def test_logs_shows_only_the_end_of_a_huge_agent_log(cloud, outputs, provider, launch_request,
                                                     capsys):
    """The object is written by the instance: however large, only its last 256 KiB is read."""
    from condor_annex.providers.aws.agent_log import MAX_READ_BYTES
    [iid] = provider.launch(launch_request("web", count=1)).instance_ids
    _put_agent_log(cloud, outputs, "web", iid, b"a" * (2 * MAX_READ_BYTES) + b"THE END\n")

    code, out, err = run(["logs", "web", iid, "--json"], capsys)
    assert code == 0, err
    agent_log = json.loads(out)["instances"][0]["agent_log"]
    assert len(agent_log) == MAX_READ_BYTES and agent_log.endswith("aaaaTHE END\n")


def test_provider_agent_log_is_none_without_an_upload(provider, outputs, launch_request):
    [iid] = provider.launch(launch_request("web", count=1)).instance_ids
    assert provider.agent_log("web", iid) is None
    text, when, latest = provider.console_output(iid)
    assert text.startswith("Linux version") and when is not None and latest is True
