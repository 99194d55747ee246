"""``condor_annex image build`` on moto: the builder launches from the stock image with the build
bootstrap and setup's instance profile, the image is made once the builder has stopped (here the
test stops it, standing for the bootstrap's power-off), tagged ``htcondor:AnnexImage`` and
recorded as the default; on failure or timeout the builder is terminated, no image is left.
(The local cloud's e2e test boots the real bootstrap: tests/e2e/test_stock_boot.py.)"""

from __future__ import annotations

import base64

import pytest

from condor_annex import __version__, config
from condor_annex.errors import ProviderError
from condor_annex.model import TAG_ANNEX_IMAGE
from condor_annex.providers.aws.image_builder import TAG_IMAGE_BUILDER
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.strict_ssm import PublicParameters
from condor_annex.service.context import Context
from condor_annex.service.image_build import build_image
from tests.aws.conftest import MOTO_AMI


@pytest.fixture
def ready(account, outputs, gateway):
    """Set up (the agent in the bucket), the CLI through the gateway, the stock debian-13
    parameter published as moto's AMI (the local cloud publishes its own stock image)."""
    config.write_block("setup", config.setup_knobs(outputs))
    config.write_block("gw", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    gateway.rule(PublicParameters).publish(
        "/aws/service/debian/release/13/latest/amd64", MOTO_AMI)
    return Context.load()


def _builders(ec2) -> list[dict]:
    return [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag-key", "Values": [TAG_IMAGE_BUILDER]}])["Reservations"]
        for i in r["Instances"]]


def test_build_images_the_stopped_builder_and_records_it(ready, sent):
    ec2 = make_client(ready.aws, "ec2")
    phases: list[str] = []

    def power_off_when_booting(phase: str, elapsed: float) -> None:
        phases.append(phase)
        for b in _builders(ec2):
            if b["State"]["Name"] == "running":   # the build bootstrap's shutdown -h now
                ec2.stop_instances(InstanceIds=[b["InstanceId"]])

    built = build_image(ready, instance_type="m4.large", progress=power_off_when_booting,
                        timeout_s=60)
    image = ec2.describe_images(ImageIds=[built.image_id])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    assert tags[TAG_ANNEX_IMAGE] == __version__ and built.source_image_id == MOTO_AMI
    assert "booting" in phases and "imaging" in phases
    (builder,) = _builders(ec2)
    assert builder["State"]["Name"] in ("shutting-down", "terminated")
    (run,) = sent["RunInstances"]
    assert run["IamInstanceProfile"]["Arn"] == ready.setup_outputs().instance_profile_arn
    assert run["InstanceInitiatedShutdownBehavior"] == "stop"   # powering off stops it
    data = ec2.describe_instance_attribute(InstanceId=builder["InstanceId"],
                                           Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(data).decode()
    assert text.startswith("#cloud-config") and "image build complete" in text
    assert config.read_knobs()["ANNEX_DEFAULT_ODI_IMAGE_ID"] == built.image_id


def test_a_builder_that_never_finishes_is_terminated_and_nothing_recorded(ready):
    ec2 = make_client(ready.aws, "ec2")
    with pytest.raises(ProviderError, match="did not finish within"):
        build_image(ready, instance_type="m4.large", timeout_s=0.5)
    (builder,) = _builders(ec2)
    assert builder["State"]["Name"] in ("shutting-down", "terminated")
    assert not [i for i in ec2.describe_images(Owners=["self"])["Images"]
                if TAG_ANNEX_IMAGE in {t["Key"] for t in i.get("Tags", [])}]
    assert config.read_knobs().get("ANNEX_DEFAULT_ODI_IMAGE_ID") == MOTO_AMI   # unchanged


def test_cli_refuses_bad_flags_before_any_cloud_call(ready, capsys):
    from condor_annex.cli.main import main
    ec2 = make_client(ready.aws, "ec2")
    for argv, flag in ((["image", "build", "--image", "fedora-40"], "--image"),
                       (["image", "build", "--timeout", "10"], "--timeout"),
                       (["image", "build", "--instance-type", "m4 large"], "--instance-type")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"condor_annex: {flag}:"), err
    assert _builders(ec2) == []
