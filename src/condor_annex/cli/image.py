"""``image build [--image NAME] [--instance-type T] [--no-record] [--json]``: a prepared image."""

from __future__ import annotations

from condor_annex.cli import render
from condor_annex.model import DEFAULT_INSTANCE_TYPE


def add_verb(sub) -> None:
    """Register ``image`` (with its one action, ``build``) on an argparse sub-parser set."""
    p = sub.add_parser("image", help="prepared images: the bootstrap's install step baked in")
    actions = p.add_subparsers(dest="image_action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="launch a builder from a stock image, install "
                                         "HTCondor and the agent, image it, terminate it, and "
                                         "make the image the default (ANNEX_DEFAULT_ODI_IMAGE_ID)")
    b.add_argument("--image", default="", metavar="NAME",
                   help="stock image to start from (default debian-13)")
    b.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE,
                   help="the builder's type; its architecture is the image's "
                        "(default %(default)s)")
    b.add_argument("--timeout", default="30m", metavar="DURATION",
                   help="give up (terminating the builder) after this long, e.g. 30m "
                        "(default %(default)s)")
    b.add_argument("--no-record", action="store_true",
                   help="do not set ANNEX_DEFAULT_ODI_IMAGE_ID to the new image")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=cmd_image_build)


def cmd_image_build(args) -> int:
    """Build the image with a progress line on stderr; print its id (``--json``: a dict)."""
    from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

    from condor_annex import validate
    from condor_annex.service.context import Context
    from condor_annex.service.image_build import build_image
    instance_type = validate.instance_type(args.instance_type, "--instance-type")
    timeout_s = validate.duration(args.timeout, "--timeout", unit_required=True)
    ctx = Context.load()
    with Progress(SpinnerColumn(), "[progress.description]{task.description}",
                  TimeElapsedColumn(), console=render.err_console, transient=True) as bar:
        task = bar.add_task("image build: launching the builder", total=None)

        def show(phase: str, elapsed: float) -> None:
            what = {"booting": "builder installing HTCondor and the agent",
                    "imaging": "CreateImage"}.get(phase, phase)
            bar.update(task, description=f"image build: {what}")

        built = build_image(ctx, image_name=args.image, instance_type=instance_type,
                            record=not args.no_record, timeout_s=timeout_s, progress=show)
    data = {"image_id": built.image_id, "name": built.name,
            "source_image_id": built.source_image_id,
            "builder_instance_id": built.builder_instance_id,
            "build_s": round(built.build_s, 1), "recorded": not args.no_record}
    text = (f"Built {built.image_id} ({built.name}) from {built.source_image_id} in "
            f"{built.build_s:.0f} s; builder {built.builder_instance_id} terminated."
            + ("\nANNEX_DEFAULT_ODI_IMAGE_ID is now " + built.image_id
               if not args.no_record else ""))
    render.emit(data, args.json, text)
    return 0
