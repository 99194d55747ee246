"""setup's bucket expires the agents' uploaded logs (``logs/``) after 30 days: nothing deletes
them with their annex (``condor_annex logs`` and the reconciler read them after it ends), so
S3 does (AWS::S3::Bucket ``LifecycleConfiguration`` in the template), and they never pile up on
the user's bill.  moto's bucket model ignores that property; the local cloud's gateway applies
it as CloudFormation does (:mod:`condor_annex.providers.local.strict_cfn`), so these tests run
setup through the gateway."""

from __future__ import annotations

from dataclasses import replace

from condor_annex.providers.aws import setup as aws_setup
from condor_annex.providers.aws.agent_log import agent_log_key
from condor_annex.providers.aws.session import make_client


def _rules(settings, bucket: str) -> list[tuple]:
    """The bucket's lifecycle rules as (id, status, prefix, expiration days); [] when it has
    no lifecycle configuration (S3 answers NoSuchLifecycleConfiguration)."""
    s3 = make_client(settings, "s3")
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except s3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != "NoSuchLifecycleConfiguration":
            raise
        return []
    return [(r.get("ID"), r["Status"], (r.get("Filter") or {}).get("Prefix", r.get("Prefix")),
             (r.get("Expiration") or {}).get("Days")) for r in rules]


def _covers(prefix: str, key: str) -> bool:
    return key.startswith(prefix)


def test_setup_bucket_expires_agent_logs_after_30_days(aws, gateway, tmp_path):
    via = replace(aws, endpoint_url=gateway.url)
    outputs = aws_setup.setup(via, key_dir=tmp_path, poll_s=0.1, deadline_s=60)

    [(rule_id, status, prefix, days)] = _rules(via, outputs.bucket)
    assert (rule_id, status, days) == ("ExpireAgentLogs", "Enabled", 30)
    # Where the agent puts its log is expired; an annex's bundle (and the agent zipapp) is not.
    assert _covers(prefix, agent_log_key("web", "i-0123456789abcdef0"))
    assert not _covers(prefix, "config-web.tar.gz")
    assert not any(_covers(prefix, key) for key in ("condor-annex-agent.pyz", "agent/"))


def test_setup_adds_the_rule_to_a_stack_made_without_it(aws, gateway, tmp_path, monkeypatch):
    """A bucket set up by an older condor-annex gets the rule from the next ``setup``."""
    via = replace(aws, endpoint_url=gateway.url)
    shipped = aws_setup.template_source()
    start = shipped.index("      LifecycleConfiguration:\n")
    last = "            ExpirationInDays: 30\n"
    end = shipped.index(last) + len(last)
    with monkeypatch.context() as older:
        older.setattr(aws_setup, "template_source", lambda: shipped[:start] + shipped[end:])
        old = aws_setup.setup(via, key_dir=tmp_path, poll_s=0.1, deadline_s=60)
    assert _rules(via, old.bucket) == []

    new = aws_setup.setup(via, key_dir=tmp_path, poll_s=0.1, deadline_s=60)

    assert "Modify ConfigBucket (AWS::S3::Bucket)" in new.changes
    assert [(r[0], r[2], r[3]) for r in _rules(via, new.bucket)] == [
        ("ExpireAgentLogs", "logs/", 30)]


def test_local_cloud_fails_a_stack_whose_lifecycle_rule_it_cannot_apply(aws, gateway):
    """The gateway translates only Id, Status, Prefix and ExpirationInDays; a rule with any
    other property fails the stack, naming it, rather than leaving a bucket without it."""
    via = replace(aws, endpoint_url=gateway.url)
    cfn = make_client(via, "cloudformation")
    cfn.create_stack(StackName="lifecycle", TemplateBody="""
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      LifecycleConfiguration:
        Rules:
          - Status: Enabled
            Prefix: tmp/
            ExpirationInDays: 1
            NoncurrentVersionExpirationInDays: 1
""")
    stack = cfn.describe_stacks(StackName="lifecycle")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_FAILED"
    assert "NoncurrentVersionExpirationInDays" in stack["StackStatusReason"]
