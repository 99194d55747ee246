"""``condor_annex image build``: bake the bootstrap's install step into a prepared image.

Resolves the stock image the way ``create`` does (``--image NAME``, default ``debian-13``),
renders the *build* bootstrap (install, fetch the agent, install its unit, power off), has
:func:`condor_annex.providers.aws.image_builder.build_image` launch the builder, image it and
terminate it, then records the new AMI as ``ANNEX_DEFAULT_ODI_IMAGE_ID`` in the user's config
(the block ``image``), so the next ``create`` without ``--image``/``--image-id`` boots from it.
"""

from __future__ import annotations

from collections.abc import Callable

from condor_annex import __version__, config
from condor_annex.errors import BadInputError
from condor_annex.service.context import Context

#: The user-config block ``image build`` writes (``ANNEX_DEFAULT_ODI_IMAGE_ID``).
CONFIG_BLOCK = "image"


def build_image(ctx: Context, *, image_name: str = "", instance_type: str,
                record: bool = True, timeout_s: float = 1800.0,
                progress: Callable[[str, float], None] | None = None):
    """Build a prepared image from a stock image and (with ``record``) make it the default.

    Args:
        ctx: the command's context (setup must have run: the builder uses setup's instance
            profile, security group and bucket).
        image_name: the stock image's name (``--image``; "" = ``debian-13``).  Default images
            configured as ``ANNEX_DEFAULT_ODI_IMAGE_ID`` are not used: a build starts from a
            distribution's own image.
        instance_type: the builder's instance type (``--instance-type``).
        record: write ``ANNEX_DEFAULT_ODI_IMAGE_ID`` to the user config.
        timeout_s: seconds before the build is given up (the builder is terminated).
        progress: called with a phase and the seconds elapsed (see ``build_image``).

    Returns:
        :class:`~condor_annex.providers.aws.image_builder.BuiltImage`.

    Raises:
        BadInputError: unknown or unsupported image name, a prepared image given as the source,
            architecture mismatch, no agent in the bucket, bad knobs; nothing created.
        ProviderError: the build failed (the builder is terminated).
    """
    from condor_annex.providers.aws.bootstrap import render_bootstrap
    from condor_annex.providers.aws.image_builder import build_image as bake
    from condor_annex.providers.aws.images import refuse_unsupported, resolve_image
    from condor_annex.service.launch_image import knobs_for_instances, require_agent

    outputs = ctx.setup_outputs()
    endpoint, repo = knobs_for_instances(ctx)
    image = resolve_image(ctx.aws, instance_type=instance_type, name=image_name or "",
                          name_flag="--image")
    refuse_unsupported(image)
    if image.prepared:
        raise BadInputError(f"--image: {image.image_id} is already a prepared image "
                            f"(htcondor:AnnexImage={image.prepared_version}); build from a "
                            "stock image, e.g. --image debian-13")
    key = require_agent(ctx, outputs)
    user_data = render_bootstrap(region=ctx.aws.region, bucket=outputs.bucket, agent_key=key,
                                 version=__version__, endpoint_url=endpoint,
                                 htcondor_repo=repo, build=True,
                                 distribution=image.distribution or "debian")
    built = bake(ctx.aws, outputs, source_image_id=image.image_id,
                 source_name=image.name or image.image_id, instance_type=instance_type,
                 user_data=user_data, version=__version__, progress=progress,
                 notify=ctx.notify, timeout_s=timeout_s)
    if record:
        config.write_block(CONFIG_BLOCK, {"ANNEX_DEFAULT_ODI_IMAGE_ID": built.image_id})
    return built
