"""The classic create request: ``-annex-name N -count K`` (on-demand instances) or
``-slots W`` (a spot fleet) and their options, as the :class:`~condor_annex.model.AnnexSpec`
(and :class:`~condor_annex.model.SpotSpec`) the service launches.

A spot fleet's config file is read and checked here, before any cloud call (see
:mod:`condor_annex.providers.aws.fleet` for how the file and the command line combine).
"""

from __future__ import annotations

import getpass

from condor_annex import validate
from condor_annex.cli.classic_options import ClassicArgs
from condor_annex.cli.classic_values import (data_flag, hours, owners, read_spot_fleet_config,
                                             tags, user_data)
from condor_annex.errors import BadInputError
from condor_annex.service.config_dir import read_config_dir
from condor_annex.model import (DEFAULT_IDLE_SECONDS, DEFAULT_INSTANCE_TYPE,
                                DEFAULT_LEASE_SECONDS, SPOT_API_SPOT_FLEET, AnnexSpec, SpotSpec,
                                validate_annex_name)


def _is_spot(args: ClassicArgs) -> bool:
    """True for a spot fleet (``-slots`` or ``-aws-spot-fleet``); refuses contradictions."""
    spot = args.slots is not None or args.spot_fleet
    if args.count is not None and args.slots is not None:
        raise BadInputError("-slots: give -count N (on-demand instances) or -slots W (a spot "
                            "fleet), not both")
    if spot and args.on_demand:
        flag = "-slots" if args.slots is not None else "-aws-spot-fleet"
        raise BadInputError(f"{flag}: cannot be combined with -aws-on-demand; give one of them")
    if spot and args.count is not None:
        raise BadInputError("-count: a spot fleet's size is its weighted capacity; give -slots "
                            "W instead of -count")
    if not spot and args.sfr_config_file is not None:
        raise BadInputError("-aws-spot-fleet-config-file: only for a spot fleet; add -slots W")
    if spot:
        for value, flag in ((args.instance_type, "-aws-on-demand-instance-type"),
                            (args.image_id, "-aws-on-demand-ami-id")):
            if value is not None:
                raise BadInputError(f"{flag}: only for on-demand instances; a spot fleet's "
                                    "instance types and AMIs are in -aws-spot-fleet-config-file")
    return spot



def _spot_spec(args: ClassicArgs) -> SpotSpec:
    config = ""
    if args.sfr_config_file is not None:
        if args.sfr_config_file == "-" and not args.yes:
            raise BadInputError("-aws-spot-fleet-config-file: reading the config from stdin "
                                "leaves no answer for the confirmation; add -yes")
        config = read_spot_fleet_config(args.sfr_config_file)
    default_user_data = None
    if args.user_data is not None or args.user_data_file is not None:
        user_data(args)   # the same checks as on-demand
    elif args.default_user_data is not None or args.default_user_data_file is not None:
        default_user_data = user_data(args)
    return SpotSpec(api=SPOT_API_SPOT_FLEET, fleet_type="request", spot_fleet_config=config,
                    default_user_data=default_user_data)


def create_spec(args: ClassicArgs) -> tuple[AnnexSpec, SpotSpec | None]:
    """The create request of ``-annex-name N -count K`` / ``-slots W``: the annex's spec (for
    a spot fleet ``count`` is its weighted capacity) and the spot fleet's settings (None for
    on-demand instances).

    Raises:
        BadInputError: one line naming the flag and the fix.
    """
    from condor_annex.cli import parse
    if args.annex_name is None:
        flag, size = ("-slots", "4") if args.slots is not None else ("-count", "2")
        raise BadInputError(f"-annex-name: starting an annex needs a name, e.g. -annex-name "
                            f"my-annex {flag} {size}")
    name = validate_annex_name(args.annex_name, "-annex-name")
    spot = _is_spot(args)
    if spot and args.slots is None:
        raise BadInputError("-aws-spot-fleet: give the fleet's weighted capacity, e.g. -slots 4")
    count = parse.count(args.slots or "", "-slots") if spot else \
        parse.count(args.count or "", "-count")
    lease = hours(args.duration, "-duration") if args.duration is not None \
        else DEFAULT_LEASE_SECONDS
    idle = hours(args.idle, "-idle") if args.idle is not None else DEFAULT_IDLE_SECONDS
    if args.owner is not None and args.no_owner:
        raise BadInputError("-no-owner: cannot be combined with -owner; give one of them")
    who: tuple[str, ...] = ()
    if not args.no_owner:
        who = owners(args.owner) if args.owner is not None else (getpass.getuser(),)
    instance_type = validate.instance_type(
        DEFAULT_INSTANCE_TYPE if args.instance_type is None else args.instance_type,
        "-aws-on-demand-instance-type")
    image_id = validate.image_id(args.image_id, "-aws-on-demand-ami-id") \
        if args.image_id is not None else ""
    spot_spec = _spot_spec(args) if spot else None
    # For a spot fleet, only -aws-user-data[-file] replaces every launch specification's user
    # data; the -default forms fill the specifications without any (SpotSpec.default_user_data).
    data = user_data(args) if spot_spec is None or spot_spec.default_user_data is None else None
    spec = AnnexSpec(name=name, count=count, lease_seconds=lease, idle_seconds=idle,
                     instance_type=instance_type, image_id=image_id, owners=who,
                     tags=tags(args.tags), user_data=data,
                     lease_explicit=args.duration is not None,
                     image_id_flag="-aws-on-demand-ami-id", user_data_flag=data_flag(args),
                     config_files=read_config_dir(args.config_dir, "-config-dir")
                     if args.config_dir is not None else ())
    return spec, spot_spec
