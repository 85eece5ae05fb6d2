"""Comparisons, unit conversions and counting."""

from __future__ import annotations

from fractions import Fraction

from reasoning_dspy.problems.base import Draft, Retry, fmt, is_plain_decimal
from reasoning_dspy.problems.story import join_words, say
from reasoning_dspy.problems.words import (
    COLLECTIONS,
    EIGHT_LEGGED,
    FOUR_LEGGED,
    GARMENTS,
    GROUPINGS,
    MEALS,
    TWO_LEGGED,
    person,
)


# -- comparisons -----------------------------------------------------------------------------
def difference(d: Draft) -> tuple[str, Fraction]:
    a = person(d.rng)
    b = person(d.rng, other_than=(a.name,))
    things = d.pick(COLLECTIONS)
    top = (50, 500, 5000)[d.level - 1]
    second = d.q("second", d.between(3, top))
    first = d.q("first", second + d.between(1, top))
    text = say(d, ("{a} has {x} {t} and {b} has {y}.", "{a} collected {x} {t}; {b} collected {y}.",
                   "in {a}'s box there are {x} {t}, and in {b}'s there are {y}."),
               a=a.name, b=b.name, x=fmt(first), y=fmt(second), t=things)
    ask = d.pick(("How many more {t} does {a} have than {b}?", "How many fewer {t} does {b} have than {a}?",
                  "What is the difference between their numbers of {t}?"))
    return f"{text} {ask.format(t=things, a=a.name, b=b.name)}", d.step(first, "-", second)


def more_than_total(d: Draft) -> tuple[str, Fraction]:
    a = person(d.rng)
    b = person(d.rng, other_than=(a.name,))
    things = d.pick(COLLECTIONS)
    first = d.q("first", d.between(10, 60 if d.level == 1 else 400))
    if d.rng.random() < 0.5:
        gap = d.q("extra", d.between(2, 50))
        other = d.step(first, "+", gap)
        rel = f"{b.name} has {gap} more than {a.name}."
    else:
        gap = d.q("fewer", d.between(1, int(first) - 1))
        other = d.step(first, "-", gap)
        rel = f"{b.name} has {gap} fewer than {a.name}."
    text = say(d, ("{a} owns {x} {t}.", "{a} has a collection of {x} {t}.", "there are {x} {t} on {a}'s shelf."),
               a=a.name, x=first, t=things)
    ask = d.pick(("How many {t} do they have altogether?", "How many {t} do the two of them have in total?"))
    return f"{text} {rel} {ask.format(t=things)}", d.step(first, "+", other)


def chain_difference(d: Draft) -> tuple[str, Fraction]:
    a = person(d.rng)
    b = person(d.rng, other_than=(a.name,))
    c = person(d.rng, other_than=(a.name, b.name))
    things = d.pick(COLLECTIONS)
    first = d.q("first", d.between(4, 40))
    factor = d.q("factor", d.between(2, 5))
    fewer = d.q("fewer", d.between(1, int(first * (factor - 1)) - 1))
    cs = d.step(d.step(first, "*", factor), "-", fewer)
    times = "twice" if factor == 2 else f"{factor} times"
    text = (f"{a.name} has {first} {things}. {b.name} has {times} as many {things} as {a.name}, "
            f"and {c.name} has {fewer} fewer than {b.name}.")
    return text + " " + d.pick(("How many more {t} does {c} have than {a}?",
                                "By how many {t} does {c}'s collection beat {a}'s?")).format(
        t=things, c=c.name, a=a.name), d.step(cs, "-", first)


def times_split(d: Draft) -> tuple[str, Fraction]:
    a = person(d.rng)
    b = person(d.rng, other_than=(a.name,))
    things = d.pick(COLLECTIONS)
    factor = d.q("factor", d.between(2, 4 if d.level == 1 else 9))
    small = d.between(3, 30 if d.level == 1 else 200)
    total = d.q("total", small * (factor + 1))
    times = "twice" if factor == 2 else f"{factor} times"
    text = say(d, ("{a} has {times} as many {t} as {b}. Together they have {n}.",
                   "together, {a} and {b} own {n} {t}, and {a} has {times} as many as {b}."),
               a=a.name, b=b.name, t=things, times=times, n=fmt(total))
    return text + " " + f"How many {things} does {b.name} have?", d.step(total, "/", d.step(factor, "+", 1))


