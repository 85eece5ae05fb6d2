"""The steering an SAE folder recommends (`steering.json`, written when a study ships the SAE)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from reasoning_dspy.steering.spec import SteeringError, SteeringSpec


def recommended_steering(sae: str | os.PathLike) -> SteeringSpec:
    """The steering an SAE folder recommends in its `steering.json` (a shipped SAE by name, e.g.
    "smollm2-reasoner", recommends what its study measured to work best; see `reasoner.ship`)."""
    from reasoning_dspy.sae.io import SHIPPED_SAES, shipped_sae_folder

    folder = shipped_sae_folder(str(sae)) if str(sae) in SHIPPED_SAES and not Path(sae).exists() else Path(sae)
    path = folder / "steering.json"
    if not path.is_file():
        raise SteeringError(f"{str(folder)!r} recommends no steering: steering.json is missing "
                            "(`reasoning-dspy reasoner ship --study` writes it)")
    try:
        return SteeringSpec.model_validate(json.loads(path.read_text())["steering"])
    except (ValueError, KeyError, TypeError) as err:
        raise SteeringError(f"{path} does not hold a recommended steering spec ({err})") from None
