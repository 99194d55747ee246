"""``create --spot --max-price USD`` (issue 12 item 5): the most a Spot annex pays per hour for
one unit of its capacity (an instance of weight 1).

EC2 takes it as a string of USD per unit-hour: ``MaxPrice`` of each launch template override
of an EC2 Fleet (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_FleetLaunchTemplateOverridesRequest.html:
"The maximum price per unit hour that you are willing to pay for a Spot Instance ... If you
specify a maximum price, it must be more than USD $0.001"); ``SpotPrice`` of a Spot Fleet
request (the classic ``-aws-spot-fleet-config-file`` carries its own); ``InstanceMarketOptions.
SpotOptions.MaxPrice`` of RunInstances (not used: on-demand annexes launch there).  Without
it, AWS caps the price at the On-Demand price.  A Spot instance is billed at the Spot price,
never at the maximum: a maximum above the On-Demand price is accepted without a warning (it
only means the annex is never interrupted for price).
"""

from __future__ import annotations

import re
from decimal import Decimal

from condor_annex import validate
from condor_annex.errors import BadInputError

#: EC2's floor: a maximum price must be more than this, USD per unit-hour.
MIN_EXCLUSIVE_USD = Decimal("0.001")
#: Largest value accepted, USD per unit-hour (a typo guard: the dearest instance types cost
#: about $100 an hour On-Demand).
MAX_USD = Decimal("1000")
_PRICE_RE = re.compile(r"[0-9]{1,4}(\.[0-9]{1,6})?|\.[0-9]{1,6}")


def parse_max_price(text: str, flag: str = "--max-price") -> str:
    """``--max-price``: ASCII digits with at most one decimal point (at most 6 decimals), no
    sign, exponent, ``$`` or spaces; more than $0.001 and at most :data:`MAX_USD`.

    Returns:
        the price as EC2 takes it (a decimal string, e.g. ``"0.05"``).

    Raises:
        BadInputError: naming ``flag`` (negative, zero, too small, NaN, inf, non-numeric, too
            large), one line with an example.
    """
    shown = validate.shown(text, 40)
    example = f"e.g. {flag} 0.05"
    usd = Decimal(validate.dollars(
        text, flag, _PRICE_RE, negative="a maximum Spot price is in US dollars per hour, more "
        f"than 0.001, {example}", not_amount=" per hour; give digits with at most one decimal "
        f"point, {example}"))
    if usd <= MIN_EXCLUSIVE_USD:
        raise BadInputError(f"{flag}: {shown} is not more than $0.001 per hour, the least EC2 "
                            f"takes; {example}")
    if usd > MAX_USD:
        raise BadInputError(f"{flag}: {shown} is more than ${MAX_USD} per hour (a typo?); "
                            f"{example}")
    return format(usd.normalize(), "f")
