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


# --- the copy the reconciler saved in the state store ------------------------------------------

NEVER_JOINED = ("never joined: no startd ad 600 s after launch; see condor_annex logs web "
                "{iid}")
SAVED_CONSOLE = ("[   12.5] cloud-init[812]: condor-annex: bootstrap done, starting "
                 "condor_master\n[  611.0] condor-annex: collector cm.pool.test:9618 "
                 "unreachable\n")
SAVED_AGENT_LOG = "2026-01-02T03:14:15.000Z condor-annex-agent ERROR cannot reach collector\n"


def _end_never_joined(annex: str, iid: str, *, launched, saved_at) -> None:
    """What the reconciler leaves in the store for a never-joined instance it ended: the
    instance (allocated at launch), its move to never-joined with the reason, the console
    and agent log saved, then terminating (reconciler/plan.py's rule 3, execute.py's
    _save_console and _terminate)."""
    from condor_annex.state.lifecycle import Lifecycle, transition
    from condor_annex.state.store import open_store
    with open_store() as store:
        store.add_instances(annex, [iid], state=Lifecycle.ALLOCATED.value, reason="launched",
                            now=launched)
        transition(store, iid, Lifecycle.NEVER_JOINED, NEVER_JOINED.format(iid=iid),
                   at=saved_at)
        store.save_log(iid, annex, SAVED_CONSOLE, SAVED_AGENT_LOG, at=saved_at)
        transition(store, iid, Lifecycle.TERMINATING, "never joined", at=saved_at)


def _ec2_gives_no_console(gateway, tmp_path, iids) -> None:
    """EC2 answers GetConsoleOutput without output for ``iids`` (as it does once an ended
    instance's console is gone): the local cloud's console rule, with no console file for
    them; every other instance's call goes on to moto."""
    from condor_annex.providers.local.console import ConsoleOutput
    gateway.strict_rules.append(ConsoleOutput(gateway, tmp_path / "no-consoles",
                                              lambda iid: iid in iids))
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})


def test_logs_shows_the_saved_console_of_an_ended_instance_ec2_gives_none(
        cloud, provider, launch_request, ec2, gateway, tmp_path, capsys):
    from datetime import datetime, timezone
    ended, alive = provider.launch(launch_request("web", count=2)).instance_ids
    provider.terminate([ended])
    saved_at = datetime(2026, 1, 2, 3, 14, 15, tzinfo=timezone.utc)
    _end_never_joined("web", ended, launched=saved_at, saved_at=saved_at)
    _ec2_gives_no_console(gateway, tmp_path, {ended})

    code, out, err = run(["logs", "web"], capsys)
    assert code == 0, err
    section = out[out.index(ended):out.index(alive)]
    assert ("(saved by the reconciler at 2026-01-02 03:14:15 UTC before it ended the "
            "instance: never joined: no startd ad 600 s after launch)") in section
    assert "collector cm.pool.test:9618 unreachable" in section
    assert f"{ended}: agent log (uploaded when its boot failed)" in section
    assert SAVED_AGENT_LOG.strip() in section
    # The live instance still shows EC2's console, and nothing saved.
    assert out.count("saved by the reconciler") == 1
    assert _moto_console_text(ec2, alive).strip().splitlines()[0] in out[out.index(alive):]

    code, out, err = run(["logs", "web", "--json"], capsys)
    assert code == 0, err
    entries = {i["instance_id"]: i for i in json.loads(out)["instances"]}
    assert entries[ended]["saved_at"] == "2026-01-02T03:14:15+00:00"
    assert entries[ended]["output"] == SAVED_CONSOLE
    assert entries[ended]["agent_log"] == SAVED_AGENT_LOG
    assert entries[ended]["state"] == "terminated" and entries[ended]["captured_at"] is None
    assert entries[alive]["saved_at"] is None
    assert entries[alive]["output"] == _moto_console_text(ec2, alive)


def test_logs_prefers_the_console_ec2_still_gives(cloud, provider, launch_request, ec2,
                                                  capsys):
    """An ended instance whose console EC2 still gives shows EC2's (it is the newest): the
    saved copy is not used, and ``saved_at`` is null."""
    from condor_annex.model import utcnow
    [iid] = provider.launch(launch_request("web", count=1)).instance_ids
    provider.terminate([iid])
    _end_never_joined("web", iid, launched=utcnow(), saved_at=utcnow())

    code, out, err = run(["logs", "web", iid, "--json"], capsys)
    assert code == 0, err
    [entry] = json.loads(out)["instances"]
    assert entry["saved_at"] is None and entry["output"] == _moto_console_text(ec2, iid)
    assert entry["agent_log"] is None   # the bucket has none, and the copy is not used
    code, out, err = run(["logs", "web", iid], capsys)
    assert code == 0, err
    assert "saved by the reconciler" not in out and "unreachable" not in out


def test_logs_shows_saved_instances_ec2_no_longer_lists(cloud, provider, launch_request,
                                                        outputs, capsys):
    """EC2 forgets an ended instance within about an hour; the store's copy is still shown,
    oldest launch first, beside what EC2 lists; and an annex EC2 lists nothing of at all is
    not 'unknown' while the store keeps a copy of its instances."""
    from datetime import timedelta

    from condor_annex.model import utcnow
    forgotten, gone = "i-0123456789abcdef0", "i-0fedcba9876543210"
    [alive] = provider.launch(launch_request("web", count=1)).instance_ids
    earlier = utcnow() - timedelta(hours=3)
    _end_never_joined("web", forgotten, launched=earlier, saved_at=earlier)
    _end_never_joined("gone", gone, launched=earlier, saved_at=earlier)
    # The bucket's agent log (the longer tail) wins over the copy.
    _put_agent_log(cloud, outputs, "gone", gone, b"the bucket's agent log\n")

    code, out, err = run(["logs", "web"], capsys)
    assert code == 0, err
    assert out.index(forgotten) < out.index(alive)
    assert f"{forgotten} (terminated)" in out and out.count("saved by the reconciler") == 1
    assert f"at {earlier:%Y-%m-%d %H:%M:%S} UTC" in out

    code, out, err = run(["logs", "gone", "--json"], capsys)
    assert code == 0, err
    [entry] = json.loads(out)["instances"]
    assert entry["instance_id"] == gone and entry["state"] == "terminated"
    assert entry["output"] == SAVED_CONSOLE and entry["saved_at"] == earlier.isoformat()
    assert entry["agent_log"] == "the bucket's agent log\n"

    code, out, err = run(["logs", "web", forgotten], capsys)
    assert code == 0, err
    assert forgotten in out and alive not in out and "unreachable" in out
    # A wrong instance id names the saved ones among the annex's instances.
    code, out, err = run(["logs", "gone", forgotten], capsys)
    assert code == 2 and f"its instances: {gone}" in err


def test_logs_never_creates_the_state_file(cloud, provider, launch_request, capsys):
    from condor_annex.state.store import default_path
    provider.launch(launch_request("web", count=1))
    code, out, err = run(["logs", "web", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["instances"][0]["saved_at"] is None
    assert not default_path().exists()
