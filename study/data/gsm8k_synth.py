"""Seeded GSM8K-format word problems, for fine-tuning and evaluation without the hub.

Real GSM8K is small (7.5k train problems) and not on PyPI; a generator gives an unlimited, licence-free
supply in exactly its answer format, so the same parsing (lm-eval's `#### N` regex), the same prompt and
the same calculator annotations work on both. Difficulty is the number of arithmetic steps, which is the
axis along which looped models are claimed to help.

Every step goes through `_Work.step`, which computes the value itself and refuses anything that is not a
non-negative integer: an answer cannot disagree with its own arithmetic.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable

GENERATOR_VERSION = 1  # bump when the output for a given seed changes (it is part of data cache keys)

DIFFICULTIES: dict[str, tuple[int, int]] = {
    "tiny": (1, 1),  # easy with single-digit numbers: what a CPU-size model learns in minutes (the demo's SFT)
    "easy": (1, 1),
    "medium": (2, 3),
    "hard": (4, 5),
    "mixed": (1, 5),
}
MAX_STEPS = 5
TEST_BUCKETS = 10  # a problem belongs to the test split when hash(question) % TEST_BUCKETS == 0


def step_range(difficulty: int | str) -> tuple[int, int]:
    """Map a difficulty (1..5, or tiny/easy/medium/hard/mixed) to an inclusive range of step counts."""
    if isinstance(difficulty, str) and difficulty.strip().isdigit():
        difficulty = int(difficulty)
    if isinstance(difficulty, int) and not isinstance(difficulty, bool):
        if 1 <= difficulty <= MAX_STEPS:
            return difficulty, difficulty
    elif isinstance(difficulty, str) and difficulty.lower() in DIFFICULTIES:
        return DIFFICULTIES[difficulty.lower()]
    raise ValueError(f"difficulty must be an integer 1..{MAX_STEPS} or one of {sorted(DIFFICULTIES)}, got {difficulty!r}")


def split_of(question: str) -> str:
    """Which split a question falls in: a hash, so train and test never share a question whatever the seeds."""
    bucket = int.from_bytes(hashlib.sha1(question.encode("utf-8")).digest()[:8], "big") % TEST_BUCKETS
    return "test" if bucket == 0 else "train"


def generate(n: int, seed: int, difficulty: int | str = "medium", split: str | None = None) -> list[dict]:
    """`n` distinct problems as GSM8K rows `{"question", "answer"}`; same arguments, same problems.

    `split` ('train' | 'test' | None) keeps only questions whose hash falls in that split, so a model
    fine-tuned on split='train' is evaluated on problems it has never seen, even with the same seed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    lo, hi = step_range(difficulty)
    rng = random.Random(seed)
    rows: list[dict] = []
    seen, attempts = set(), 0  # questions kept so far; candidates drawn
    while len(rows) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"could not find {n} distinct problems at difficulty {difficulty!r}; ask for fewer")
        steps = rng.randint(lo, hi)
        if str(difficulty).lower() == "tiny":
            problem = _guard(_collection)(rng, steps, digits=1)
        else:
            family = rng.choice([f for f, (a, b) in _FAMILIES if a <= steps <= b])
            problem = family(rng, steps)
        if problem is None or problem["question"] in seen:
            continue
        if split is not None and split_of(problem["question"]) != split:
            continue
        seen.add(problem["question"])
        rows.append(problem)
    return rows


# ----------------------------------------------------------------------------------------------------------
# The arithmetic record shared by all templates


@dataclass
class _Work:
    """The answer being written: step lines with `<<expr=value>>` annotations, then `#### value`."""

    lines: list[str] = field(default_factory=list)
    steps: int = 0

    def step(self, before: str, values: list[int], ops: str, after: str) -> int:
        """Compute values[0] ops[0] values[1] ...; record 'before a + b = <<a+b=c>>c after'."""
        result = values[0]
        for op, v in zip(ops, values[1:]):
            if op == "+":
                result += v
            elif op == "-":
                result -= v
            elif op == "*":
                result *= v
            elif op == "/":
                if v == 0 or result % v:
                    raise _Reject
                result //= v
            else:
                raise ValueError(op)
        if result < 0:
            raise _Reject
        spaced = " ".join(f"{v} {op}" for v, op in zip(values, ops)) + f" {values[-1]}"
        tight = "".join(f"{v}{op}" for v, op in zip(values, ops)) + f"{values[-1]}"
        self.lines.append(f"{before}{spaced} = <<{tight}={result}>>{result}{after}")
        self.steps += 1
        return result

    def finish(self, question: str, answer: int) -> dict:
        return {"question": question, "answer": "\n".join(self.lines) + f"\n#### {answer}"}


