"""Problem families: each kind draws numbers, records them, solves exactly and tells the story.

A kind is a function `(Draft) -> (question, answer)`; `KINDS[family][kind] = (levels, function)`.
Every kind's formula is fixed by its name (the tests re-derive answers from `quantities` alone);
the difficulty level only adds terms or grows the numbers. Wording is picked from several setups
and several questions per kind, so two problems of the same kind rarely read alike.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from reasoning_dspy.problems.base import Draft, Retry, fmt, is_plain_decimal, money
from reasoning_dspy.problems.words import (
    COLLECTIONS,
    EIGHT_LEGGED,
    FOUR_LEGGED,
    GARMENTS,
    GROUPINGS,
    ITEMS,
    JOBS,
    MACHINES,
    MEALS,
    SHOPS,
    TWO_LEGGED,
    VEHICLES,
    person,
)

KindFn = Callable[[Draft], tuple[str, Fraction]]


def say(d: Draft, templates: tuple[str, ...], **fields: object) -> str:
    text = d.pick(templates).format(**fields)
    return text[0].upper() + text[1:]


def _price(d: Draft, low: int, high: int) -> Fraction:
    """Whole dollars at level 1, quarters and halves above it."""
    whole = d.between(low, high)
    if d.level == 1 or d.rng.random() < 0.4:
        return Fraction(whole)
    return whole + Fraction(d.pick((25, 50, 75)), 100)


def _basket(d: Draft, n_types: int, max_count: int) -> tuple[list[str], Fraction]:
    """`n_types` different items with counts and prices; returns phrases and the exact total."""
    items = d.rng.sample(ITEMS, n_types)
    phrases, subtotals = [], []
    for i, (_, many, low, high) in enumerate(items, 1):
        count = d.q(f"count_{i}", d.between(2, max_count))
        price = d.q(f"price_{i}", _price(d, low, high))
        phrases.append(d.pick(("{n} {many} at {p} each", "{n} {many} for {p} each", "{n} {many} costing {p} apiece"))
                       .format(n=count, many=many, p=money(price)))
        subtotals.append(d.step(count, "*", price))
    total = subtotals[0]
    for s in subtotals[1:]:
        total = d.step(total, "+", s)
    return phrases, total


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# -- arithmetic ------------------------------------------------------------------------------
def shopping_total(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    phrases, total = _basket(d, 2 if d.level == 1 else 3, 6 if d.level < 3 else 12)
    extra = ""
    if d.level == 3:
        coupon = d.q("coupon", d.pick((2, 3, 5, 10)))
        if coupon >= total:
            raise Retry
        total = d.step(total, "-", coupon)
        extra = " " + d.pick(("At the till {they} uses a {c} coupon.", "A voucher takes {c} off the bill.",
                                "{name} has a coupon worth {c} off the whole purchase.")).format(
            they=p.they, c=money(coupon), name=p.name)
    setup = say(d, ("{name} buys {items} at {shop}.", "At {shop}, {name} picks up {items}.",
                    "{name} goes to {shop} and gets {items}.", "For a class party, {name} buys {items}."),
                name=p.name, items=_join(phrases), shop=d.pick(SHOPS))
    question = d.pick(("How much does {name} spend in total?", "How much does {they} pay altogether?",
                       "What is the total cost, in dollars?", "How many dollars does {name} pay?"))
    return f"{setup}{extra} {question.format(name=p.name, they=p.they)}", total


def change(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    phrases, total = _basket(d, d.level, 5 if d.level < 3 else 8)
    bills = [b for b in (5, 10, 20, 50, 100, 200) if b > total]
    if not bills:
        raise Retry
    paid = d.q("paid", d.pick(bills[:2]))
    setup = say(d, ("{name} buys {items} and pays with a {bill} bill.",
                    "{name} hands the cashier {bill} for {items}.",
                    "With a {bill} note, {name} pays for {items}."),
                name=p.name, items=_join(phrases), bill=money(paid))
    question = d.pick(("How much change does {they} get?", "How much change should {name} receive?",
                       "How many dollars does {name} get back?", "What change is {name} owed?"))
    return f"{setup} {question.format(name=p.name, they=p.they)}", d.step(paid, "-", total)


def savings(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    start = d.q("start", d.between(5, 60 if d.level < 3 else 300))
    weekly = d.q("weekly", d.between(3, 15 if d.level == 1 else 40))
    weeks = d.q("weeks", d.between(2, 8 if d.level == 1 else 15))
    total = d.step(start, "+", d.step(weekly, "*", weeks))
    lines = [say(d, ("{name} has {s} in a piggy bank and saves {w} every week for {k} weeks.",
                     "{name} starts with {s} and adds {w} a week to it for {k} weeks.",
                     "{name} already has {s} saved. Every week for {k} weeks, {they} puts away another {w}."),
                 name=p.name, s=money(start), w=money(weekly), k=weeks, they=p.they)]
    if d.level == 3:
        weekly2 = d.q("weekly_2", d.between(5, 50))
        weeks2 = d.q("weeks_2", d.between(2, 10))
        total = d.step(total, "+", d.step(weekly2, "*", weeks2))
        lines.append(d.pick(("After that, {they} saves {w} a week for {k} more weeks.",
                             "Then a summer job lets {them} save {w} each week for another {k} weeks."))
                     .format(they=p.they, them=p.them, w=money(weekly2), k=weeks2))
    if d.level >= 2:
        spent = d.q("spent", d.between(5, int(total) - 1))
        total = d.step(total, "-", spent)
        lines.append(d.pick(("Then {they} spends {c} on a {thing}.", "{Name} then buys a {thing} for {c}.",
                             "A {thing} costs {them} {c}."))
                     .format(they=p.they, them=p.them, Name=p.name, c=money(spent),
                             thing=d.pick(("bike helmet", "video game", "jacket", "concert ticket", "board game"))))
    question = d.pick(("How much money does {name} have now?", "How many dollars does {name} have at the end?",
                       "How much is left in {their} savings?"))
    return " ".join(lines) + " " + question.format(name=p.name, their=p.their), total


# -- rates -----------------------------------------------------------------------------------
def distance(d: Draft) -> tuple[str, Fraction]:
    vehicle, _, speeds = d.pick(VEHICLES)
    v1 = d.q("speed_1", d.pick(speeds))
    t1 = d.q("hours_1", d.between(1, 3 if d.level == 1 else 6))
    total = d.step(v1, "*", t1)
    text = say(d, ("a {v} travels at {s} km/h for {t} hours.", "a {v} keeps a steady {s} km/h for {t} hours.",
                   "for {t} hours, a {v} moves at {s} kilometres per hour."), v=vehicle, s=v1, t=t1)
    if d.level >= 2:
        v2 = d.q("speed_2", d.pick(speeds))
        t2 = d.q("hours_2", d.between(1, 4))
        total = d.step(total, "+", d.step(v2, "*", t2))
        text += " " + d.pick(("Then it goes {s} km/h for another {t} hours.",
                              "After a break it continues at {s} km/h for {t} more hours.")).format(s=v2, t=t2)
    if d.level == 3:
        whole = d.q("total_distance", int(total) + d.between(10, 200, 10))
        text = f"A trip is {whole} km long. " + text
        return text + " " + d.pick(("How many kilometres are still left to go?",
                                    "How far is it still from the end of the trip, in km?")), d.step(whole, "-", total)
    return text + " " + d.pick(("How far does it travel in total?", "How many kilometres does it cover?",
                                "What distance, in km, does it cover altogether?")), total


def travel_hours(d: Draft) -> tuple[str, Fraction]:
    vehicle, _, speeds = d.pick(VEHICLES)
    speed = d.q("speed", d.pick(speeds))
    dist = d.q("distance", speed * d.between(2, 8) * (d.pick((1, 2)) if d.level == 1 else Fraction(d.pick((1, 3, 5)), 2)))
    text = say(d, ("a {v} covers {dist} km at a steady {s} km/h.", "a {v} has to go {dist} km and averages {s} km/h.",
                   "the road to the coast is {dist} km, and a {v} travels it at {s} km/h."),
               v=vehicle, dist=fmt(dist), s=speed)
    question = d.pick(("How many hours does the trip take?", "How long does the journey take, in hours?"))
    return f"{text} {question}", d.step(dist, "/", speed)


def travel_minutes(d: Draft) -> tuple[str, Fraction]:
    vehicle, _, speeds = d.pick(VEHICLES)
    speed = d.q("speed", d.pick(speeds))
    dist = d.q("distance", d.between(2, 40 if d.level == 2 else 150))
    minutes = d.step(d.step(dist, "/", speed), "*", 60)
    if minutes.denominator != 1:
        raise Retry
    text = say(d, ("a {v} travels {dist} km at {s} km/h.", "at {s} km/h, a {v} covers a {dist} km stretch.",
                   "a {v} moving at {s} km/h has {dist} km to go."), v=vehicle, dist=dist, s=speed)
    return text + " " + d.pick(("How many minutes does that take?", "How long is that in minutes?")), minutes


def round_trip_hours(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    vehicle, _, speeds = d.pick(VEHICLES)
    s1, s2 = d.q("speed_1", d.pick(speeds)), d.q("speed_2", d.pick(speeds))
    dist = d.q("distance", d.between(10, 300, 10))
    there, back = d.step(dist, "/", s1), d.step(dist, "/", s2)
    if not (is_plain_decimal(there) and is_plain_decimal(back)):
        raise Retry
    text = say(d, ("{name} takes a {v} to a town {dist} km away at {s1} km/h and comes back at {s2} km/h.",
                   "by {v}, {name} goes {dist} km out at {s1} km/h and returns the same way at {s2} km/h."),
               name=p.name, v=vehicle, dist=dist, s1=s1, s2=s2)
    return text + " " + d.pick(("How many hours does the whole round trip take?",
                                "How long, in hours, is {they} on the road in total?")).format(they=p.they), \
        d.step(there, "+", back)


def unit_price(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    one, many, low, high = d.pick(ITEMS)
    count = d.q("count", d.between(2, 12))
    each = _price(d, low, high)
    total_price = d.q("total_price", count * each)
    text = say(d, ("{n} {many} cost {t}.", "a pack of {n} {many} sells for {t}.",
                   "{name} sees that {n} {many} cost {t} at {shop}."),
               n=count, many=many, t=money(total_price), name=p.name, shop=d.pick(SHOPS))
    per = d.step(total_price, "/", count)
    if d.level == 1:
        return text + " " + d.pick(("What is the price of one {one}?", "How much does a single {one} cost?",
                                    "What does each {one} cost?")).format(one=one), per
    buy = d.q("buy_count", d.between(count + 1, count + 10))
    answer = d.step(per, "*", buy)
    ask = d.pick(("At that price, how much would {b} {many} cost?", "How much do {b} {many} cost at the same rate?"))
    if d.level == 3:
        one2, many2, low2, high2 = d.pick([i for i in ITEMS if i[0] != one])
        count2 = d.q("count_2", d.between(2, 6))
        total2 = d.q("total_price_2", count2 * _price(d, low2, high2))
        buy2 = d.q("buy_count_2", d.between(1, 9))
        answer = d.step(answer, "+", d.step(d.step(total2, "/", count2), "*", buy2))
        text += f" Also, {count2} {many2} cost {money(total2)}."
        ask = f"How much do {buy} {many} and {buy2} {many2 if buy2 > 1 else one2} cost together?"
    return f"{text} {ask.format(b=buy, many=many)}", answer


def work_together(d: Draft) -> tuple[str, Fraction]:
    n = 2 if d.level < 3 else 3
    hours = [d.q(f"hours_{i}", d.between(2, 12 if d.level == 1 else 30)) for i in range(1, n + 1)]
    rates = [d.step(1, "/", h) for h in hours]
    rate = rates[0]
    for r in rates[1:]:
        rate = d.step(rate, "+", r)
    answer = d.step(1, "/", rate)
    if not is_plain_decimal(answer, 1):
        raise Retry
    people = []
    for _ in range(n):
        people.append(person(d.rng, other_than=tuple(x.name for x in people)))
    job = d.pick(JOBS)
    parts = [f"{people[0].name} can {job} in {hours[0]} hours"] + [
        d.pick(("{name} needs {h} hours", "{name} takes {h} hours", "{name} would need {h} hours"))
        .format(name=x.name, h=h) for x, h in zip(people[1:], hours[1:], strict=True)]
    text = _join(parts) + d.pick((" to do it alone.", " on their own.", "."))
    return text + " " + d.pick(("How many hours does it take if they all work together?",
                                "Working together, how long do they need, in hours?",
                                "If they share the work, how many hours will the job take?")), answer


def production_count(d: Draft) -> tuple[str, Fraction]:
    machine, things = d.pick(MACHINES)
    r1 = d.q("rate_1", d.between(2, 12 if d.level == 1 else 60))
    rate = r1
    text = say(d, ("a {m} makes {r} {t} per minute.", "every minute, a {m} turns out {r} {t}.",
                   "one {m} produces {r} {t} a minute."), m=machine, r=r1, t=things)
    if d.level >= 2:
        r2 = d.q("rate_2", d.between(2, 60))
        rate = d.step(r1, "+", r2)
        text += f" A second {machine} makes {r2} {things} per minute."
    minutes = d.q("time", d.between(5, 30 if d.level < 3 else 90))
    ask = ("How many {t} do both make together in {k} minutes?" if d.level >= 2
           else "How many {t} does it make in {k} minutes?")
    return f"{text} {ask.format(t=things, k=minutes)}", d.step(rate, "*", minutes)


def production_time(d: Draft) -> tuple[str, Fraction]:
    machine, things = d.pick(MACHINES)
    rates = [d.q("rate_1", d.between(2, 20 if d.level == 1 else 50))]
    if d.level >= 2:
        rates.append(d.q("rate_2", d.between(2, 50)))
    rate = rates[0] if len(rates) == 1 else d.step(rates[0], "+", rates[1])
    target = d.q("target", rate * d.between(3, 40))
    text = (f"A {machine} makes {rates[0]} {things} per minute"
            + (f" and a newer one makes {rates[1]} per minute." if len(rates) > 1 else "."))
    ask = d.pick(("How many minutes {verb} to make {n} {t}?", "How long, in minutes, {verb} to finish {n} {t}?"))
    verb = "do they need together" if len(rates) > 1 else "does it need"
    return f"{text} {ask.format(verb=verb, n=fmt(target), t=things)}", d.step(target, "/", rate)


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
    listing = _join([f"{c} {k}" for c, k in zip(counts, kinds, strict=False)])
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


# -- percentages -----------------------------------------------------------------------------
def percent_of(d: Draft) -> tuple[str, Fraction]:
    pct = d.q("percent", d.pick((10, 20, 25, 40, 50, 75, 5, 15, 30, 60, 35, 80)))
    unit = Fraction(100, pct).numerator
    total = d.q("total", unit * d.between(1, 20 if d.level == 1 else 120))
    group, what = d.pick((("students at a school", "in the choir"), ("trees in a park", "oaks"),
                          ("tickets sold", "for children"), ("emails received", "spam"),
                          ("runners in a race", "first-timers"), ("apples picked", "bruised")))
    text = say(d, ("there are {n} {g}, and {p}% of them are {what}.", "of {n} {g}, {p}% are {what}."),
               n=fmt(total), g=group, p=pct, what=what)
    return text + " How many is that?", d.step(d.step(total, "*", pct), "/", 100)


def discount(d: Draft) -> tuple[str, Fraction]:
    one = d.pick(("jacket", "bicycle", "lamp", "backpack", "chair", "pair of boots", "tablet", "watch", "suitcase",
                  "rug", "guitar", "printer"))
    buyer = person(d.rng)
    price = d.q("price", d.between(10, 200, 5 if d.level < 3 else 1))
    pct = d.q("percent", d.pick((10, 20, 25, 30, 40, 50, 15, 5)))
    kept = d.step(100, "-", pct)
    answer = d.step(d.step(price, "*", kept), "/", 100)
    text = say(d, ("a {one} costs {p} and is on sale for {x}% off.", "the usual price of a {one} is {p}; today it is {x}% off.",
                   "{name} wants a {one} priced at {p}, and the shop takes {x}% off.",
                   "during a sale, a {p} {one} is reduced by {x}%."),
               one=one, p=money(price), x=pct, name=buyer.name)
    if d.level == 3:
        tax = d.q("tax", d.pick((5, 8, 10, 20)))
        answer = d.step(d.step(answer, "*", d.step(100, "+", tax)), "/", 100)
        text += f" Then {tax}% sales tax is added."
    if not is_plain_decimal(answer):
        raise Retry
    return text + " " + d.pick(("What is the final price?", "How much does it cost now?")), answer


def percent_increase(d: Draft) -> tuple[str, Fraction]:
    pct = d.q("percent", d.pick((10, 20, 25, 50, 5, 15, 30)))
    start = d.q("start", d.between(20, 400 if d.level == 2 else 5000, 20))
    what = d.pick(("a town's population", "the number of members in a club", "a farm's yearly harvest in kg",
                   "the number of visitors to a museum", "a school's enrolment", "the number of trees in a forest"))
    answer = d.step(d.step(start, "*", d.step(100, "+", pct)), "/", 100)
    if answer.denominator != 1:
        raise Retry
    text = say(d, ("last year {w} was {n}. This year it grew by {p}%.", "{w} of {n} rises by {p}%.",
                   "{w} was {n}, and then it went up {p}%."), w=what, n=fmt(start), p=pct)
    return text + " " + d.pick(("What is it now?", "What is the new figure?")), answer


def percent_change(d: Draft) -> tuple[str, Fraction]:
    old = d.q("old", d.between(20, 500, 10))
    pct = d.pick((10, 20, 25, 40, 50, 60, 75))
    up = d.rng.random() < 0.5
    new = d.q("new", old * (100 + pct) / 100 if up else old * (100 - pct) / 100)
    if new.denominator != 1:
        raise Retry
    what = d.pick(("rent", "price of a bike", "monthly bill", "price of a ticket", "cost of a haircut", "bus fare"))
    change_amount = d.step(new, "-", old) if up else d.step(old, "-", new)
    verb = "increase" if up else "decrease"
    return (say(d, ("the {w} went from {o} to {n}.", "{name} noticed the {w} change from {o} to {n}."),
                w=what, o=money(old), n=money(new), name=person(d.rng).name)
            + " " + d.pick(("By what percent did it {v}?", "What was the percentage {v}?")).format(v=verb), d.step(d.step(change_amount, "/", old), "*", 100))


def score_percent(d: Draft) -> tuple[str, Fraction]:
    p = person(d.rng)
    total = d.q("total", d.pick((20, 25, 40, 50, 10, 80)))
    correct = d.q("correct", d.between(1, int(total)))
    answer = d.step(d.step(correct, "/", total), "*", 100)
    if not is_plain_decimal(answer):
        raise Retry
    return say(d, ("{name} answered {c} of {n} quiz questions correctly.", "on a test with {n} questions, {name} got {c} right."),
               name=p.name, c=correct, n=total) + " What percentage is that?", answer


ALL = (1, 2, 3)
KINDS: dict[str, dict[str, tuple[tuple[int, ...], KindFn]]] = {
    "arithmetic": {"shopping_total": (ALL, shopping_total), "change": (ALL, change), "savings": (ALL, savings)},
    "rates": {
        "distance": (ALL, distance), "travel_hours": ((1, 2), travel_hours), "travel_minutes": ((2, 3), travel_minutes),
        "round_trip_hours": ((3,), round_trip_hours), "unit_price": (ALL, unit_price),
        "work_together": (ALL, work_together), "production_count": (ALL, production_count),
        "production_time": (ALL, production_time),
    },
    "comparison": {
        "difference": (ALL, difference), "more_than_total": ((1, 2), more_than_total),
        "chain_difference": ((3,), chain_difference), "times_split": (ALL, times_split),
        "ratio_share": (ALL, ratio_share), "times_as_many": ((1, 2), times_as_many),
    },
    "conversion": {
        "hours_to_minutes": ((1, 2), hours_to_minutes), "minutes_to_hours": (ALL, minutes_to_hours),
        "cm_to_m": (ALL, cm_to_m), "m_to_cm": ((1, 2), m_to_cm), "rope_left": ((2, 3), rope_left),
        "g_to_kg": (ALL, g_to_kg), "kg_into_portions": ((2, 3), kg_into_portions),
        "dozens_left": (ALL, dozens_left), "items_to_dozens": ((2, 3), items_to_dozens),
    },
    "counting": {
        "equal_groups": (ALL, equal_groups), "leftover": ((2, 3), leftover), "groups_needed": ((2, 3), groups_needed),
        "grid_count": (ALL, grid_count), "outfits": (ALL, outfits), "handshakes": ((3,), handshakes),
        "legs": (ALL, legs),
    },
    "percent": {
        "percent_of": (ALL, percent_of), "discount": (ALL, discount), "percent_increase": ((2, 3), percent_increase),
        "percent_change": ((2, 3), percent_change), "score_percent": ((1, 2), score_percent),
    },
}
FAMILIES: tuple[str, ...] = tuple(KINDS)
