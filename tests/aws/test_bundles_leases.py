"""Config bundles (S3) and leases (EventBridge Scheduler) against the moto server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from condor_annex.errors import NotFoundError, NotSetUpError
from condor_annex.model import BundleRef


def test_bundle_put_exists_delete(provider, outputs, aws):
    from condor_annex.providers.aws.session import make_client

    ref = provider.put_bundle("foo", b"tarball bytes")

    assert ref == BundleRef(outputs.bucket, "config-foo.tar.gz")
    assert provider.bundle_exists("foo")
    assert not provider.bundle_exists("foobar")
    head = make_client(aws, "s3").head_object(Bucket=ref.bucket, Key=ref.key)
    assert head["ServerSideEncryption"] == "AES256"
    assert provider.get_bundle("foo") == b"tarball bytes"     # what extend re-renders from
    assert provider.get_bundle("foobar") is None
    provider.delete_bundle(ref)
    assert not provider.bundle_exists("foo")
    assert provider.get_bundle("foo") is None
    provider.delete_bundle(ref)  # deleting a missing bundle is fine


def test_bundle_needs_setup(aws):
    from condor_annex.providers.aws.provider import AwsProvider

    with pytest.raises(NotSetUpError):
        AwsProvider(aws).put_bundle("foo", b"x")


def _at(minutes: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(minutes=minutes)


def test_lease_round_trip(provider, outputs, aws):
    from condor_annex.providers.aws.session import make_client

    expires = _at(50).replace(microsecond=250_000)

    lease = provider.create_lease("foo", expires)

    assert lease.schedule_name == "annex-lease-foo"
    assert lease.expires_at == expires.replace(microsecond=0) + timedelta(seconds=1)  # rounded up
    assert provider.get_lease("foo") == lease
    assert provider.get_lease("foobar") is None
    schedule = make_client(aws, "scheduler").get_schedule(Name="annex-lease-foo")
    assert schedule["ScheduleExpression"] == f"at({lease.expires_at:%Y-%m-%dT%H:%M:%S})"
    assert schedule["Target"]["Arn"] == outputs.lease_function_arn
    assert schedule["Target"]["RoleArn"] == outputs.scheduler_role_arn
    assert json.loads(schedule["Target"]["Input"]) == {
        "AnnexName": "foo", "S3BucketName": outputs.bucket, "BundleKey": "config-foo.tar.gz",
        "LeaseExpiration": int(lease.expires_at.timestamp()), "ScheduleName": "annex-lease-foo",
        "ScheduleGroup": "default", "AnnexOwner": provider.owner()}

    later = provider.extend_lease(lease, _at(120))

    assert later.expires_at > lease.expires_at
    assert provider.get_lease("foo") == later
    assert provider.list_leases() == [later]

    provider.delete_lease(later)
    assert provider.get_lease("foo") is None
    assert provider.list_leases() == []
    provider.delete_lease(later)  # deleting a missing lease is fine


def test_create_lease_twice_moves_it(provider):
    provider.create_lease("foo", _at(10))
    second = provider.create_lease("foo", _at(30))

    assert provider.get_lease("foo") == second
    assert len(provider.list_leases()) == 1


def test_extend_missing_lease_is_not_found(provider):
    from condor_annex.model import LeaseRef

    ghost = LeaseRef("ghost", "annex-lease-ghost", _at(10))
    with pytest.raises(NotFoundError) as err:
        provider.extend_lease(ghost, _at(20))
    assert "scheduler.UpdateSchedule" in str(err.value)


def test_list_leases_many(provider):
    for n in range(5):
        provider.create_lease(f"a{n}", _at(10 + n))

    assert sorted(lease.annex_name for lease in provider.list_leases()) == [
        f"a{n}" for n in range(5)]


def test_naive_datetime_is_refused(provider):
    from condor_annex.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        provider.create_lease("foo", datetime.now() + timedelta(minutes=5))
