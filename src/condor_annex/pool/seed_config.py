"""The seed's HTCondor configuration: a central manager + submit node that accepts annexes.

HTCondor's "HTCondor in the Cloud" (its seed page) grows a whole pool from one instance: that
instance is the central manager and the submit node, and annexes are its execute nodes.  These
are the ``config.d`` files the seed's cloud-init document writes over the distribution's
``condor_config`` (Debian's package: ``LOCAL_CONFIG_DIR`` includes ``/etc/condor/config.d``):

* :func:`seed_config` (``50-condor-annex-seed.conf``, written once): the daemons (HTCondor's
  ``use ROLE: CentralManager`` and ``use ROLE: Submit`` metaknobs), the security of a pool that
  accepts annex nodes (:func:`condor_annex.pool.configs.pool_security`, with the seed's admin
  user as an administrator), and the ``ANNEX_*`` knobs every user of the seed reads (setup's
  outputs, the token command): condor_annex takes ``ANNEX_*`` knobs from HTCondor's
  configuration (:func:`condor_annex.config.condor_knobs`);
* the address file ``51-condor-annex-seed-address.conf``, rewritten at every boot by the seed's
  address script from IMDS (a stopped and started instance gets a new public address):
  ``CONDOR_HOST`` (the private address: the seed's own daemons), ``TCP_FORWARDING_HOST`` (the
  public address daemons advertise, HTCondor manual "TCP_FORWARDING_HOST") and
  ``ANNEX_COLLECTOR`` (where annex nodes report).  :data:`ADDRESS_FILE` names it.
"""

from __future__ import annotations

import re

from condor_annex.errors import BadInputError
from condor_annex.pool.configs import pool_security

#: The seed's own configuration file and the one its address script writes at each boot.
SEED_FILE = "/etc/condor/config.d/50-condor-annex-seed.conf"
ADDRESS_FILE = "/etc/condor/config.d/51-condor-annex-seed-address.conf"
#: The seed's TRUST_DOMAIN (the issuer of the tokens minted on it; fixed, so a new public
#: address after a stop/start keeps every annex token valid).
SEED_TRUST_DOMAIN = "condor-annex-seed"
#: The seed's admin user (cloud-init creates it): runs condor_annex and condor_annexd.
SEED_ADMIN_USER = "admin"
#: How the admin user mints annex tokens: the pool's signing key is root's, so through sudo,
#: which the seed's cloud-init allows for this one program only.
SEED_TOKEN_COMMAND = "sudo -n /usr/bin/condor_token_create"
_KNOB_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*", re.ASCII)
_VALUE_RE = re.compile(r"[^\n\r\\$]*")


def seed_config(knobs: dict[str, str], *, trust_domain: str = SEED_TRUST_DOMAIN,
                admin_user: str = SEED_ADMIN_USER) -> str:
    """The text of :data:`SEED_FILE`.

    Args:
        knobs: ``ANNEX_*`` knobs for every user of the seed (setup's outputs, region, the
            instances' AWS endpoint...), written after ours; names like ``ANNEX_X`` or
            ``<region>.ANNEX_X``.
        trust_domain: the pool's TRUST_DOMAIN.
        admin_user: the local user who administers the pool (FS authentication).

    Returns:
        ``KEY = VALUE`` lines (about 2 KB).

    Raises:
        BadInputError: a knob name or value HTCondor's configuration cannot hold (a newline,
            a backslash, ``$``).
    """
    lines = [
        "# condor-annex seed: central manager + submit node for annexes "
        "(condor_annex.pool.seed_config)",
        "use ROLE: CentralManager",
        "use ROLE: Submit",
        "DAEMON_LIST = MASTER COLLECTOR NEGOTIATOR SCHEDD",
        pool_security(trust_domain, (admin_user,)).rstrip("\n"),
        # Jobs of a fresh annex start within a cycle or two, not HTCondor's default minute.
        "NEGOTIATOR_INTERVAL = 20",
        "SYSTEM_JOB_MACHINE_ATTRS = $(SYSTEM_JOB_MACHINE_ATTRS) AnnexName EC2InstanceID",
        f"ANNEX_TOKEN_COMMAND = {SEED_TOKEN_COMMAND}",
        f"ANNEX_TRUST_DOMAIN = {trust_domain}",
    ]
    for name, value in sorted(knobs.items()):
        if not _KNOB_RE.fullmatch(name) or not _VALUE_RE.fullmatch(value):
            raise BadInputError(f"seed: the knob {name} cannot go into the seed's HTCondor "
                                "configuration (a newline, backslash or $); fix its value")
        lines.append(f"{name} = {value}")
    return "\n".join(lines) + "\n"


def address_config(private_ip: str, public_ip: str) -> str:
    """The text of :data:`ADDRESS_FILE` for one boot (what the seed's address script writes;
    kept here so tests see the same lines).

    Args:
        private_ip: IMDS ``local-ipv4``.
        public_ip: IMDS ``public-ipv4``, or "" when the instance has none (then the private
            address is advertised).

    Returns:
        ``KEY = VALUE`` lines.
    """
    advertised = public_ip or private_ip
    return (f"CONDOR_HOST = {private_ip}\n"
            f"COLLECTOR_HOST = {private_ip}:9618\n"
            f"TCP_FORWARDING_HOST = {advertised}\n"
            f"ANNEX_COLLECTOR = {advertised}:9618\n")