class _Reject(Exception):
    """The random draw broke a constraint (non-integer, negative); the caller draws again."""


@dataclass(frozen=True)
class _Person:
    name: str
    he: str
    his: str
    him: str

    @property
    def He(self) -> str:
        return self.he.capitalize()


_NAMES_F = "Mia Ava Sofia Lena Priya Aisha Emma Olivia Chloe Hana Zara Lucy Nora Grace Rosa Maya Ines Yuki Leila"
_NAMES_M = "Liam Noah Omar Leo Ravi Diego Ethan Lucas Mateo Kenji Samuel Arjun Felix Hugo Tariq Ben Jonah Kofi Ivan"
_PEOPLE = [_Person(n, "she", "her", "her") for n in _NAMES_F.split()] + [
    _Person(n, "he", "his", "him") for n in _NAMES_M.split()
]


@dataclass(frozen=True)
class _Thing:
    one: str
    many: str
    box: str  # what a group of them comes in
    boxes: str
    food: bool = False


_THINGS = [
    _Thing("apple", "apples", "basket", "baskets", True),
    _Thing("marble", "marbles", "bag", "bags"),
    _Thing("sticker", "stickers", "sheet", "sheets"),
    _Thing("pencil", "pencils", "box", "boxes"),
    _Thing("cookie", "cookies", "tin", "tins", True),
    _Thing("book", "books", "crate", "crates"),
    _Thing("trading card", "trading cards", "pack", "packs"),
    _Thing("seashell", "seashells", "bucket", "buckets"),
    _Thing("egg", "eggs", "carton", "cartons", True),
    _Thing("cupcake", "cupcakes", "box", "boxes", True),
    _Thing("toy car", "toy cars", "box", "boxes"),
    _Thing("bead", "beads", "jar", "jars"),
    _Thing("strawberry", "strawberries", "basket", "baskets", True),
    _Thing("balloon", "balloons", "bag", "bags"),
    _Thing("stamp", "stamps", "album page", "album pages"),
]

_GOODS = [("cookies", "tray", "trays"), ("muffins", "tray", "trays"), ("candles", "batch", "batches"),
          ("bracelets", "batch", "batches"), ("loaves of bread", "batch", "batches"), ("pies", "batch", "batches"),
          ("soap bars", "batch", "batches"), ("jars of jam", "crate", "crates")]
_SHOP_ITEMS = [("notebook", "notebooks"), ("pen", "pens"), ("shirt", "shirts"), ("mug", "mugs"),
               ("ticket", "tickets"), ("plant", "plants"), ("sandwich", "sandwiches"), ("toy", "toys"),
               ("bottle of juice", "bottles of juice"), ("candle", "candles"), ("puzzle", "puzzles")]
_STORES = ["market", "bookshop", "corner shop", "school fair", "garden centre", "toy store", "bakery"]
_JOBS = ["walking dogs", "tutoring", "babysitting", "washing cars", "mowing lawns", "at a cafe", "at a bookshop"]
_VENUES = [("theater", "seats"), ("stadium section", "seats"), ("school hall", "chairs"), ("cinema", "seats"),
           ("orchard", "trees"), ("parking lot", "parking spaces"), ("garden", "plants")]


def _two(rng: random.Random) -> tuple[_Person, _Person]:
    a, b = rng.sample(_PEOPLE, 2)
    return a, b


# ----------------------------------------------------------------------------------------------------------
# Templates. Each takes (rng, steps) and returns a problem with exactly `steps` steps, or None to redraw.


