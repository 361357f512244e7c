"""Deterministic generators of small ALERT-style tasks with rationales (the embedded default).

The real study needs OPT checkpoints and NIV2; this module reproduces its *shape* at toy scale so
the whole pipeline (pretrain → FT/CoT finetune → evaluate per skill) runs on a CPU in minutes:

- one tiny world (people, rooms, objects, properties, animals) shared by every task;
- eight tasks, each a seeded generator of `SyntheticInstance`s (input, rationale, short answer):
  four **in-domain** skills (mathematics, deductive, spatial, causal) that form the finetuning
  corpus, two **held-out** skills (analogical, logical) that are never finetuned on, and two
  **dev** tasks (entailment, commonsense) for checkpoint selection, mirroring ALERT's split;
- `synthetic_pretraining_text`: plain narrative sentences over the same vocabulary with no
  question/answer format, so a "pretrained" model knows the words but not the tasks.

Disjointness: every instance falls in one pool by a hash of its task and input (`_pool_of`), so
demonstrations, evaluation and finetuning instances can never coincide, whatever the seeds.
Determinism: each draw uses its own `random.Random` seeded from (task, pool, seed) strings.
"""
from __future__ import annotations

import dataclasses
import random
import zlib
from typing import Callable, Literal, NamedTuple

from alert_jax.errors import AlertJaxError
from alert_jax.data.example import Demonstration, Example, Task

Pool = Literal["demo", "eval", "finetune"]

NAMES = ("Anna", "Ben", "Cara", "Dan", "Eva", "Finn")
ROOMS = ("kitchen", "garden", "hall", "office", "bedroom", "attic")
ITEMS = ("apples", "pens", "coins", "cards", "eggs")
THINGS = ("ball", "box", "stone", "cup", "drum", "bell")
PROPERTIES = ("red", "round", "soft", "heavy", "shiny", "cold", "small", "loud")
ANIMALS = ("cat", "dog", "bird", "fox", "duck", "frog")
OBJECT_ROOM = {
    "oven": "kitchen", "bed": "bedroom", "desk": "office", "shovel": "garden",
    "coat": "hall", "suitcase": "attic", "sink": "kitchen", "pillow": "bedroom",
}
#: (cause clause after a name, effect clause, the general rule that links them)
CAUSAL_PAIRS = (
    ("drops the glass", "the glass breaks", "A glass that falls breaks."),
    ("leaves the ice out", "the ice melts", "Ice melts when it is left out."),
    ("forgets to water the plant", "the plant dries out", "A plant without water dries out."),
    ("turns off the lamp", "the room gets dark", "A room without light is dark."),
    ("kicks the ball", "the ball rolls away", "A ball that is kicked rolls."),
    ("rings the bell", "the dog barks", "The dog barks when the bell rings."),
    ("opens the window", "the room gets cold", "Cold air comes in through an open window."),
    ("eats all the apples", "the bowl is empty", "A bowl is empty when its apples are eaten."),
)
#: relation phrase → pairs; "A <phrase> B" reads as a sentence
ANALOGY_RELATIONS: dict[str, dict[str, str]] = {
    "makes the sound": {"cat": "meow", "dog": "bark", "cow": "moo", "duck": "quack",
                        "sheep": "baa", "owl": "hoot", "lion": "roar", "bee": "buzz"},
    "has young called": {"cat": "kitten", "dog": "puppy", "cow": "calf", "duck": "duckling",
                         "sheep": "lamb", "owl": "owlet", "lion": "cub", "frog": "tadpole"},
    "is the opposite of": {"hot": "cold", "big": "small", "fast": "slow", "up": "down",
                           "light": "dark", "wet": "dry", "open": "closed", "full": "empty"},
    "belongs in the": OBJECT_ROOM,
    "has the color": {"sky": "blue", "grass": "green", "snow": "white", "coal": "black",
                      "lemon": "yellow", "cherry": "red", "cloud": "grey", "pumpkin": "orange"},
    "lives in the": {"fish": "sea", "bird": "nest", "bee": "hive", "cow": "barn",
                     "fox": "den", "dog": "kennel", "horse": "stable", "spider": "web"},
}
#: (subject, state) atoms for the logical task: "the lamp is on"
ATOMS = (("the lamp", "on"), ("the door", "open"), ("the cat", "asleep"), ("the window", "open"),
         ("the radio", "loud"), ("the oven", "hot"), ("the cup", "full"))

_POOL_BUCKETS: dict[str, range] = {"demo": range(0, 1), "eval": range(1, 5), "finetune": range(5, 10)}
NUM_DEMONSTRATIONS = 2


