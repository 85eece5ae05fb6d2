"""Problem families: each kind draws numbers, records them, solves exactly and tells the story.

A kind is a function `(Draft) -> (question, answer)`; `KINDS[family][kind] = (levels, function)`.
Every kind's formula is fixed by its name (the tests re-derive answers from `quantities` alone);
the difficulty level only adds terms or grows the numbers. Wording is picked from several setups
and several questions per kind, so two problems of the same kind rarely read alike.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from reasoning_dspy.problems import chains, counts, money, rates
from reasoning_dspy.problems.base import Draft

KindFn = Callable[[Draft], tuple[str, Fraction]]

ALL = (1, 2, 3)
KINDS: dict[str, dict[str, tuple[tuple[int, ...], KindFn]]] = {
    "arithmetic": {
        "shopping_total": (ALL, money.shopping_total), "change": (ALL, money.change), "savings": (ALL, money.savings),
    },
    "rates": {
        "distance": (ALL, rates.distance), "travel_hours": ((1, 2), rates.travel_hours), "travel_minutes": ((2, 3), rates.travel_minutes),
        "round_trip_hours": ((3,), rates.round_trip_hours), "unit_price": (ALL, rates.unit_price),
        "work_together": (ALL, rates.work_together), "production_count": (ALL, rates.production_count),
        "production_time": (ALL, rates.production_time),
    },
    "comparison": {
        "difference": (ALL, counts.difference), "more_than_total": ((1, 2), counts.more_than_total),
        "chain_difference": ((3,), counts.chain_difference), "times_split": (ALL, counts.times_split),
        "ratio_share": (ALL, counts.ratio_share), "times_as_many": ((1, 2), counts.times_as_many),
    },
    "conversion": {
        "hours_to_minutes": ((1, 2), counts.hours_to_minutes), "minutes_to_hours": (ALL, counts.minutes_to_hours),
        "cm_to_m": (ALL, counts.cm_to_m), "m_to_cm": ((1, 2), counts.m_to_cm), "rope_left": ((2, 3), counts.rope_left),
        "g_to_kg": (ALL, counts.g_to_kg), "kg_into_portions": ((2, 3), counts.kg_into_portions),
        "dozens_left": (ALL, counts.dozens_left), "items_to_dozens": ((2, 3), counts.items_to_dozens),
    },
    "counting": {
        "equal_groups": (ALL, counts.equal_groups), "leftover": ((2, 3), counts.leftover), "groups_needed": ((2, 3), counts.groups_needed),
        "grid_count": (ALL, counts.grid_count), "outfits": (ALL, counts.outfits), "handshakes": ((3,), counts.handshakes),
        "legs": (ALL, counts.legs),
    },
    "percent": {
        "percent_of": (ALL, money.percent_of), "discount": (ALL, money.discount), "percent_increase": ((2, 3), money.percent_increase),
        "percent_change": ((2, 3), money.percent_change), "score_percent": ((1, 2), money.score_percent),
    },
    # Integer stories of 2-4 bounded steps (the reasoner's curriculum); asked for by name, not in the default mix.
    "chains": {"story": (ALL, chains.chain_story)},
}
#: The families `make_problems` cycles through by default.
FAMILIES: tuple[str, ...] = tuple(f for f in KINDS if f != "chains")
