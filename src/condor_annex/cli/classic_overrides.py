"""The classic options that replace settings rather than describe an annex: one endpoint
for every service (``-aws-*-url``), the key files, and the ``-aws-on-demand-*`` /
``-aws-spot-fleet-lease-function-arn`` overrides of what ``-setup`` made (as knobs).
"""

from __future__ import annotations

import re
from pathlib import Path

from condor_annex import validate
from condor_annex.cli.classic_options import ClassicArgs
from condor_annex.errors import BadInputError


def aws_overrides(args: ClassicArgs) -> dict[str, str]:
    """``-aws-*-url`` (one endpoint for every service) and the key files, as
    :class:`~condor_annex.config.AwsSettings` fields.

    Raises:
        BadInputError: different URLs, or a URL that is not one.
    """
    overrides: dict[str, str] = {}
    urls = {url for _, url in args.urls}
    if len(urls) > 1:
        flags = " and ".join(f for f, _ in args.urls)
        raise BadInputError(f"{flags}: give the same URL (one endpoint serves every service)")
    for flag, url in args.urls:
        overrides["endpoint_url"] = validate.url(url, flag)
    if args.access_key_file is not None:
        overrides["access_key_file"] = str(Path(args.access_key_file).expanduser())
    if args.secret_key_file is not None:
        overrides["secret_key_file"] = str(Path(args.secret_key_file).expanduser())
    return overrides


def knob_overrides(args: ClassicArgs) -> dict[str, str]:
    """``-aws-on-demand-*`` overrides as the knobs ``setup`` wrote (unprefixed names; they are
    region-prefixed when applied)."""
    out: dict[str, str] = {}
    if args.security_group_ids is not None:
        groups = [g for g in re.split(r"[,\s]+", args.security_group_ids) if g]
        if len(groups) != 1 or not re.fullmatch(r"sg-[0-9a-f]{1,17}", groups[0], re.ASCII):
            raise BadInputError("-aws-on-demand-security-group-ids: give one security group "
                                "id, e.g. sg-0123456789abcdef0 (several are not supported yet)")
        out["ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS"] = groups[0]
    if args.key_name is not None:
        # EC2 key pair names: up to 255 printable ASCII characters.
        if not re.fullmatch(r"[ -~]{1,255}", args.key_name, re.ASCII) \
                or args.key_name != args.key_name.strip():
            raise BadInputError(f"-aws-on-demand-key-name: {validate.shown(args.key_name)} is "
                                "not a key pair name; give e.g. -aws-on-demand-key-name my-key")
        out["ANNEX_DEFAULT_ODI_KEY_NAME"] = args.key_name
    for value, flag, knob_name, service in (
            (args.instance_profile_arn, "-aws-on-demand-instance-profile-arn",
             "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN", "iam"),
            (args.odi_lease_function_arn, "-aws-on-demand-lease-function-arn",
             "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN", "lambda"),
            (args.sfr_lease_function_arn, "-aws-spot-fleet-lease-function-arn",
             "ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN", "lambda")):
        if value is None:
            continue
        if not re.fullmatch(rf"arn:aws[a-z-]*:{service}:[!-~]{{1,2000}}", value, re.ASCII):
            raise BadInputError(f"{flag}: {validate.shown(value)} is not an {service} ARN; use "
                                f"arn:aws:{service}:...")
        out[knob_name] = value
    return out
