"""Rate problems: speed, distance and time, unit prices, working together, machines."""

from __future__ import annotations

from fractions import Fraction

from reasoning_dspy.problems.base import Draft, Retry, fmt, is_plain_decimal, money
from reasoning_dspy.problems.money import draw_price
from reasoning_dspy.problems.story import join_words, say
from reasoning_dspy.problems.words import ITEMS, JOBS, MACHINES, SHOPS, VEHICLES, person


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
    each = draw_price(d, low, high)
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
        total2 = d.q("total_price_2", count2 * draw_price(d, low2, high2))
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
    text = join_words(parts) + d.pick((" to do it alone.", " on their own.", "."))
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
