"""A failed boot leaves the agent's log in the config bucket, at
``logs/<annex>/<instance-id>/agent.log``, before it powers off; a good boot leaves nothing.

Same set-up as test_agent_bootstrap.py (its ``cloud`` fixture: our IMDSv2 server on 127.0.0.1,
the moto server as AWS with the instance, role, profile and bucket, and test doubles for
condor_master and the power-off command, writing to one events file).
"""

from __future__ import annotations

import logging
import time

import pytest

from condor_annex.agent import bootstrap
from condor_annex.agent.log_tail import LogTail
from condor_annex.agent.log_upload import UPLOAD_BUDGET_S
from condor_annex.pool.configs import annex_bundle
import test_agent_bootstrap as boot
from test_agent_bootstrap import (ANNEX, BUCKET, GOOD_BUNDLE_FILES, ROLE_CREDS, TOKEN_SECRET,
                                  make_bundle, write_script)

#: The fixture of test_agent_bootstrap.py: a launched instance, its IMDS, bucket and doubles.
cloud = boot.cloud


def uploaded(node) -> dict[str, str]:
    """Every object under ``logs/`` in the config bucket: key -> text."""
    listed = node.s3.list_objects_v2(Bucket=BUCKET, Prefix="logs/").get("Contents", [])
    return {o["Key"]: node.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read().decode()
            for o in listed}


def key(node) -> str:
    return f"logs/{ANNEX}/{node.instance_id}/agent.log"


def test_a_missing_bundle_uploads_the_log_then_powers_off(cloud, caplog):
    caplog.set_level(logging.INFO)

    assert bootstrap.main(cloud.argv(deadline_s=2)) == 1

    logs = uploaded(cloud)
    assert list(logs) == [key(cloud)]
    text = logs[key(cloud)]
    # The lines a user needs to see why: the steps that worked and the one failure.
    assert f"step 3/9 annex name '{ANNEX}'" in text
    assert "bootstrap failed" in text and f"config-{ANNEX}.tar.gz" in text
    assert "NoSuchKey" in text
    assert all(line.split(" ", 2)[1] == "condor-annex-agent" for line in text.splitlines())
    for secret in (ROLE_CREDS[1], ROLE_CREDS[2], TOKEN_SECRET):
        assert secret not in text
    # Uploaded first, powered off after; the master never ran.
    assert cloud.event_lines() == ["poweroff "]
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"uploaded this log to s3://{BUCKET}/{key(cloud)}")
               for m in messages)
    assert messages.index(next(m for m in messages if m.startswith("uploaded this log"))) < \
        messages.index(next(m for m in messages if m.startswith("powering off:")))
    head = cloud.s3.head_object(Bucket=BUCKET, Key=key(cloud))
    assert head["ContentType"].startswith("text/plain")


def test_a_good_boot_uploads_nothing(cloud):
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))

    assert bootstrap.main(cloud.argv()) == 0

    assert uploaded(cloud) == {}


def test_a_master_failing_at_once_uploads_the_log(cloud):
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))
    write_script(cloud.root / "fake_condor_master",
                 f'echo "master started" >> "{cloud.events}"\nexit 4\n')

    assert bootstrap.main(cloud.argv()) == 0

    text = uploaded(cloud)[key(cloud)]
    assert "condor_master exited with status 4" in text
    assert "condor_master failed" in text and "did not join the pool" in text
    assert cloud.event_lines() == ["master started", "poweroff "]


def test_a_master_that_cannot_start_uploads_the_log(cloud):
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))
    argv = cloud.argv()
    argv[argv.index("--condor-master") + 1] = str(cloud.root / "no_such_condor_master")

    assert bootstrap.main(argv) == 1

    assert "cannot start" in uploaded(cloud)[key(cloud)]
    assert cloud.event_lines() == ["poweroff "]


def test_a_lease_over_before_htcondor_started_uploads_the_log(cloud):
    cloud.put_bundle(ANNEX, annex_bundle(annex_name=ANNEX, collector="10.200.0.2:9618",
                                         trust_domain="pool.test", idle_seconds=900,
                                         token=TOKEN_SECRET, lease_end=int(time.time()) - 120))

    assert bootstrap.main(cloud.argv("--lease-margin-s", "60")) == 0

    assert "not starting HTCondor, powering off: lease ended" in uploaded(cloud)[key(cloud)]
    assert cloud.event_lines() == ["poweroff "]


def test_no_upload_when_the_annex_is_unknown(cloud, moto_endpoint, caplog):
    """Without the annex name there is no prefix this instance may write: nothing is tried,
    and the console says so."""
    caplog.set_level(logging.INFO)
    cloud.metadata.tags = {}
    boot._aws_client("ec2", moto_endpoint).delete_tags(
        Resources=[cloud.instance_id], Tags=[{"Key": "htcondor:AnnexName"}])

    assert bootstrap.main(cloud.argv(deadline_s=1)) == 1

    assert uploaded(cloud) == {}
    assert any("this log is not uploaded" in r.getMessage() for r in caplog.records)
    assert cloud.event_lines() == ["poweroff "]


@pytest.mark.parametrize("fault", ["refused", "hangs"])
def test_a_failing_upload_never_holds_up_the_power_off(cloud, gateway, caplog, fault):
    """S3 refusing the log (AccessDenied) or never answering: the node powers off anyway,
    within the upload budget, and says why the log is missing."""
    caplog.set_level(logging.INFO)
    if fault == "refused":
        gateway.fail("s3.PutObject", "AccessDenied", "Access Denied", status=403)
    else:
        gateway.hold("s3.PutObject", max_s=30)
    argv = cloud.argv(deadline_s=1)
    argv[argv.index("--aws-endpoint-url") + 1] = gateway.url

    started = time.monotonic()
    assert bootstrap.main(argv) == 1
    elapsed = time.monotonic() - started

    assert cloud.event_lines() == ["poweroff "]
    assert elapsed < 1 + UPLOAD_BUDGET_S + 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "could not upload this log" in r.getMessage()]
    assert len(warnings) == 1
    if fault == "refused":
        assert "AccessDenied" in warnings[0]
    else:   # the call's own read timeout, or the budget: never a thread that died unheard
        assert "ReadTimeoutError" in warnings[0] or f"within {UPLOAD_BUDGET_S:g}s" in \
            warnings[0], warnings[0]
    assert gateway.count("s3.PutObject") == 1


def _tail_of(*messages: str, max_bytes: int) -> LogTail:
    tail = LogTail(max_bytes=max_bytes)
    tail.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test_agent_log_upload.tail")
    logger.propagate = False
    logger.addHandler(tail)
    logger.setLevel(logging.INFO)
    try:
        for m in messages:
            logger.info("%s", m)
    finally:
        logger.removeHandler(tail)
    return tail


def test_the_log_tail_keeps_the_newest_lines_within_its_cap():
    lines = [f"line {n:03d} " + "x" * 40 for n in range(100)]     # 50 bytes each
    tail = _tail_of(*lines, max_bytes=1000)

    first, rest = tail.text().split(b"\n", 1)
    assert tail.dropped == 80
    assert first == b"[80 earlier lines dropped]"
    assert rest.decode().splitlines() == lines[80:]
    assert len(rest) == 1000


def test_a_line_longer_than_the_cap_keeps_its_end():
    tail = _tail_of("start", "y" * 4000 + "END", max_bytes=1000)

    text = tail.text()
    assert text.startswith(b"[1 earlier lines dropped]\n")
    assert text.endswith(b"y" * 995 + b"END\n")
    assert len(text.split(b"\n", 1)[1]) == 1000