def ratio_share(d: Draft) -> tuple[str, Fraction]:
    n = 2 if d.level < 3 else 3
    ratio = [d.q(f"ratio_{i}", d.between(1, 9)) for i in range(1, n + 1)]
    parts = ratio[0]
    for r in ratio[1:]:
        parts = d.step(parts, "+", r)
    total = d.q("total", parts * d.between(2, 20 if d.level == 1 else 90))
    ratio_text = ":".join(str(r) for r in ratio)
    a = person(d.rng)
    b = person(d.rng, other_than=(a.name,))
    things = d.pick(COLLECTIONS)
    if n == 2:
        setup = d.pick(("In a club of {n} members, the ratio of adults to children is {r}. How many children are there?",
                        "{a} and {b} share {n} {t} in the ratio {r}. How many {t} does {b} get?",
                        "A bag holds {n} red and blue beads in the ratio {r}. How many beads are blue?",
                        "{n} {t} are split between {a} and {b} so that their shares are in the ratio {r}. "
                        "What is {b}'s share?"))
    else:
        c = person(d.rng, other_than=(a.name, b.name))
        setup = d.pick(("{n} dollars are split among {a}, {b} and {c} in the ratio {r}. How much does {c} get?",
                        "A farm has {n} chickens, ducks and geese in the ratio {r}. How many geese are there?",
                        "{a}, {b} and {c} divide {n} {t} in the ratio {r}. How many {t} go to {c}?"))
        setup = setup.replace("{c}", c.name)
    return setup.format(n=fmt(total), r=ratio_text, a=a.name, b=b.name, t=things), d.step(d.step(total, "/", parts), "*", ratio[-1])


def times_as_many(d: Draft) -> tuple[str, Fraction]:
    a = person(d.rng)
    b = person(d.rng, other_than=(a.name,))
    things = d.pick(COLLECTIONS)
    smaller = d.q("smaller", d.between(2, 20 if d.level == 1 else 150))
    larger = d.q("larger", smaller * d.between(2, 12))
    text = say(d, ("{a} has {x} {t} and {b} has {y}.", "{b} owns {y} {t}, while {a} owns {x}."),
               a=a.name, b=b.name, x=fmt(larger), y=fmt(smaller), t=things)
    return text + " " + d.pick(("How many times as many {t} does {a} have as {b}?",
                                "{a}'s collection is how many times the size of {b}'s?")).format(
        t=things, a=a.name, b=b.name), d.step(larger, "/", smaller)


