"""Step 7: ``config.d/49-instance.config``, what HTCondor advertises about this instance.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

from pathlib import Path

from condor_annex.agent.discovery import Identity
from condor_annex.agent.files import write_config

#: The file, relative to the config dir (49: read before the bundle's 50-annex.config).
INSTANCE_CONFIG = "config.d/49-instance.config"


def write_instance_config(config_dir: Path, ident: Identity) -> Path:
    """Write ``config.d/49-instance.config`` (mode 644) advertising the instance id and address
    (``EC2InstanceID``, ``EC2PublicIP`` in the startd and master ads; ``TCP_FORWARDING_HOST``).

    Returns:
        The file's path.

    Raises:
        BootstrapError: it could not be written.
    """
    text = (
        "# Written at boot by condor_annex.agent from instance metadata; do not edit.\n"
        f'EC2InstanceID = "{ident.instance_id}"\n'
        f'EC2PublicIP = "{ident.public_ip}"\n'
        f"TCP_FORWARDING_HOST = {ident.public_ip}\n"
        "STARTD_ATTRS = $(STARTD_ATTRS) EC2InstanceID EC2PublicIP\n"
        "MASTER_ATTRS = $(MASTER_ATTRS) EC2InstanceID EC2PublicIP\n"
    )
    return write_config(config_dir, INSTANCE_CONFIG, text)
