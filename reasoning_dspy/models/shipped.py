"""The models that ship inside this package, and what ships beside each: one registry.

Each shipped model lives in `reasoning_dspy/data/<name>/`: a LoRA adapter that loads by name
(`load_model("smollm2-reasoner")`), and, when its study has been run and shipped, the SAE trained on
its residual stream with the ReasonScore table and recommended steering in `sae/`
(`load_sae("smollm2-reasoner")`). The adapter loader, the SAE loader, `reasoner ship`, the demo and
the dashboard all read this table, so a model is named here once.

    >>> SHIPPED["smollm2-reasoner"].has_sae
    True
    >>> shipped_names(sae=True)
    ('smollm2-reasoner',)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class ShippedModel:
    """A model shipped in the package: its name, whether its SAE ships beside it, the command that
    rebuilds its adapter from the repository alone (quoted in errors about missing files), the
    problem families it was trained on (None: all of them) and the tokens one of its traces needs."""

    name: str
    has_sae: bool
    rebuild: str
    families: tuple[str, ...] | None = None
    max_tokens: int = 192


SHIPPED: dict[str, ShippedModel] = {m.name: m for m in (
    # SmolLM2 whose checks compute: each step checked by a digit-level recomputation (docs/reasoner.md)
    ShippedModel("smollm2-reasoner", has_sae=True,
                 rebuild="reasoning-dspy reasoner train experiments/configs/reasoner-smollm2.yaml",
                 families=("chains",), max_tokens=448),  # a checked four-step trace ends within ≈ 400 tokens
)}


def shipped_names(*, sae: bool = False) -> tuple[str, ...]:
    """The shipped model names; with `sae=True`, only those whose SAE ships too."""
    return tuple(name for name, model in SHIPPED.items() if model.has_sae or not sae)


def package_folder(name: str = "smollm2-reasoner") -> Path:
    """Where a shipped model's files live inside the installed package."""
    return Path(str(resources.files("reasoning_dspy") / "data" / name))
