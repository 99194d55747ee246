"""The local cloud's AMIs: stock images of the distributions, and images made by CreateImage.

Stock images.  On AWS, Debian and Canonical publish their current AMIs as public SSM parameters
(:data:`condor_annex.providers.aws.images.IMAGES`).  The local cloud registers one AMI per name
and architecture in moto at start (``debian-13-amd64-<date>``, Canonical's
``ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-<date>``; moto's RegisterImage keeps
no architecture, so they are CopyImage copies of a moto AMI of the right architecture, which
carry it) and publishes them through the gateway's public-parameter table
(:class:`~condor_annex.providers.local.strict_ssm.PublicParameters`).  Every one of them boots
the same trixie chroot (Debian 13 with cloud-init): ``ubuntu-24.04`` and ``arm64`` are names
here, not other systems (docs/local-cloud.md).  Amazon Linux's parameters stay moto's.

Layers.  An AMI is a list of directories stacked under each instance's overlay (top first), over
the chroot: a stock AMI has the **stock layer** (the stand-ins of :mod:`.standins`, the
stand-in init, and the cloud.cfg.d file restricting cloud-init's modules); an AMI made by
CreateImage has a copy of its instance's upper dir (what the instance wrote: e.g. what
``condor_annex image build``'s bootstrap installed) on top of its source AMI's layers.  An AMI
the local cloud did not make (moto's own) boots as a stock image.

This module is also a gateway rule (:class:`LocalImages` is a ``StrictRule``): it sees moto's
answer to EC2 CreateImage and makes the new AMI's layer then (EC2's CreateImage snapshots the
root volume: "Create an Amazon EBS-backed AMI", docs.aws.amazon.com/AWSEC2/latest/UserGuide/
creating-an-ami-ebs.html; without NoReboot EC2 reboots a running instance first — here the
copy is taken as the files are, as with NoReboot).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from condor_annex.providers.local.gateway import Call, Reply, StrictRule

log = logging.getLogger(__name__)

STANDINS = Path(__file__).with_name("standins")
INIT_SOURCE = Path(__file__).with_name("instance_init.py")
#: (path in the image, stand-in file): one script may serve several names.
STANDIN_FILES = (("usr/bin/systemctl", "systemctl"), ("usr/sbin/shutdown", "shutdown"),
                 ("usr/sbin/poweroff", "shutdown"), ("usr/sbin/halt", "shutdown"),
                 ("usr/sbin/reboot", "shutdown"), ("usr/sbin/dmidecode", "dmidecode"))
CLOUD_CFG = "etc/cloud/cloud.cfg.d/99_local_cloud.cfg"
#: Stock image names -> AMI name pattern per EC2 architecture (the names the distributions use).
STOCK_NAMES = {
    "debian-13": {"x86_64": "debian-13-amd64-{date}", "arm64": "debian-13-arm64-{date}"},
    "ubuntu-24.04": {
        "x86_64": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-{date}",
        "arm64": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-{date}"},
}
_IMAGE_ID = re.compile(rb"<imageId>(ami-[0-9a-f]+)</imageId>")


def build_stock_layer(dest: Path) -> Path:
    """Write the stock image layer into ``dest`` (replaced); returns ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    for rel, name in STANDIN_FILES:
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(STANDINS / name, p)
        p.chmod(0o755)
    init = dest / "usr/lib/condor-annex-local/init.py"
    init.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(INIT_SOURCE, init)
    cfg = dest / CLOUD_CFG
    cfg.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(STANDINS / "99_local_cloud.cfg", cfg)
    return dest


class LocalImages(StrictRule):
    """AMI id -> layers, and the CreateImage hook (module docstring).  Thread-safe.

    Args:
        gateway: the local cloud's gateway (its rule list gets this rule).
        state_dir: the local cloud's state dir; layers live in ``<state_dir>/images/``.
        chroot: the trixie chroot (the bottom of every instance's overlay).
        upper_of: instance id -> its overlay upper dir (or None when it has none).
    """

    def __init__(self, gateway, state_dir: Path, chroot: Path, upper_of) -> None:
        super().__init__(gateway)
        self.dir = state_dir / "images"
        self.chroot = chroot
        self.upper_of = upper_of
        self.stock = self.dir / "stock"
        self._lock = threading.Lock()
        self._layers: dict[str, list[Path]] = {}       # AMI -> its own layers, top first
        self._launched: dict[str, str] = {}            # instance -> AMI it booted from
        self.stock_ids: dict[tuple[str, str], str] = {}   # (name, architecture) -> AMI

    def register_stock(self, ec2) -> dict[tuple[str, str], str]:
        """Build the stock layer, register the stock AMIs in moto and publish their public
        parameters; returns ``{(name, architecture): ami}``.

        Raises:
            RuntimeError: moto has no AMI of an architecture to copy from.
        """
        from condor_annex.providers.aws.images import IMAGES
        from condor_annex.providers.local.strict_ssm import PublicParameters
        build_stock_layer(self.stock)
        sources = {}
        for image in ec2.describe_images(Owners=["amazon"]).get("Images", []):
            sources.setdefault(image.get("Architecture"), image["ImageId"])
        date = time.strftime("%Y%m%d-0000")
        params = self.gateway.rule(PublicParameters)
        for name, by_arch in STOCK_NAMES.items():
            for arch, pattern in by_arch.items():
                if arch not in sources:
                    raise RuntimeError(f"moto has no {arch} AMI to register {name} from")
                ami = ec2.copy_image(
                    SourceImageId=sources[arch], SourceRegion=ec2.meta.region_name,
                    Name=pattern.format(date=date),
                    Description=f"{name} ({arch}) stock image of the local cloud: the trixie "
                                "chroot with cloud-init")["ImageId"]
                with self._lock:
                    self._layers[ami] = [self.stock]
                self.stock_ids[(name, arch)] = ami
                if params is not None:
                    params.publish(IMAGES[name][1][arch], ami)
        return dict(self.stock_ids)

    def layers_for(self, image_id: str) -> list[Path]:
        """The overlay's lower layers of an instance of ``image_id``, top first, chroot last."""
        with self._lock:
            own = self._layers.get(image_id, [self.stock])
        return [*own, self.chroot]

    def launched(self, instance_id: str, image_id: str) -> None:
        """Remember which AMI ``instance_id`` booted from (its CreateImage stacks on it)."""
        with self._lock:
            self._launched[instance_id] = image_id

    def after(self, call: Call, reply: Reply) -> Reply:
        """After moto's CreateImage: the new AMI's layer = a copy of the instance's upper dir
        over its source AMI's layers (``cp -a``: overlay whiteouts and xattrs kept)."""
        if call.service != "ec2" or call.operation != "CreateImage" or reply[0] != 200:
            return reply
        m = _IMAGE_ID.search(reply[2])
        iid = dict(call.params).get("InstanceId", "")
        upper = self.upper_of(iid) if iid else None
        if m is None or upper is None or not Path(upper).is_dir():
            return reply
        ami = m.group(1).decode()
        layer = self.dir / ami
        t0 = time.monotonic()
        shutil.rmtree(layer, ignore_errors=True)
        layer.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(upper), str(layer)], check=True)
        with self._lock:
            source = self._launched.get(iid, "")
            self._layers[ami] = [layer, *self._layers.get(source, [self.stock])]
        log.info("CreateImage %s from %s: layer copied in %.2f s", ami, iid,
                 time.monotonic() - t0)
        return reply

    def forget(self) -> None:
        """moto was reset: its AMIs are gone (the stock AMIs are registered again at start)."""