# -- unit conversions ------------------------------------------------------------------------
def hours_to_minutes(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    hours = d.q("hours", d.between(1, 5 if d.level == 1 else 12))
    total = d.step(hours, "*", 60)
    activity = d.pick(("practises the piano", "studies", "hikes", "volunteers at the shelter", "reads", "swims"))
    if d.level >= 2:
        minutes = d.q("minutes", d.between(5, 55, 5))
        total = d.step(total, "+", minutes)
        span = f"{hours} hours and {minutes} minutes"
    else:
        span = f"{hours} hours"
    text = say(d, ("{name} {act} for {span}.", "on Saturday, {name} {act} for {span}."), name=p.name, act=activity, span=span)
    return text + " " + d.pick(("How many minutes is that?", "How many minutes in total is that?")), total


def minutes_to_hours(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    minutes = d.q("minutes", d.between(15, 600 if d.level == 1 else 95, 15 if d.level == 1 else 5))
    total = minutes
    if d.level >= 2:
        count = d.q("count", d.between(2, 12))
        total = d.step(count, "*", minutes)
        text = say(d, ("{name} goes to {n} lessons that each last {m} minutes.",
                       "{name} does {n} workouts of {m} minutes each."), name=p.name, n=count, m=minutes)
    else:
        text = say(d, ("a film lasts {m} minutes.", "{name}'s shift is {m} minutes long."), name=p.name, m=minutes)
    hours = d.step(total, "/", 60)
    if not is_plain_decimal(hours):
        raise Retry
    return text + " " + d.pick(("How many hours is that?", "How long is that in hours?")), hours


def cm_to_m(d: Draft) -> tuple[str, Fraction]:
    length = d.q("length_cm", d.between(20, 900, 5 if d.level == 1 else 1))
    total = length
    thing = d.pick(("ribbon", "rope", "shelf board", "curtain rod", "strip of fabric", "pipe"))
    if d.level >= 2:
        count = d.q("count", d.between(2, 9))
        total = d.step(count, "*", length)
        text = f"Each {thing} is {length} cm long, and there are {count} of them laid end to end."
    else:
        text = f"A {thing} is {length} cm long."
    metres = d.step(total, "/", 100)
    return text + " " + d.pick(("How many metres is that?", "What is the length in metres?")), metres


def m_to_cm(d: Draft) -> tuple[str, Fraction]:
    metres = d.q("length_m", d.between(2, 40) if d.level == 1 else d.between(2, 80) + Fraction(d.pick((1, 2, 3)), 4))
    thing = d.pick(("garden hose", "fence", "climbing rope", "running track lane", "banner"))
    return (f"The {thing} measures {fmt(metres)} m. "
            + d.pick(("How many centimetres long is it?", "What is its length in centimetres?")),
            d.step(metres, "*", 100))


def rope_left(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    metres = d.q("length_m", d.between(2, 20))
    piece = d.q("length_cm", d.between(10, 90, 5))
    total = d.step(metres, "*", 100)
    pieces = d.q("count", d.between(1, int(total // piece)))
    cut = d.step(pieces, "*", piece)
    thing = d.pick(("rope", "ribbon", "wire", "yarn"))
    text = say(d, ("{name} has {m} m of {t} and cuts off {n} pieces of {c} cm each.",
                   "from a {m} m roll of {t}, {name} cuts {n} pieces, each {c} cm long."),
               name=p.name, m=metres, t=thing, n=pieces, c=piece)
    return text + " " + d.pick(("How many centimetres are left?", "How much is left over, in cm?")), d.step(total, "-", cut)


def g_to_kg(d: Draft) -> tuple[str, Fraction]:
    grams = d.q("grams", d.between(50, 900, 50 if d.level == 1 else 25))
    thing = d.pick(("bag of flour", "jar of jam", "block of cheese", "box of cereal", "tin of beans", "pack of coffee"))
    total = grams
    if d.level >= 2:
        count = d.q("count", d.between(2, 16))
        total = d.step(count, "*", grams)
        text = f"One {thing} weighs {grams} g. A crate holds {count} of them."
        ask = "How many kilograms do they weigh together?"
    else:
        text, ask = f"A {thing} weighs {grams} grams.", "What is that in kilograms?"
    kg = d.step(total, "/", 1000)
    if not is_plain_decimal(kg, 3):
        raise Retry
    return f"{text} {ask}", kg


def kg_into_portions(d: Draft) -> tuple[str, Fraction]:
    grams = d.q("grams", d.pick((100, 125, 200, 250, 500, 50, 40, 80)))
    kg = d.q("kilograms", d.between(1, 12 if d.level == 2 else 40))
    portions = d.step(d.step(kg, "*", 1000), "/", grams)
    if portions.denominator != 1:
        raise Retry
    stuff = d.pick(("rice", "sugar", "dog food", "nuts", "coffee beans", "clay"))
    text = say(d, ("a shop has {k} kg of {s} and packs it into bags of {g} g.",
                   "{k} kilograms of {s} are divided into {g} gram portions."), k=kg, s=stuff, g=grams)
    return text + " " + d.pick(("How many bags does it fill?", "How many portions are there?")), portions


def dozens_left(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    dozens = d.q("dozens", d.between(1, 4 if d.level == 1 else 15))
    items = d.step(dozens, "*", 12)
    food = d.pick(("eggs", "bagels", "doughnuts", "cookies", "roses", "muffins"))
    text = say(d, ("{name} buys {n} dozen {f}.", "a crate holds {n} dozen {f}."), name=p.name, n=dozens, f=food)
    if d.level == 1:
        return text + f" How many {food} is that?", items
    used = d.q("used", d.between(1, int(items) - 1))
    verb = d.pick(("{used} are used for a recipe", "{used} get eaten at a party", "{used} are given away"))
    return (f"{text} Then {verb.format(used=used)}. How many {food} are left?"), d.step(items, "-", used)


def items_to_dozens(d: Draft) -> tuple[str, Fraction]:
    items = d.q("items", 12 * d.between(2, 20 if d.level == 2 else 80))
    food = d.pick(("eggs", "pencils", "roses", "oysters", "cupcakes"))
    return (say(d, ("a farm collects {n} {f}.", "there are {n} {f} in the storeroom."), n=fmt(items), f=food)
            + " " + d.pick(("How many dozen is that?", "How many dozens can be packed?")), d.step(items, "/", 12))


# -- counting --------------------------------------------------------------------------------
def equal_groups(d: Draft) -> tuple[str, Fraction]:
    things, groups = d.pick(GROUPINGS)
    size = d.q("group_size", d.between(2, 12 if d.level == 1 else 25))
    total = d.q("total", size * d.between(2, 15 if d.level == 1 else 60))
    text = say(d, ("{n} {t} are put into {g} of {s}.", "there are {n} {t}, arranged in {g} of {s} each.",
                   "a volunteer sorts {n} {t} into {g}, {s} in each.", "{n} {t} need packing, {s} to a group."),
               n=fmt(total), t=things, g=groups, s=size)
    return text + " " + d.pick(("How many {g} are there?", "How many {g} does that make?")).format(g=groups), \
        d.step(total, "/", size)


def leftover(d: Draft) -> tuple[str, Fraction]:
    things, groups = d.pick(GROUPINGS)
    size = d.q("group_size", d.between(3, 15 if d.level == 2 else 40))
    total = d.q("total", size * d.between(2, 30) + d.between(1, int(size) - 1))
    text = say(d, ("{n} {t} are shared into {g} of {s}, with only full {g} allowed.",
                   "a teacher puts {n} {t} into {g} of exactly {s}."), n=fmt(total), t=things, g=groups, s=size)
    return text + " " + d.pick(("How many {t} are left over?", "How many {t} do not fit?")).format(t=things), \
        d.step(total, "mod", size)


def groups_needed(d: Draft) -> tuple[str, Fraction]:
    seats = d.q("group_size", d.between(4, 12 if d.level == 2 else 60))
    people = d.q("total", seats * d.between(2, 20) + d.between(1, int(seats) - 1))
    vehicle = d.pick(("vans", "boats", "taxis", "cable cars", "minibuses"))
    return (say(d, ("{n} people are going on a trip, and {v} hold {s} people each.",
                    "each of the {v} seats {s}, and {n} hikers need a ride."), n=fmt(people), v=vehicle, s=seats)
            + f" How many {vehicle} are needed so that everyone gets a seat?", d.step(people, "ceildiv", seats))


def grid_count(d: Draft) -> tuple[str, Fraction]:
    place = d.pick(("cinema", "lecture hall", "theatre", "school hall", "stadium section", "orchard"))
    unit = "trees" if place == "orchard" else "seats"
    rows = d.q("rows", d.between(3, 12 if d.level == 1 else 40))
    per = d.q("per_row", d.between(4, 15 if d.level == 1 else 30))
    total = d.step(rows, "*", per)
    text = say(d, ("{art} {place} has {r} rows with {p} {u} in each row.", "the {place} is laid out in {r} rows of {p} {u}.",
                   "there are {r} rows in the {place}, each with {p} {u}."),
               art="an" if place[0] in "aeiou" else "a", place=place, r=rows, p=per, u=unit)
    if d.level == 3:
        rows2 = d.q("rows_2", d.between(2, 10))
        per2 = d.q("per_row_2", d.between(4, 20))
        total = d.step(total, "+", d.step(rows2, "*", per2))
        text += f" A newer part adds {rows2} rows of {per2}."
    if d.level >= 2:
        taken = d.q("taken", d.between(1, int(total) - 1))
        total = d.step(total, "-", taken)
        text += " " + (f"{taken} of the {unit} are taken." if unit == "seats" else f"{taken} of the trees are cut down.")
        return text + f" How many {unit} are {'free' if unit == 'seats' else 'left'}?", total
    return text + f" How many {unit} are there in total?", total


def outfits(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    kinds = d.pick(GARMENTS + MEALS)
    n = 2 if d.level == 1 else 3
    counts = [d.q(f"options_{i}", d.between(2, 6 if d.level < 3 else 12)) for i in range(1, n + 1)]
    total = counts[0]
    for c in counts[1:]:
        total = d.step(total, "*", c)
    listing = join_words([f"{c} {k}" for c, k in zip(counts, kinds, strict=False)])
    pick = "one of each" if n == 3 else "one of each kind"
    return (say(d, ("{name} has {l}.", "a menu offers {l}."), name=p.name, l=listing)
            + f" Choosing {pick}, how many different combinations are possible?", total)


def handshakes(d: Draft) -> tuple[str, Fraction]:
    people = d.q("people", d.between(4, 40))
    text = d.pick(("At a meeting of {n} people, everyone shakes hands with everyone else once. How many handshakes are there?",
                   "In a chess club of {n} players, every player plays every other player exactly once. How many games are played?",
                   "{n} friends at a party each give every other friend one high-five. How many high-fives happen?"))
    return text.format(n=people), d.step(d.step(people, "*", d.step(people, "-", 1)), "/", 2)


def legs(d: Draft) -> tuple[str, Fraction]:
    two, four = d.pick(TWO_LEGGED), d.pick(FOUR_LEGGED)
    a = d.q("two_legged", d.between(2, 30))
    b = d.q("four_legged", d.between(2, 30))
    total = d.step(d.step(a, "*", 2), "+", d.step(b, "*", 4))
    text = say(d, ("a farm has {a} {two} and {b} {four}.", "in the yard there are {a} {two} and {b} {four}.",
                   "{a} {two} share a field with {b} {four}.", "a petting zoo keeps {b} {four} and {a} {two}."),
               a=a, b=b, two=two, four=four)
    if d.level == 3:
        c = d.q("eight_legged", d.between(2, 9))
        total = d.step(total, "+", d.step(c, "*", 8))
        text += f" The barn is also home to {c} {d.pick(EIGHT_LEGGED)}."
    return text + " " + d.pick(("How many legs are there in total?", "How many legs do all the animals have?",
                                "Counting every leg, what is the total?")), total
