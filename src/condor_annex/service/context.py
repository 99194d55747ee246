"""Where the service layer gets its settings and its provider.

A :class:`Context` is built once per command from the user's knobs (``~/.condor/user_config``,
see :mod:`condor_annex.config`) and command-line overrides; it hands out the provider and the
pool settings.  Nothing here talks to the cloud until a provider method is called.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from condor_annex import config
from condor_annex.config import AwsSettings
from condor_annex.errors import BadInputError
from condor_annex.model import SetupOutputs
from condor_annex.providers.base import Provider


@dataclass
class Context:
    """Settings for one command.

    Attributes:
        knobs: the user's knobs (name -> value).
        aws: how to reach AWS or the local cloud's emulator.
        collector: collector address this host queries (COLLECTOR_HOST).
        annex_collector: collector address the instances report to (ANNEX_COLLECTOR, default
            COLLECTOR_HOST).
        trust_domain: the pool's TRUST_DOMAIN (ANNEX_TRUST_DOMAIN).
        token_command: how to run condor_token_create (ANNEX_TOKEN_COMMAND).
        image_id: default AMI (ANNEX_DEFAULT_ODI_IMAGE_ID).
        listing_lag_s: seconds a rollback keeps looking for what a launch with a lost reply
            may have made, since EC2's listings lag its launches (ANNEX_LISTING_LAG, default
            30; docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
        notify: shows one line of progress to the user (retries, waits); default: stderr.
    """

    knobs: dict[str, str] = field(default_factory=dict)
    aws: AwsSettings = field(default_factory=AwsSettings)
    collector: str = ""
    annex_collector: str = ""
    trust_domain: str = ""
    token_command: str = "condor_token_create"
    image_id: str = ""
    listing_lag_s: float = 30.0
    notify: Callable[[str], None] = field(default=lambda line: _stderr_line(line))

    @classmethod
    def load(cls, *, region: str | None = None, knobs: dict[str, str] | None = None,
             **aws_overrides: str) -> "Context":
        """Build a context from the user's config; ``aws_overrides`` replace AwsSettings
        fields (e.g. ``endpoint_url``, ``access_key_file``) when given a non-empty value."""
        knobs = config.read_knobs() if knobs is None else knobs
        aws = config.aws_settings(knobs, region)
        overrides = {k: v for k, v in aws_overrides.items() if v}
        if overrides:
            aws = AwsSettings(**{**aws.__dict__, **overrides})
        collector = knobs.get("COLLECTOR_HOST", "")
        return cls(knobs=knobs, aws=aws, collector=collector,
                   annex_collector=knobs.get("ANNEX_COLLECTOR") or collector,
                   trust_domain=knobs.get("ANNEX_TRUST_DOMAIN") or knobs.get("TRUST_DOMAIN")
                   or (collector.split(":")[0] if collector else ""),
                   token_command=knobs.get("ANNEX_TOKEN_COMMAND") or "condor_token_create",
                   image_id=config.knob(knobs, "ANNEX_DEFAULT_ODI_IMAGE_ID", aws.region),
                   listing_lag_s=_seconds(knobs, "ANNEX_LISTING_LAG", 30.0))

    def setup_outputs(self) -> SetupOutputs:
        """What ``setup`` recorded (raises NotSetUpError naming the fix)."""
        return config.setup_outputs(self.knobs, self.aws.region)

    def provider(self, outputs: SetupOutputs | None = None) -> Provider:
        """The AWS provider (the local cloud is AWS behind an emulator endpoint), seen through
        the contract of :mod:`condor_annex.providers.base`; ``outputs`` (what ``setup`` made)
        is needed by the bundle, role and lease methods, not by the instance ones."""
        from condor_annex.providers.aws.provider import AwsProvider
        return AwsProvider(self.aws, outputs)

    def require_collector(self, flag: str = "COLLECTOR_HOST") -> str:
        """The collector the instances report to, or a clear error."""
        if not self.annex_collector:
            raise BadInputError(f"{flag}: no collector is configured; set COLLECTOR_HOST (or "
                                "ANNEX_COLLECTOR) in ~/.condor/user_config, or run "
                                "'condor_annex local up'")
        return self.annex_collector


def _stderr_line(line: str) -> None:
    print(f"condor_annex: {line}", file=sys.stderr, flush=True)


def _seconds(knobs: dict[str, str], name: str, default: float) -> float:
    """A knob holding a number of seconds (0 to 3600).

    Raises:
        BadInputError: not a number in that range, naming the knob.
    """
    text = knobs.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise BadInputError(f"{name}: '{text}' is not a number of seconds from 0 to 3600; fix "
                            "it in ~/.condor/user_config")
    return value
