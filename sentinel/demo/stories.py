"""A seeded generator of short, simple children's stories: the corpus of the `stories-gpt2` demo model.

Every story is assembled from hand-written sentence templates (a character, a place, a wish, a problem, a
helper, an ending), so the language is plain and consistent, which is what lets a tiny model write readable
text (the TinyStories lesson). The text is 100% synthetic; the model card says so.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

# name, pronoun, possessive, what they are
CHARACTERS: tuple[tuple[str, str, str, str], ...] = (
    ("Lily", "she", "her", "girl"), ("Tom", "he", "his", "boy"), ("Mia", "she", "her", "girl"),
    ("Ben", "he", "his", "boy"), ("Anna", "she", "her", "girl"), ("Sam", "he", "his", "boy"),
    ("Lucy", "she", "her", "girl"), ("Max", "he", "his", "boy"), ("Emma", "she", "her", "girl"),
    ("Jack", "he", "his", "boy"), ("Sara", "she", "her", "girl"), ("Leo", "he", "his", "boy"),
    ("Zoe", "she", "her", "girl"), ("Tim", "he", "his", "boy"), ("Ella", "she", "her", "girl"),
    ("Nick", "he", "his", "boy"), ("Rosie", "she", "her", "cat"), ("Spot", "he", "his", "dog"),
    ("Pip", "he", "his", "mouse"), ("Daisy", "she", "her", "duck"), ("Fluffy", "she", "her", "rabbit"),
    ("Bruno", "he", "his", "bear"), ("Coco", "she", "her", "bird"), ("Rusty", "he", "his", "fox"),
    ("Ollie", "he", "his", "frog"), ("Bella", "she", "her", "puppy"), ("Kitty", "she", "her", "kitten"),
    ("Sunny", "he", "his", "lion"),
)
TRAITS = ("kind", "brave", "shy", "curious", "happy", "clever", "funny", "gentle", "busy", "cheerful", "small",
          "friendly", "quiet", "playful")
HOMES = ("a small house", "a yellow house", "a little cottage", "a cozy home", "a big old house", "a warm nest",
         "a house with a red door", "a little hut")
PLACES = ("park", "forest", "garden", "farm", "beach", "river", "hill", "meadow", "lake", "village", "pond",
          "field", "playground", "woods")
ACTIVITIES = ("play outside", "run in the grass", "sing songs", "draw pictures", "read books", "look at the stars",
              "pick flowers", "jump in puddles", "help others", "build things", "dance", "climb trees",
              "watch the clouds", "play with friends")
OBJECTS = ("red ball", "blue kite", "little boat", "shiny stone", "old book", "toy car", "yellow hat",
           "green balloon", "teddy bear", "wooden box", "silver key", "pink bag", "big apple", "paper star",
           "small drum", "magic stick")
WEATHER = ("The sun was shining and the birds were singing.", "The sky was blue and the air was warm.",
           "It was a cold and windy day.", "The morning was bright and quiet.",
           "There were soft white clouds in the sky.", "The leaves were red and orange.")
FEELINGS_GOOD = ("happy", "glad", "proud", "excited", "thankful")
FEELINGS_BAD = ("sad", "worried", "scared", "upset", "lonely")
ENDINGS = (
    "From that day on, {name} knew that friends make everything better.",
    "After that, {name} and {friend} played together every day.",
    "It was the best day ever, and {name} smiled all the way home.",
    "That night, {name} went to bed with a big smile.",
)
# one extra ending per kind of problem (same order as in `_problem`)
MORALS = (
    "{Name} learned to be careful and to look after {pos} things.",
    "{Name} learned that it is good to ask for help.",
    "{Name} learned that a rainy day can end with something beautiful.",
    "{Name} learned that sharing makes everyone happy.",
    "{Name} learned that a good friend can fix almost anything.",
    "{Name} learned that being brave is not so hard when you are not alone.",
)


@dataclass
class StoryCorpus:
    """Generated stories and what made them (seed, counts, a fingerprint of the text)."""

    train: list[str]
    validation: list[str]
    seed: int
    sha256: str = ""
    info: dict = field(default_factory=dict)


def _cap(text: str) -> str:
    """Upper-case the first letter only."""
    return text[:1].upper() + text[1:]


def _pick_friend(rng: random.Random, hero: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
    """A second character, different from the hero."""
    while True:
        friend = rng.choice(CHARACTERS)
        if friend[0] != hero[0]:
            return friend


def _problem(rng: random.Random, s: dict[str, Any]) -> list[str]:
    """The middle of the story: a problem, an attempt and how it was solved (sentences in order)."""
    kind = s["problem"]
    if kind == 0:  # lost thing
        return [
            "When {pron} wanted to go home, {pron} could not find {pos} {obj}.",
            rng.choice(("{Name} looked under the bushes and behind the trees.",
                        "{Name} looked everywhere, but the {obj} was gone.")),
            "{Name} felt {bad} and started to cry.",
            "Then {friend} the {fkind} came by and asked, \"Why are you {bad}?\"",
            "\"I lost my {obj},\" said {name}.",
            "\"Do not worry, I will help you,\" said {friend}.",
            rng.choice(("They looked together, and soon {friend} found the {obj} near a big rock.",
                        "They looked together, and at last they found the {obj} under a tree.")),
            "{Name} was so {good} and said, \"Thank you, {friend}!\"",
        ]
    if kind == 1:  # stuck up high
        return [
            "The wind was strong, and the {obj} flew up into a tall tree.",
            "{Name} tried to reach it, but the tree was too high.",
            "{Name} felt {bad}.",
            "Just then, {friend} the {fkind} saw {obj_pron} and came to help.",
            rng.choice(("{Friend} found a long stick and pushed the {obj} down.",
                        "{Friend} climbed up the tree and gently brought the {obj} down.")),
            "The {obj} was safe again, and {name} gave {friend} a big hug.",
        ]
    if kind == 2:  # rain
        return [
            "Suddenly, dark clouds came and it started to rain.",
            "{Name} did not want the {obj} to get wet.",
            "{Pron} ran to find a dry place, but {pron} did not know where to go.",
            "Then {name} saw {friend} the {fkind} waving from a little shed.",
            "\"Come in here!\" said {friend}.",
            "{Name} and the {obj} stayed warm and dry until the rain stopped.",
            "When the sun came back, they saw a big rainbow in the sky.",
        ]
    if kind == 3:  # a sad friend
        return [
            "On the way, {name} met {friend} the {fkind}, who was sitting alone.",
            "{Friend} looked {bad}.",
            "\"What is wrong?\" asked {name}.",
            "\"Nobody wants to play with me,\" said {friend}.",
            "{Name} thought for a moment and said, \"You can play with me and my {obj}.\"",
            "They played all afternoon and laughed a lot.",
            "{Friend} was not {bad} anymore.",
        ]
    if kind == 4:  # broken thing
        return [
            "{Name} played with the {obj} so much that it broke.",
            "{Name} felt very {bad} and did not know what to do.",
            "{Pron} took the broken {obj} to {friend} the {fkind}.",
            "{Friend} was good at fixing things.",
            "\"Let me see,\" said {friend}, and worked on it for a long time.",
            "At last, the {obj} was as good as new.",
            "\"You are the best,\" said {name}, and {pron} felt {good} again.",
        ]
    return [  # lost the way
        "{Name} walked so far that {pron} could not see {pos} home anymore.",
        "The sky was getting dark, and {name} felt {bad}.",
        "Then {pron} heard a small voice. It was {friend} the {fkind}.",
        "\"I know the way home,\" said {friend}. \"Follow me.\"",
        "They walked together past the {place2} and over a little bridge.",
        "Soon {name} saw the lights of {pos} home.",
        "{Name} thanked {friend} and ran inside, {good} and safe.",
    ]


def make_story(rng: random.Random) -> str:
    """One story of roughly 100-180 words, all choices drawn from `rng`."""
    hero = rng.choice(CHARACTERS)
    friend = _pick_friend(rng, hero)
    name, pron, pos, kind = hero
    place, place2 = rng.sample(PLACES, 2)
    s = {
        "name": name, "Name": name, "pron": pron, "Pron": _cap(pron), "pos": pos, "kind": kind,
        "friend": friend[0], "Friend": friend[0], "fkind": friend[3], "obj": rng.choice(OBJECTS),
        "obj_pron": "him" if pron == "he" else "her", "place": place, "place2": place2,
        "good": rng.choice(FEELINGS_GOOD), "bad": rng.choice(FEELINGS_BAD), "trait": rng.choice(TRAITS),
        "home": rng.choice(HOMES), "activity": rng.choice(ACTIVITIES), "problem": rng.randrange(len(MORALS)),
    }
    opening = rng.choice((
        "Once upon a time, there was a {trait} little {kind} named {name}.",
        "Once upon a time, in {home} near the {place}, there lived a {trait} {kind} named {name}.",
        "There was once a {trait} {kind} called {name}.",
        "{Name} was a {trait} little {kind}.",
    ))
    sentences = [opening]
    if "lived" not in opening:
        sentences.append("{Pron} lived in {home} near the {place}.")
    sentences.append(rng.choice(("{Name} loved to {activity}.", "Every day, {name} liked to {activity}.",
                                 "More than anything, {name} liked to {activity}.")))
    if rng.random() < 0.5:
        sentences.append(rng.choice(WEATHER))
    sentences.append(rng.choice((
        "One day, {name} took {pos} {obj} and went to the {place}.",
        "One morning, {name} went to the {place} with {pos} {obj}.",
        "One day, {pos} mom gave {obj_pron} a {obj}, and {name} ran to the {place} to play with it.",
    )))
    sentences.extend(_problem(rng, s))
    sentences.append(rng.choice(ENDINGS + (MORALS[s["problem"]],) * 2))
    return " ".join(sentence.format(**s) for sentence in sentences)


def build_story_corpus(n_train: int, n_validation: int, seed: int = 0) -> StoryCorpus:
    """`n_train` + `n_validation` stories; validation stories come from a separate seeded stream."""
    train_rng = random.Random(f"stories-train-{seed}")
    validation_rng = random.Random(f"stories-validation-{seed}")
    train = [make_story(train_rng) for _ in range(n_train)]
    seen = set(train)
    validation: list[str] = []
    while len(validation) < n_validation:
        story = make_story(validation_rng)
        if story not in seen:  # the validation split never repeats a training story verbatim
            validation.append(story)
    digest = hashlib.sha256("\n".join(train + validation).encode("utf-8")).hexdigest()
    info = {"generator": "sentinel.demo.stories", "seed": seed, "synthetic_share": 1.0,
            "train_documents": len(train), "validation_documents": len(validation),
            "train_chars": sum(map(len, train)), "validation_chars": sum(map(len, validation)),
            "distinct_train_stories": len(seen)}
    return StoryCorpus(train=train, validation=validation, seed=seed, sha256=digest, info=info)
