"""Money problems: shopping, change, savings and percentages."""

from __future__ import annotations

from fractions import Fraction

from reasoning_dspy.problems.base import Draft, Retry, fmt, is_plain_decimal, money
from reasoning_dspy.problems.story import join_words, say
from reasoning_dspy.problems.words import ITEMS, SHOPS, person


def draw_price(d: Draft, low: int, high: int) -> Fraction:
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
        price = d.q(f"price_{i}", draw_price(d, low, high))
        phrases.append(d.pick(("{n} {many} at {p} each", "{n} {many} for {p} each", "{n} {many} costing {p} apiece"))
                       .format(n=count, many=many, p=money(price)))
        subtotals.append(d.step(count, "*", price))
    total = subtotals[0]
    for s in subtotals[1:]:
        total = d.step(total, "+", s)
    return phrases, total


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
                name=p.name, items=join_words(phrases), shop=d.pick(SHOPS))
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
                name=p.name, items=join_words(phrases), bill=money(paid))
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