class SyntheticInstance(NamedTuple):
    input: str
    rationale: str
    answer: str
    choices: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SyntheticTaskSpec:
    """A generated task: its skill, its ALERT-style split, and its instance generator."""

    name: str
    skill: str
    split: Literal["in_domain", "held_out", "dev"]
    definition: str
    generate: Callable[[random.Random], SyntheticInstance]


def _others(rng: random.Random, pool: tuple[str, ...], exclude: str) -> str:
    return rng.choice([x for x in pool if x != exclude])


def _truth(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------------------------------------
# Generators, one per task


def _arithmetic(rng: random.Random) -> SyntheticInstance:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friend = _others(rng, NAMES, name)
    total = rng.randint(2, 9)
    story, steps = [f"{name} has {total} {item}."], []
    for _ in range(rng.randint(1, 3)):
        if total > 1 and rng.random() < 0.5:
            k = rng.randint(1, total - 1)
            story.append(f"{name} gives {k} to {friend}.")
            steps.append(f"{total} - {k} = {total - k}.")
            total -= k
        else:
            k = rng.randint(1, 9)
            story.append(f"{name} finds {k} more.")
            steps.append(f"{total} + {k} = {total + k}.")
            total += k
    question = " ".join(story) + f" How many {item} does {name} have now?"
    return SyntheticInstance(question, " ".join(steps), str(total))


def _rule_chain(rng: random.Random) -> SyntheticInstance:
    length = rng.randint(2, 3)
    props = rng.sample(PROPERTIES, length + 3)
    chain, (loose_a, loose_b) = props[: length + 1], props[length + 1:]
    thing = rng.choice(THINGS)
    rules = [f"Everything that is {a} is {b}." for a, b in zip(chain, chain[1:])]
    rules.append(f"Everything that is {loose_a} is {loose_b}.")
    rng.shuffle(rules)
    holds = rng.random() < 0.5
    query = chain[-1] if holds else rng.choice((loose_a, loose_b))
    derivation = [f"The {thing} is {chain[0]}."] + [f"So the {thing} is {p}." for p in chain[1:]]
    if not holds:
        derivation.append(f"Nothing makes the {thing} {query}.")
    question = " ".join(rules) + f" The {thing} is {chain[0]}. Is the {thing} {query}?"
    return SyntheticInstance(question, " ".join(derivation), "yes" if holds else "no", ("yes", "no"))


def _room_tracking(rng: random.Random) -> SyntheticInstance:
    people = rng.sample(NAMES, 2)
    trail = {p: [rng.choice(ROOMS)] for p in people}
    story = [f"{p} is in the {trail[p][0]}." for p in people]
    for _ in range(rng.randint(2, 4)):
        person = rng.choice(people)
        room = _others(rng, ROOMS, trail[person][-1])
        story.append(f"{person} moves to the {room}.")
        trail[person].append(room)
    target = rng.choice(people)
    rooms = trail[target]
    if len(rooms) == 1:
        rationale = f"{target} is in the {rooms[0]} and does not move."
    else:
        rationale = f"{target} was in the " + ", then the ".join(rooms) + "."
    return SyntheticInstance(" ".join(story) + f" Where is {target}?", rationale, rooms[-1])


def _cause_effect(rng: random.Random) -> SyntheticInstance:
    name = rng.choice(NAMES)
    (cause, effect, rule), (other_cause, other_effect, _) = rng.sample(CAUSAL_PAIRS, 2)
    if rng.random() < 0.5:
        premise, question, answer, wrong = f"{name} {cause}.", "What happens as a result?", effect, other_effect
    else:
        premise = f"{effect[0].upper()}{effect[1:]}."
        question, answer, wrong = f"What did {name} do?", cause, other_cause
    options = [answer, wrong]
    rng.shuffle(options)
    text = f"{premise} {question} Options: {options[0]} or {options[1]}."
    return SyntheticInstance(text, rule, answer, tuple(options))


def _analogy(rng: random.Random) -> SyntheticInstance:
    relation = rng.choice(sorted(ANALOGY_RELATIONS))
    table = ANALOGY_RELATIONS[relation]
    a, c = rng.sample(sorted(table), 2)
    b, d = table[a], table[c]
    rationale = f"{a.capitalize()} {relation} {b}, and {c} {relation} {d}."
    return SyntheticInstance(f"{a} is to {b} as {c} is to what?", rationale, d)


def _literal(atom: tuple[str, str], negated: bool) -> str:
    subject, state = atom
    return f"{subject} is {'not ' if negated else ''}{state}"


def _boolean_logic(rng: random.Random) -> SyntheticInstance:
    atoms = rng.sample(ATOMS, 3)
    facts = {atom: rng.random() < 0.5 for atom in atoms}
    stated = " ".join(f"{_literal(a, not v).capitalize()}." for a, v in facts.items())
    first, second = atoms[0], atoms[1]
    neg_first, neg_second = rng.random() < 0.3, rng.random() < 0.3
    value_first, value_second = facts[first] != neg_first, facts[second] != neg_second
    operator = rng.choice(("and", "or"))
    result = value_first and value_second if operator == "and" else value_first or value_second
    claim = f"{_literal(first, neg_first)} {operator} {_literal(second, neg_second)}"
    rationale = (
        f"It is {_truth(value_first)} that {_literal(first, neg_first)}. "
        f"It is {_truth(value_second)} that {_literal(second, neg_second)}. "
        f"{_truth(value_first).capitalize()} {operator} {_truth(value_second)} is {_truth(result)}."
    )
    return SyntheticInstance(f"{stated} True or false: {claim}?", rationale, _truth(result), ("true", "false"))


def _entailment(rng: random.Random) -> SyntheticInstance:
    name, room, animal = rng.choice(NAMES), rng.choice(ROOMS), rng.choice(ANIMALS)
    premise = f"{name} is in the {room} with the {animal}."
    label = rng.choice(("entailment", "contradiction", "neutral"))
    if label == "entailment":
        hypothesis, rationale = f"The {animal} is in the {room}.", f"The {animal} is with {name}, who is in the {room}."
    elif label == "contradiction":
        other = _others(rng, ROOMS, room)
        hypothesis, rationale = f"The {animal} is in the {other}.", f"The {animal} is in the {room}, not the {other}."
    else:
        hypothesis, rationale = f"The {animal} is asleep.", f"Nothing says whether the {animal} is asleep."
    return SyntheticInstance(
        f"Premise: {premise} Hypothesis: {hypothesis}", rationale, label, ("entailment", "neutral", "contradiction")
    )


def _object_location(rng: random.Random) -> SyntheticInstance:
    name, thing = rng.choice(NAMES), rng.choice(sorted(OBJECT_ROOM))
    room = OBJECT_ROOM[thing]
    options = [room, _others(rng, ROOMS, room)]
    rng.shuffle(options)
    text = f"Where would {name} most likely find the {thing}? Options: {options[0]} or {options[1]}."
    return SyntheticInstance(text, f"A {thing} is usually kept in the {room}.", room, tuple(options))


SPECS: tuple[SyntheticTaskSpec, ...] = (
    SyntheticTaskSpec("synthetic_arithmetic", "mathematics", "in_domain",
                      "Read the story and give the number asked for.", _arithmetic),
    SyntheticTaskSpec("synthetic_rule_chain", "deductive", "in_domain",
                      "Use the rules to decide if the statement follows. Answer yes or no.", _rule_chain),
    SyntheticTaskSpec("synthetic_room_tracking", "spatial", "in_domain",
                      "Follow the moves and say which room the person is in.", _room_tracking),
    SyntheticTaskSpec("synthetic_cause_effect", "causal", "in_domain",
                      "Pick the option that is the cause or the effect asked for.", _cause_effect),
    SyntheticTaskSpec("synthetic_analogy", "analogical", "held_out",
                      "Complete the analogy with one word.", _analogy),
    SyntheticTaskSpec("synthetic_boolean_logic", "logical", "held_out",
                      "Decide if the claim is true or false given the facts.", _boolean_logic),
    SyntheticTaskSpec("synthetic_entailment", "entailment", "dev",
                      "Does the premise entail the hypothesis? Answer entailment, neutral or contradiction.",
                      _entailment),
    SyntheticTaskSpec("synthetic_object_location", "commonsense", "dev",
                      "Pick the room where the object is usually found.", _object_location),
)
TASKS: dict[str, SyntheticTaskSpec] = {spec.name: spec for spec in SPECS}


# ---------------------------------------------------------------------------------------------
# Drawing instances into Tasks


def _pool_of(task: str, text: str) -> str:
    """The pool an input belongs to, fixed by a stable hash so pools never overlap."""
    bucket = zlib.crc32(f"{task}\n{text}".encode()) % 10
    return next(pool for pool, buckets in _POOL_BUCKETS.items() if bucket in buckets)


def _draw(spec: SyntheticTaskSpec, n: int, seed: int, pool: Pool) -> list[SyntheticInstance]:
    """`n` distinct instances of `spec` from `pool`, deterministic in `seed`."""
    rng = random.Random(f"{spec.name}/{pool}/{seed}")
    drawn: dict[str, SyntheticInstance] = {}
    for _ in range(200 * n + 1000):
        if len(drawn) == n:
            break
        instance = spec.generate(rng)
        if instance.input not in drawn and _pool_of(spec.name, instance.input) == pool:
            drawn[instance.input] = instance
    if len(drawn) < n:
        raise AlertJaxError(f"{spec.name}: only {len(drawn)} distinct {pool} instances could be drawn, asked for {n}")
    return list(drawn.values())


def synthetic_task(name: str, n: int, seed: int = 0, pool: Pool = "eval") -> Task:
    """Task `name` with `n` instances from `pool` ("eval" or "finetune") and 2 demonstrations."""
    if name not in TASKS:
        raise AlertJaxError(f"unknown synthetic task {name!r}; known: {', '.join(TASKS)}")
    spec = TASKS[name]
    if pool == "finetune" and spec.split != "in_domain":
        raise AlertJaxError(f"{name} is a {spec.split} task; only in-domain tasks are finetuned on")
    demos = _draw(spec, NUM_DEMONSTRATIONS, seed, "demo")
    examples = tuple(
        Example(
            input=inst.input,
            references=(inst.answer,),
            rationale=inst.rationale,
            answer=inst.answer,
            choices=inst.choices,
            source="synthetic",
            id=f"{name}-{pool}-{seed}-{i}",
        )
        for i, inst in enumerate(_draw(spec, n, seed, pool))
    )
    return Task(
        name=name,
        definition=spec.definition,
        demonstrations=tuple(Demonstration(d.input, d.answer, d.rationale) for d in demos),
        examples=examples,
        categories=(spec.skill,),
    )


def _tasks(splits: tuple[str, ...], n: int, seed: int, pool: Pool) -> list[Task]:
    return [synthetic_task(spec.name, n, seed, pool) for spec in SPECS if spec.split in splits]


def synthetic_finetune(n_per_task: int, seed: int = 0) -> list[Task]:
    """The finetuning corpus: in-domain tasks, instances from the finetune pool."""
    return _tasks(("in_domain",), n_per_task, seed, "finetune")


def synthetic_eval_tasks(n: int, seed: int = 0) -> list[Task]:
    """Evaluation tasks: in-domain and held-out, instances from the eval pool."""
    return _tasks(("in_domain", "held_out"), n, seed, "eval")


def synthetic_dev_tasks(n: int, seed: int = 0) -> list[Task]:
    """The development set for checkpoint selection (tasks never finetuned or scored)."""
    return _tasks(("dev",), n, seed, "eval")


# ---------------------------------------------------------------------------------------------
# Pretraining text


def _world_sentence(rng: random.Random) -> str:
    """One narrative sentence stating a fact of the world, never a question."""
    name, friend = rng.sample(NAMES, 2)
    relation = rng.choice(sorted(ANALOGY_RELATIONS))
    key = rng.choice(sorted(ANALOGY_RELATIONS[relation]))
    cause, effect, rule = rng.choice(CAUSAL_PAIRS)
    atom = rng.choice(ATOMS)
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    start, end = rng.sample(ROOMS, 2)
    thing = rng.choice(sorted(OBJECT_ROOM))
    makers = (
        lambda: f"{name} walks from the {start} to the {end}.",
        lambda: f"{name} has {rng.randint(0, 40)} {rng.choice(ITEMS)} and {friend} has {rng.randint(0, 40)}.",
        lambda: f"{name} gives some {rng.choice(ITEMS)} to {friend}.",
        lambda: f"{a} + {b} = {a + b} and {a + b} - {b} = {a}.",
        lambda: f"The {rng.choice(THINGS)} is {rng.choice(PROPERTIES)} and {rng.choice(PROPERTIES)}.",
        lambda: f"When {name} {cause}, {effect}. {rule}",
        lambda: f"{key.capitalize()} {relation} {ANALOGY_RELATIONS[relation][key]}.",
        lambda: f"In the morning {_literal(atom, rng.random() < 0.5)}.",
        lambda: f"The {rng.choice(ANIMALS)} sleeps in the {rng.choice(ROOMS)} with {name}.",
        lambda: f"{name} keeps the {thing} in the {OBJECT_ROOM[thing]}.",
        lambda: f"It is {_truth(rng.random() < 0.5)} that {name} is {rng.choice(('happy', 'tired', 'hungry'))}.",
        lambda: f"{name} says yes and {friend} says no.",
    )
    return rng.choice(makers)()


def synthetic_pretraining_text(n: int, seed: int = 0) -> list[str]:
    """`n` short paragraphs of world narrative (3–6 sentences), no question/answer format."""
    rng = random.Random(f"pretraining/{seed}")
    return [" ".join(_world_sentence(rng) for _ in range(rng.randint(3, 6))) for _ in range(n)]