def _collection(rng: random.Random, steps: int, digits: int | None = None) -> dict | None:
    """A running count changed by events: gains, losses, and (above one step) groups, scaling, splitting.
    ``digits=1``: one gain or loss of single-digit numbers (the ``tiny`` difficulty)."""
    p, friend = _two(rng)
    thing = rng.choice(_THINGS)
    small = steps == 1
    count = rng.randint(2, 9) if digits == 1 else rng.randint(3, 20) if small else rng.randint(5, 60)
    question = [f"{p.name} has {count} {thing.many}."]
    work = _Work()
    while work.steps < steps:
        left = steps - work.steps
        kinds = ["add", "sub"] if small else ["add", "sub", "mul", "div"] + (["groups"] if left >= 2 else [])
        kind = rng.choice(kinds)
        if kind == "add":
            n = rng.randint(1, 9) if digits == 1 else rng.randint(1, 15) if small else rng.randint(2, 40)
            question.append(rng.choice([
                f"{p.He} buys {n} more {thing.many}.",
                f"{p.He} finds {n} more {thing.many}.",
                f"{friend.name} gives {p.him} {n} {thing.many}.",
                f"{p.He} gets {n} more {thing.many} for {p.his} birthday.",
            ]))
            count = work.step(f"{p.name} then has ", [count, n], "+", f" {thing.many}.")
        elif kind == "sub":
            if count < 2:
                continue
            n = rng.randint(1, count - 1)
            verbs = [f"{p.He} gives {n} {thing.many} to {friend.name}.", f"{p.He} loses {n} of them.",
                     f"{p.He} sells {n} of them at a yard sale."]
            if thing.food:
                verbs.append(f"{p.He} eats {n} of them.")
            question.append(rng.choice(verbs))
            count = work.step(f"{p.name} has ", [count, n], "-", f" {thing.many} left.")
        elif kind == "mul":
            k = rng.randint(2, 4)
            if count * k > 2000:
                continue
            when = rng.choice(["By the end of the month", "A year later", "Over the summer", "After a while"])
            question.append(f"{when} {p.he} has {k} times as many {thing.many} as that.")
            count = work.step(f"{p.He} now has ", [count, k], "*", f" {thing.many}.")
        elif kind == "div":
            ks = [k for k in range(2, 11) if count % k == 0 and count // k >= 1]
            if not ks:
                continue
            k = rng.choice(ks)
            question.append(
                f"{p.He} splits {p.his} {thing.many} into {k} equal piles and keeps only one pile."
            )
            count = work.step("One pile holds ", [count, k], "/", f" {thing.many}, so that is what {p.he} keeps.")
        else:  # groups: two steps
            g, s = rng.randint(2, 9), rng.randint(2, 12)
            question.append(f"{p.He} then buys {g} {thing.boxes} with {s} {thing.many} in each.")
            extra = work.step(f"The {thing.boxes} hold ", [g, s], "*", f" {thing.many}.")
            count = work.step(f"{p.He} has ", [count, extra], "+", f" {thing.many} in total.")
    question.append(rng.choice([f"How many {thing.many} does {p.name} have now?",
                                f"How many {thing.many} does {p.name} end up with?"]))
    return work.finish(" ".join(question), count)


def _shopping(rng: random.Random, steps: int) -> dict | None:
    """Items at unit prices, one total, maybe change from a bill: steps = items + (items > 1) + change."""
    shapes = [(n, c) for n in (1, 2, 3) for c in (False, True) if n + (n > 1) + c == steps]
    if not shapes:
        return None
    n_items, change = rng.choice(shapes)
    p = rng.choice(_PEOPLE)
    items = rng.sample(_SHOP_ITEMS, n_items)
    work = _Work()
    bought, costs = [], []
    for one, many in items:
        k, price = rng.randint(2, 9), rng.randint(2, 25)
        bought.append(f"{k} {many} for ${price} each")
        costs.append(work.step(f"The {many} cost ", [k, price], "*", " dollars."))
    listing = bought[0] if len(bought) == 1 else ", ".join(bought[:-1]) + f" and {bought[-1]}"
    question = f"{p.name} goes to the {rng.choice(_STORES)}. {p.He} buys {listing}."
    total = costs[0]
    if len(costs) > 1:
        total = work.step(f"In total {p.he} spends ", costs, "+" * (len(costs) - 1), " dollars.")
    if not change:
        return work.finish(question + f" How many dollars does {p.name} spend in all?", total)
    bill = next((b for b in (10, 20, 50, 100, 200, 500) if b > total), 100 * (total // 100 + 1))
    left = work.step(f"{p.He} gets back ", [bill, total], "-", " dollars in change.")
    return work.finish(question + f" {p.He} pays with a ${bill} bill. How much change, in dollars, "
                                  f"does {p.he} get?", left)


def _bakery(rng: random.Random, steps: int) -> dict | None:
    """Make batches, maybe keep some, sell at a price, maybe pay costs, maybe share the money."""
    p = rng.choice(_PEOPLE)
    goods, batch, batches = rng.choice(_GOODS)
    extras = rng.sample(["keep", "cost", "share"], steps - 2)
    n_batch, per = rng.randint(2, 8), rng.randint(4, 12)
    partners = rng.randint(1, 3) if "share" in extras else 0
    price = rng.randint(2, 6)
    if "share" in extras and "cost" not in extras:
        price *= partners + 1  # makes the revenue divisible by the number of people sharing it
    work = _Work()
    question = [f"{p.name} makes {n_batch} {batches} of {goods} with {per} in each {batch}."]
    made = work.step(f"{p.He} makes ", [n_batch, per], "*", f" {goods}.")
    sold = made
    if "keep" in extras:
        keep = rng.randint(1, made - 1)
        question.append(f"{p.He} keeps {keep} for {p.his} family.")
        sold = work.step(f"{p.He} has ", [made, keep], "-", f" {goods} left to sell.")
    question.append(f"{p.He} sells {'the rest' if 'keep' in extras else 'all of them'} for ${price} each.")
    money = work.step(f"{p.He} earns ", [sold, price], "*", " dollars.")
    if "cost" in extras:
        people = partners + 1
        if money <= people:
            return None
        cost = money - people * rng.randint(1, (money - 1) // people)
        question.append(f"The ingredients cost {p.him} ${cost}.")
        money = work.step("The profit is ", [money, cost], "-", " dollars.")
    if "share" in extras:
        who = "a friend" if partners == 1 else f"{partners} friends"
        question.append(f"{p.He} shares the money equally between {p.him}self and {who}.")
        money = work.step("Each person gets ", [money, partners + 1], "/", " dollars.")
        ask = f"How many dollars does {p.name} get?"
    elif "cost" in extras:
        ask = f"How many dollars of profit does {p.name} make?"
    else:
        ask = f"How many dollars does {p.name} earn?"
    return work.finish(" ".join(question + [ask]), money)


def _sharing(rng: random.Random, steps: int) -> dict | None:
    """Gather items (maybe in packs), split them equally, maybe each person uses some up."""
    p = rng.choice(_PEOPLE)
    thing = rng.choice(_THINGS)
    friends = rng.randint(1, 5)
    people = friends + 1
    total = people * rng.randint(3, 15)  # built backwards from the share, so the division is exact
    own = steps >= 3
    packs = rng.randint(2, 6)
    if own:  # the packs hold part of the total; the rest is what p already had
        if (total - 1) // packs < 2:
            return None
        per = rng.randint(2, min(10, (total - 1) // packs))
    else:  # the packs hold exactly the total
        sizes = [d for d in range(2, 13) if total % d == 0 and total // d >= 2]
        if not sizes:
            return None
        per = rng.choice(sizes)
        packs = total // per
    have = total - packs * per
    work = _Work()
    question = [f"{p.name} has {have} {thing.many}."] if own else []
    question.append(f"{p.name if not own else p.He} buys {packs} {thing.boxes} of {thing.many} with {per} in each.")
    bought = work.step(f"{p.He} buys ", [packs, per], "*", f" {thing.many}.")
    count = work.step(f"Altogether {p.he} has ", [have, bought], "+", f" {thing.many}.") if own else bought
    question.append(f"{p.He} shares all of them equally between {p.him}self and {friends} "
                    f"friend{'s' if friends > 1 else ''}.")
    each = work.step(f"There are {people} people, so each gets ", [count, people], "/", f" {thing.many}.")
    if steps < 4:
        return work.finish(" ".join(question + [f"How many {thing.many} does each person get?"]), each)
    use = rng.randint(1, each - 1)
    question.append(f"Then each person {'eats' if thing.food else 'gives away'} {use} of theirs.")
    each = work.step("Each person has ", [each, use], "-", f" {thing.many} left.")
    return work.finish(" ".join(question + [f"How many {thing.many} does each person have left?"]), each)


def _venue(rng: random.Random, steps: int) -> dict | None:
    """Rows × columns, some taken, how many free (and what filling them would earn)."""
    place, units = rng.choice(_VENUES)
    rows, cols = rng.randint(3, 25), rng.randint(4, 20)
    work = _Work()
    total = work.step("There are ", [rows, cols], "*", f" {units} in total.")
    question = [f"A {place} has {rows} rows with {cols} {units} in each row."]
    verb = "are taken" if units in ("seats", "chairs", "parking spaces") else "are already sold"
    if steps >= 3:
        a = rng.randint(2, max(2, total // 2))
        b = rng.randint(2, max(2, total - a))
        question.append(f"In the morning {a} {units} {verb}, and in the afternoon {b} more {verb}.")
        used = work.step("Altogether ", [a, b], "+", f" {units} {verb}.")
    else:
        used = rng.randint(2, total)
        question.append(f"{used} {units} {verb}.")
    free = work.step("That leaves ", [total, used], "-", f" {units}.")
    if steps == 4:
        price = rng.randint(3, 30)
        question.append(f"Each of the remaining {units} can be sold for ${price}.")
        money = work.step("Selling them would bring in ", [free, price], "*", " dollars.")
        return work.finish(" ".join(question + ["How many dollars would selling all the remaining "
                                                f"{units} bring in?"]), money)
    return work.finish(" ".join(question + [f"How many {units} are left?"]), free)


def _wages(rng: random.Random, steps: int) -> dict | None:
    """Hourly pay × hours × days, plus a bonus and/or minus a purchase."""
    p = rng.choice(_PEOPLE)
    rate, hours, days = rng.randint(6, 25), rng.randint(2, 8), rng.randint(2, 6)
    extras = rng.sample(["bonus", "spend"], steps - 2)
    work = _Work()
    question = [f"{p.name} earns ${rate} an hour {rng.choice(_JOBS)}. "
                f"{p.He} works {hours} hours a day for {days} days."]
    daily = work.step("Each day " + p.he + " earns ", [rate, hours], "*", " dollars.")
    money = work.step(f"Over {days} days {p.he} earns ", [daily, days], "*", " dollars.")
    for extra in extras:
        if extra == "bonus":
            bonus = rng.randint(5, 60)
            question.append(f"{p.He} also gets a ${bonus} bonus.")
            money = work.step("With the bonus that is ", [money, bonus], "+", " dollars.")
        else:
            spend = rng.randint(1, money - 1)
            question.append(f"{p.He} then spends ${spend} on a {rng.choice(['game', 'jacket', 'gift', 'bike lock'])}.")
            money = work.step(f"{p.He} has ", [money, spend], "-", " dollars left.")
    ask = f"How many dollars does {p.name} have left?" if "spend" in extras else f"How many dollars does {p.name} earn?"
    return work.finish(" ".join(question + [ask]), money)


def _compare(rng: random.Random, steps: int) -> dict | None:
    """'B has n more/fewer than A' chains, asking for one person's amount or everyone's together."""
    a, b = _two(rng)
    thing = rng.choice(_THINGS)
    first = rng.randint(5, 30)
    diff = rng.randint(2, 12)
    more = rng.random() < 0.5 or diff >= first
    work = _Work()
    question = [f"{a.name} has {first} {thing.many}.",
                f"{b.name} has {diff} {'more' if more else 'fewer'} {thing.many} than {a.name}."]
    second = work.step(f"{b.name} has ", [first, diff], "+" if more else "-", f" {thing.many}.")
    if steps == 1:
        return work.finish(" ".join(question + [f"How many {thing.many} does {b.name} have?"]), second)
    if steps == 2:
        total = work.step("Together they have ", [first, second], "+", f" {thing.many}.")
        return work.finish(" ".join(question + [f"How many {thing.many} do {a.name} and {b.name} have "
                                                "together?"]), total)
    c = rng.choice([x for x in _PEOPLE if x not in (a, b)])
    k = rng.randint(2, 3)
    question.append(f"{c.name} has {k} times as many {thing.many} as {b.name}.")
    third = work.step(f"{c.name} has ", [second, k], "*", f" {thing.many}.")
    total = work.step("Together they have ", [first, second, third], "++", f" {thing.many}.")
    return work.finish(" ".join(question + [f"How many {thing.many} do the three of them have together?"]),
                       total)


def _guard(template: Callable[..., dict | None]) -> Callable[..., dict | None]:
    def run(rng: random.Random, steps: int, **kwargs) -> dict | None:
        try:
            problem = template(rng, steps, **kwargs)
        except _Reject:
            return None
        if problem is not None and problem["answer"].count("<<") != steps:
            raise AssertionError(f"{template.__name__} wrote the wrong number of steps for {steps}")
        return problem

    return run


# (template, (min steps, max steps)); step-1 problems are one addition or subtraction of small numbers
_FAMILIES: list[tuple[Callable[[random.Random, int], dict | None], tuple[int, int]]] = [
    (_guard(_collection), (1, 5)),
    (_guard(_shopping), (2, 5)),
    (_guard(_bakery), (2, 5)),
    (_guard(_sharing), (2, 4)),
    (_guard(_venue), (2, 4)),
    (_guard(_wages), (2, 4)),
    (_guard(_compare), (1, 3)),
]
