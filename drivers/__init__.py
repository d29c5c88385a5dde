"""The hardware layer: one driver per device, built on gpiozero and pyserial.

This package imports nothing from labrt, so drivers can be used and tested on their own.
"""

from __future__ import annotations

import glob


def gpio_chips() -> list[str]:
    """The GPIO character devices of this machine (empty on a laptop)."""
    return sorted(glob.glob("/dev/gpiochip*"))
