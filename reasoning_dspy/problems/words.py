"""The nouns word problems are told with: people, things to buy, vehicles, jobs, containers.

Kept apart from the families so that wording can grow without touching any formula.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_PEOPLE = """\
Amara she|Ben he|Chloe she|Daniel he|Elif she|Farid he|Grace she|Hiro he|Ines she|Jonas he|Keiko she|
Luca he|Maya she|Nikhil he|Olivia she|Pablo he|Quinn she|Rafael he|Sofia she|Tariq he|Uma she|
Viktor he|Wen she|Xavier he|Yara she|Zane he|Aisha she|Bruno he|Carmen she|Dmitri he|Esther she|
Felix he|Gita she|Hamza he|Ingrid she|Jamal he|Kira she|Lorenzo he|Mei she|Noah he|Oksana she|
Pedro he|Rosa she|Samir he|Tamsin she|Umar he|Valentina she|Wyatt he|Ximena she|Yusuf he|Zofia she|
Arjun he|Beatriz she|Callum he|Dalia she|Emeka he|Freya she|Goran he|Hana she|Idris he"""


@dataclass(frozen=True)
class Person:
    name: str
    they: str
    them: str
    their: str


PEOPLE: tuple[Person, ...] = tuple(
    Person(name, pron, "her" if pron == "she" else "him", "her" if pron == "she" else "his")
    for name, pron in (entry.split() for entry in _PEOPLE.replace("\n", "").split("|"))
)
NAMES: tuple[str, ...] = tuple(p.name for p in PEOPLE)

# (singular, plural, lowest price, highest price) in whole dollars
ITEMS: tuple[tuple[str, str, int, int], ...] = (
    ("notebook", "notebooks", 2, 6), ("pen", "pens", 1, 3), ("apple", "apples", 1, 2),
    ("loaf of bread", "loaves of bread", 2, 5), ("T-shirt", "T-shirts", 8, 20), ("mug", "mugs", 4, 12),
    ("comic book", "comic books", 3, 9), ("plant pot", "plant pots", 5, 15), ("box of crayons", "boxes of crayons", 2, 7),
    ("sandwich", "sandwiches", 4, 9), ("bag of rice", "bags of rice", 3, 11), ("candle", "candles", 2, 8),
    ("packet of seeds", "packets of seeds", 1, 4), ("pair of socks", "pairs of socks", 3, 8),
    ("bottle of juice", "bottles of juice", 2, 5), ("puzzle", "puzzles", 9, 25), ("scarf", "scarves", 10, 30),
    ("tennis ball", "tennis balls", 1, 4), ("paintbrush", "paintbrushes", 2, 9), ("lemon", "lemons", 1, 2),
    ("cupcake", "cupcakes", 2, 5), ("phone case", "phone cases", 7, 18), ("jar of honey", "jars of honey", 5, 14),
    ("ticket", "tickets", 6, 24), ("light bulb", "light bulbs", 2, 7), ("bar of soap", "bars of soap", 1, 5),
)

SHOPS: tuple[str, ...] = (
    "the market", "a corner shop", "the school fair", "a bookshop", "the hardware store", "a bakery",
    "a garden centre", "the farmers' market", "an online shop", "the museum gift shop", "a street stall",
    "the supermarket",
)

# (noun, plural, typical speeds in km/h)
VEHICLES: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("car", "cars", (40, 50, 60, 70, 80, 90, 100)), ("bus", "buses", (30, 40, 45, 50, 60)),
    ("train", "trains", (80, 90, 100, 120, 150)), ("cyclist", "cyclists", (10, 12, 15, 18, 20, 24)),
    ("truck", "trucks", (50, 60, 70, 80)), ("ferry", "ferries", (20, 24, 30, 36)),
    ("scooter", "scooters", (20, 25, 30, 40)), ("tractor", "tractors", (15, 20, 25, 30)),
)

# (task, "can <verb> in N hours")
JOBS: tuple[str, ...] = (
    "paint the fence", "mow the lawn", "sort the mail", "clean the classroom", "fill the orders",
    "pack the boxes", "weed the garden", "tile the floor", "wash the cars", "stack the shelves",
    "grade the exams", "plant the seedlings",
)

# (machine, product plural)
MACHINES: tuple[tuple[str, str], ...] = (
    ("printer", "pages"), ("bottling machine", "bottles"), ("bread oven", "rolls"), ("loom", "scarves"),
    ("3D printer", "figurines"), ("sewing machine", "pillowcases"), ("juicer", "cups of juice"),
    ("robot arm", "parcels"), ("press", "coins"), ("ice machine", "ice cubes"),
)

# (collector's things, verb phrase)
COLLECTIONS: tuple[str, ...] = (
    "stamps", "marbles", "stickers", "seashells", "baseball cards", "coins", "postcards", "books",
    "toy cars", "pebbles", "badges", "beads", "comic books", "pine cones", "shells",
)

# (group noun, member plural, container)
GROUPINGS: tuple[tuple[str, str], ...] = (
    ("students", "teams"), ("cupcakes", "boxes"), ("chairs", "rows"), ("pencils", "packs"),
    ("eggs", "cartons"), ("players", "squads"), ("books", "shelves"), ("cookies", "bags"),
    ("marbles", "jars"), ("flowers", "bunches"), ("photos", "albums"), ("passengers", "minibuses"),
)

TWO_LEGGED: tuple[str, ...] = ("chickens", "ducks", "geese", "ostriches", "parrots", "turkeys")
FOUR_LEGGED: tuple[str, ...] = ("cows", "goats", "sheep", "dogs", "horses", "pigs", "rabbits", "cats")
EIGHT_LEGGED: tuple[str, ...] = ("spiders", "octopus toys")

GARMENTS: tuple[tuple[str, str, str], ...] = (
    ("shirts", "pairs of trousers", "hats"), ("blouses", "skirts", "scarves"),
    ("T-shirts", "pairs of shorts", "caps"), ("sweaters", "pairs of jeans", "pairs of shoes"),
)
MEALS: tuple[tuple[str, str, str], ...] = (
    ("starters", "main courses", "desserts"), ("kinds of bread", "fillings", "sauces"),
    ("flavours of ice cream", "toppings", "cones"), ("soups", "salads", "drinks"),
)


def person(rng: random.Random, *, other_than: tuple[str, ...] = ()) -> Person:
    """A person not already in the story."""
    while True:
        p = rng.choice(PEOPLE)
        if p.name not in other_than:
            return p
