"""A probabilistic grammar of toy English: its lexicon, its corpus sentences and its minimal pairs.

Sentences are lowercase, one space between tokens, punctuation (`.` `?`) as its own token. Every minimal pair is
one grammatical sentence with exactly one word substituted at the slot its phenomenon is about, so good and bad have
the same length and `diff_tokens` objectives see the phenomenon and nothing else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from gradspace.errors import GradspaceError

SG, PL = "sg", "pl"
MALE, FEMALE = "m", "f"


def _flip(number: str) -> str:
    return PL if number == SG else SG


@dataclass(frozen=True)
class Noun:
    """A noun with both number forms.

    `category` is the taxonomy class category statements talk about; `kind` the finer class verbs select
    (a verb that eats takes food, a verb that writes takes texts); `gender` is set for gendered people only.
    """

    singular: str
    plural: str
    category: str
    kind: str
    gender: str | None = None

    def form(self, number: str) -> str:
        return self.singular if number == SG else self.plural

    @property
    def animate(self) -> bool:
        return self.kind in ("animal", "person")


@dataclass(frozen=True)
class Verb:
    """A verb's present (plural = base, 3sg), past and past participle; `objects` are the noun kinds it takes
    as a direct object (empty: intransitive)."""

    base: str
    third: str
    past: str
    participle: str
    objects: tuple[str, ...]

    def present(self, number: str) -> str:
        return self.third if number == SG else self.base

    @property
    def transitive(self) -> bool:
        return bool(self.objects)

    @property
    def irregular_participle(self) -> bool:
        """The participle differs from the past (ate/eaten) and from the present (not run/ran/run), so putting
        one in the other's place is always an error."""
        return self.participle not in (self.past, self.base, self.third)


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _third_person(base: str) -> str:
    if base.endswith(("s", "sh", "ch", "x", "o")):
        return base + "es"
    if base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ies"
    return base + "s"


def _regular_past(base: str) -> str:
    if base.endswith("e"):
        return base + "d"
    if base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ied"
    return base + "ed"


def _nouns(category: str, kind: str, words: str, gender: str | None = None) -> list[Noun]:
    """`words` is space-separated singulars; `sg/pl` gives an irregular plural."""
    nouns = []
    for entry in words.split():
        singular, _, plural = entry.partition("/")
        nouns.append(Noun(singular, plural or _plural(singular), category, kind, gender))
    return nouns


def _verb(base: str, objects: str = "", past: str | None = None, participle: str | None = None) -> Verb:
    past = past or _regular_past(base)
    return Verb(base, _third_person(base), past, participle or past, tuple(sorted(objects.split())))


ANIMAL_KINDS = ("animal", "person")
ALL_KINDS = "animal person thing food text place"

NOUNS: tuple[Noun, ...] = tuple(
    _nouns("mammal", "animal", "dog cat horse cow pig mouse/mice rabbit bear lion tiger wolf/wolves fox goat monkey "
           "elephant whale bat squirrel donkey camel zebra giraffe rat hamster dolphin kangaroo otter badger")
    + _nouns("bird", "animal", "robin sparrow eagle owl crow parrot pigeon duck swan goose/geese hawk penguin chicken "
             "turkey peacock falcon raven heron flamingo/flamingos ostrich")
    + _nouns("fish", "animal", "shark eel minnow guppy sardine anchovy herring tuna flounder piranha stingray seahorse")
    + _nouns("person", "person", "man/men king boy prince father brother son uncle husband nephew actor waiter monk "
             "duke grandfather gentleman/gentlemen", MALE)
    + _nouns("person", "person", "woman/women queen girl princess mother sister daughter aunt wife/wives niece "
             "actress waitress nun duchess grandmother lady", FEMALE)
    + _nouns("person", "person", "child/children teacher doctor student farmer baker pilot soldier sailor painter "
             "singer dancer")
    + _nouns("object", "thing", "cup ball box chair table key hat shoe clock lamp stone bottle knife/knives coin pen "
             "bag bell rope basket candle mirror blanket toy drum kite ring picture")
    + _nouns("object", "food", "cake apple carrot cookie egg sandwich orange banana pie potato/potatoes")
    + _nouns("object", "text", "letter book map poem story note song")
    + _nouns("place", "place", "park house city village school church garden farm forest river lake market castle "
             "library beach mountain island town field hill")
)

VERBS: tuple[Verb, ...] = (
    # Participle differs from the past: the irregular_participle task swaps the two.
    _verb("see", ALL_KINDS, "saw", "seen"),
    _verb("eat", "food", "ate", "eaten"),
    _verb("write", "text", "wrote", "written"),
    _verb("take", "thing food text animal", "took", "taken"),
    _verb("give", "thing food text", "gave", "given"),
    _verb("break", "thing", "broke", "broken"),
    _verb("steal", "thing food text", "stole", "stolen"),
    _verb("hide", "thing food text animal", "hid", "hidden"),
    _verb("bite", "animal person food", "bit", "bitten"),
    _verb("forget", "person thing text place", "forgot", "forgotten"),
    _verb("choose", ALL_KINDS, "chose", "chosen"),
    _verb("throw", "thing food", "threw", "thrown"),
    _verb("know", "animal person place text", "knew", "known"),
    _verb("draw", "animal person thing place", "drew", "drawn"),
    _verb("shake", "thing", "shook", "shaken"),
    _verb("ride", "animal", "rode", "ridden"),
    _verb("forgive", "animal person", "forgave", "forgiven"),
    _verb("wake", "animal person", "woke", "woken"),
    _verb("speak", "", "spoke", "spoken"),
    _verb("sing", "", "sang", "sung"),
    _verb("swim", "", "swam", "swum"),
    _verb("fly", "", "flew", "flown"),
    _verb("grow", "", "grew", "grown"),
    _verb("fall", "", "fell", "fallen"),
    _verb("go", "", "went", "gone"),
    # Past and participle coincide.
    _verb("find", ALL_KINDS, "found"),
    _verb("hold", "animal thing food text", "held"),
    _verb("buy", "thing food text", "bought"),
    _verb("bring", "animal thing food text", "brought"),
    _verb("catch", "animal thing", "caught"),
    _verb("hear", "animal person", "heard"),
    _verb("meet", "animal person", "met"),
    _verb("chase", "animal person"),
    _verb("follow", "animal person"),
    _verb("help", "animal person"),
    _verb("watch", ALL_KINDS),
    _verb("visit", "person place"),
    _verb("like", ALL_KINDS),
    _verb("love", ALL_KINDS),
    _verb("carry", "animal thing food text"),
    _verb("push", "animal person thing"),
    _verb("kick", "animal person thing"),
    _verb("clean", "thing place"),
    _verb("paint", "thing place"),
    _verb("run", "", "ran", "run"),
    _verb("sleep", "", "slept"),
    _verb("walk"),
    _verb("jump"),
    _verb("smile"),
    _verb("laugh"),
    _verb("wait"),
    _verb("cry"),
    _verb("play"),
    _verb("arrive"),
)
# Verbs of saying and thinking take a `that` clause.
ATTITUDE_VERBS: tuple[Verb, ...] = (
    _verb("think", "", "thought"),
    _verb("say", "", "said"),
    _verb("believe"),
    _verb("hope"),
    _verb("know", "", "knew", "known"),
)

NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
                "seventeen eighteen nineteen twenty").split()
DIGITS = [str(value) for value in range(1, 21)]
ADJECTIVES = ("big small old young happy sad red green brown white black little tall quiet clever hungry lazy "
              "angry").split()
# Determiners that fix the noun's number; `the` and `no` go with both.
SINGULAR_DETERMINERS = ("a", "this", "that", "every", "each")
PLURAL_DETERMINERS = ("these", "those", "some", "many", "several", "few", "all", "both")
PREPOSITIONS = ("near", "behind", "beside", "with")
PLACE_PREPOSITIONS = ("in", "from")
# Adverbs in the slot after the auxiliary: `not`/`never` license NPIs there, the others do not.
LICENSING_ADVERBS = ("not", "never")
NONLICENSING_ADVERBS = ("also", "already", "often", "surely")
REFLEXIVES = {(SG, MALE): "himself", (SG, FEMALE): "herself", (SG, None): "itself", (PL, None): "themselves"}
HAVE = {SG: "has", PL: "have"}
DO = {SG: "does", PL: "do"}
BE = {SG: "is", PL: "are"}
# The taxonomy: each category name is itself a word (singular, plural) that category statements use.
CATEGORY_WORDS = {
    "mammal": ("mammal", "mammals"),
    "bird": ("bird", "birds"),
    "fish": ("fish", "fish"),
    "animal": ("animal", "animals"),
    "person": ("person", "people"),
    "object": ("object", "objects"),
    "place": ("place", "places"),
    "number": ("number", "numbers"),
}
FUNCTION_WORDS = ("the", "an", "no", "any", "ever", "that", "did", "yes", "is", "are", ".", "?")


def _category_members() -> dict[str, tuple[str, ...]]:
    members: dict[str, list[str]] = {name: [] for name in CATEGORY_WORDS}
    for noun in NOUNS:
        forms = [noun.singular, noun.plural]
        members[noun.category] += forms
        if noun.kind == "animal":
            members["animal"] += forms
    members["number"] = NUMBER_WORDS + DIGITS
    return {name: tuple(dict.fromkeys(words)) for name, words in members.items()}


CATEGORIES: dict[str, tuple[str, ...]] = _category_members()

SYNTH_TASKS: dict[str, str] = {
    "sva_simple": "agreement",
    "sva_pp": "agreement",
    "sva_subj_rc": "agreement",
    "sva_obj_rc": "agreement",
    "det_noun": "determiner_noun",
    "number_noun": "determiner_noun",
    "anaphor_number": "anaphor",
    "anaphor_gender": "anaphor",
    "npi_licensing": "npi",
    "npi_any": "npi",
    "irregular_participle": "irregular",
    "category_question": "semantics",
}


def realize(tokens: list[str]) -> str:
    """Join tokens, choosing `an` before a vowel."""
    words = [
        "an" if token == "a" and index + 1 < len(tokens) and tokens[index + 1][0] in "aeiou" else token
        for index, token in enumerate(tokens)
    ]
    return " ".join(words)


@dataclass
class _Phrase:
    tokens: list[str]
    number: str


@dataclass
class _Draft:
    """A grammatical sentence and the one substitution that makes its ungrammatical twin."""

    tokens: list[str]
    slot: int
    bad_word: str

    def pair(self) -> tuple[str, str]:
        bad = list(self.tokens)
        bad[self.slot] = self.bad_word
        return realize(self.tokens), realize(bad)


class Grammar:
    """Sample corpus sentences (`sentence`) and minimal pairs (`pair`) of the toy language.

    The corpus is a mixture of general clauses and the grammatical halves of every task's construction, so a
    language model trained on it sees each phenomenon with both attractor numbers, and the pairs test it.
    """

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)  # used when a caller passes no rng of its own
        self.vocabulary: list[str] = sorted(self._all_words())
        self._animates = [noun for noun in NOUNS if noun.animate]
        self._people = [noun for noun in NOUNS if noun.kind == "person"]
        self._gendered = {gender: [noun for noun in self._people if noun.gender == gender] for gender in (MALE, FEMALE)}
        self._places = [noun for noun in NOUNS if noun.kind == "place"]
        self._non_places = [noun for noun in NOUNS if noun.kind != "place"]
        self._by_kind = {kind: [noun for noun in NOUNS if noun.kind == kind] for kind in ALL_KINDS.split()}
        self._pools: dict[tuple[str, ...], list[Noun]] = {}  # nouns of a tuple of kinds, filled on first use
        self._transitives = [verb for verb in VERBS if verb.transitive]
        self._irregulars = [verb for verb in VERBS if verb.irregular_participle]
        self._pair_builders: dict[str, Callable[[random.Random], _Draft]] = {
            "sva_simple": self._sva_simple,
            "sva_pp": self._sva_pp,
            "sva_subj_rc": self._sva_subj_rc,
            "sva_obj_rc": self._sva_obj_rc,
            "det_noun": self._det_noun,
            "number_noun": self._number_noun,
            "anaphor_number": self._anaphor_number,
            "anaphor_gender": self._anaphor_gender,
            "npi_licensing": self._npi_licensing,
            "npi_any": self._npi_any,
            "irregular_participle": self._irregular_participle,
            "category_question": self._category_question,
        }
        # General text and the good halves of the task constructions, with their weights. The taxonomy gets 30%:
        # at 15%, synth-1m learned which words are animals but not which animal is which ("is a robin a mammal ?"
        # got yes as often as "is a robin a bird ?"), so no label could tell birds from mammals.
        self._constructions: list[tuple[Callable[[random.Random], list[str]], float]] = [
            (self._clause, 0.25),
            (self._npi_clause, 0.07),
            (self._reflexive_clause, 0.07),
            (self._embedded_clause, 0.06),
            (self._category_statement, 0.20),
            (self._category_question_with_answer, 0.10),
        ] + [(lambda rng, build=build: build(rng).tokens, 0.25 / len(self._pair_builders))
             for build in self._pair_builders.values()]

    # ----------------------------------------------------------------------------------------- public API
    def sentence(self, rng: random.Random | None = None) -> str:
        """One grammatical corpus sentence from the mixture of all constructions."""
        rng = rng or self.rng
        constructions, weights = zip(*self._constructions)
        return realize(rng.choices(constructions, weights)[0](rng))

    def pair(self, task: str, rng: random.Random | None = None) -> tuple[str, str]:
        """A (good, bad) minimal pair for `task`, one word apart."""
        if task not in self._pair_builders:
            raise GradspaceError(f"unknown synthetic task {task!r}; choose one of {', '.join(SYNTH_TASKS)}")
        return self._pair_builders[task](rng or self.rng).pair()

    # ----------------------------------------------------------------------------------------- lexicon
    @staticmethod
    def _all_words() -> set[str]:
        words = set(FUNCTION_WORDS)
        for noun in NOUNS:
            words |= {noun.singular, noun.plural}
        for verb in VERBS + ATTITUDE_VERBS:
            words |= {verb.base, verb.third, verb.past, verb.participle}
        for forms in CATEGORY_WORDS.values():
            words |= set(forms)
        words |= set(NUMBER_WORDS) | set(DIGITS) | set(ADJECTIVES) | set(SINGULAR_DETERMINERS)
        words |= set(PLURAL_DETERMINERS) | set(PREPOSITIONS) | set(PLACE_PREPOSITIONS)
        words |= set(LICENSING_ADVERBS) | set(NONLICENSING_ADVERBS) | set(REFLEXIVES.values())
        words |= set(HAVE.values()) | set(DO.values())
        return words

    def _noun(self, rng: random.Random, kinds: tuple[str, ...]) -> Noun:
        if kinds not in self._pools:
            self._pools[kinds] = [noun for kind in kinds for noun in self._by_kind[kind]]
        return rng.choice(self._pools[kinds])

    # ----------------------------------------------------------------------------------------- phrases
    @staticmethod
    def _determiner(rng: random.Random, number: str, allow_no: bool = True) -> list[str]:
        """A determiner for a noun of `number`: mostly `the`, sometimes number-marking ones and numerals."""
        roll = rng.random()
        if roll < 0.45:
            return ["the"]
        if roll < 0.5 and allow_no:
            return ["no"]
        if number == SG:
            if roll < 0.9:
                return [rng.choice(SINGULAR_DETERMINERS)]
            return [rng.choice(("one", "1"))]
        if roll < 0.85:
            return [rng.choice(PLURAL_DETERMINERS)]
        return [rng.choice(NUMBER_WORDS[1:] + DIGITS[1:])]

    def _simple_np(self, rng: random.Random, noun: Noun, number: str, allow_no: bool = True) -> list[str]:
        tokens = self._determiner(rng, number, allow_no)
        if rng.random() < 0.15:
            tokens = tokens + [rng.choice(ADJECTIVES)]
        return tokens + [noun.form(number)]

    def _pp(self, rng: random.Random, head: Noun) -> list[str]:
        """A prepositional modifier whose noun (the attractor) has either number."""
        if rng.random() < 0.2:
            noun, preposition = rng.choice(self._places), rng.choice(PLACE_PREPOSITIONS)
        else:
            noun, preposition = rng.choice(self._non_places), rng.choice(PREPOSITIONS)
            while noun is head:  # not `the dog near the dogs`
                noun = rng.choice(self._non_places)
        return [preposition] + self._simple_np(rng, noun, rng.choice((SG, PL)), allow_no=False)

    def _subject_rc(self, rng: random.Random, head_number: str) -> list[str]:
        """`that sees the birds`: the relative verb agrees with the head; its object, the attractor, has either
        number."""
        verb = rng.choice(self._transitives)
        noun = self._noun(rng, verb.objects)
        attractor = self._simple_np(rng, noun, rng.choice((SG, PL)), allow_no=False)
        return ["that"] + self._finite(rng, verb, head_number) + attractor

    def _object_rc(self, rng: random.Random, head: Noun) -> list[str]:
        """`that the birds see`: the relative subject is the attractor (either number) and its verb agrees with it."""
        verb = rng.choice([verb for verb in self._transitives if head.kind in verb.objects])
        number = rng.choice((SG, PL))
        attractor = self._simple_np(rng, rng.choice(self._animates), number, allow_no=False)
        return ["that"] + attractor + self._finite(rng, verb, number)

    def _np(self, rng: random.Random, kinds: tuple[str, ...], number: str | None = None,
            modify: bool = True, allow_no: bool = True) -> _Phrase:
        """A noun phrase, sometimes with a PP or relative clause modifier."""
        number = number or rng.choice((SG, PL))
        noun = self._noun(rng, kinds)
        tokens = self._simple_np(rng, noun, number, allow_no=allow_no)
        roll = rng.random() if modify else 1.0
        if roll < 0.12:
            tokens += self._pp(rng, noun)
        elif roll < 0.18 and noun.animate:
            tokens += self._subject_rc(rng, number)
        elif roll < 0.24:
            tokens += self._object_rc(rng, noun)
        return _Phrase(tokens, number)

    @staticmethod
    def _finite(rng: random.Random, verb: Verb, number: str) -> list[str]:
        """The verb in a random affirmative tense: present, past or perfect."""
        roll = rng.random()
        if roll < 0.5:
            return [verb.present(number)]
        if roll < 0.75:
            return [verb.past]
        return [HAVE[number], verb.participle]

    @staticmethod
    def _agreeing(rng: random.Random, verb: Verb, number: str) -> tuple[list[str], str]:
        """A verb group whose first word agrees with the subject, and that word's wrong-number form."""
        roll = rng.random()
        wrong = _flip(number)
        if roll < 0.6:
            return [verb.present(number)], verb.present(wrong)
        if roll < 0.85:
            adverb = [rng.choice(NONLICENSING_ADVERBS)] if rng.random() < 0.2 else []
            return [HAVE[number]] + adverb + [verb.participle], HAVE[wrong]
        return [DO[number], "not", verb.base], DO[wrong]

    def _object(self, rng: random.Random, verb: Verb, modify: bool = True, allow_no: bool = True) -> list[str]:
        return self._np(rng, verb.objects, modify=modify, allow_no=allow_no).tokens if verb.transitive else []

    def _location(self, rng: random.Random) -> list[str]:
        """A sentence-final place, now and then."""
        if rng.random() < 0.1:
            return [rng.choice(("in", "near")), "the", rng.choice(self._places).singular]
        return []

    # ----------------------------------------------------------------------------------------- corpus constructions
    def _clause_tokens(self, rng: random.Random, subject: _Phrase | None = None) -> list[str]:
        subject = subject or self._np(rng, ANIMAL_KINDS)
        verb = rng.choice(VERBS)
        roll = rng.random()
        if roll < 0.7:
            group, _ = self._agreeing(rng, verb, subject.number)
        elif roll < 0.9:
            group = [verb.past]
        else:
            group = ["did", "not", verb.base]
        return subject.tokens + group + self._object(rng, verb) + self._location(rng)

    def _clause(self, rng: random.Random) -> list[str]:
        return self._clause_tokens(rng) + ["."]

    def _npi_predicate(self, rng: random.Random, number: str, npi: str, negate: bool) -> list[str]:
        """A perfect verb group with `ever` (`has not ever seen a cat`) or an object with `any` (`has never seen
        any cats`). With `negate`, `not`/`never` right after the auxiliary licenses it; without, the subject must
        (`no dog`)."""
        licensor = [rng.choice(LICENSING_ADVERBS if npi == "any" else ("not",))] if negate else []
        if npi == "ever":
            verb = rng.choice(VERBS)
            # No second negation in the object: `has not ever seen no cat` is a double negative.
            obj = self._object(rng, verb, modify=False, allow_no=False)
            return [HAVE[number]] + licensor + ["ever", verb.participle] + obj
        verb = rng.choice(self._transitives)
        noun = self._noun(rng, verb.objects).form(PL if rng.random() < 0.7 else SG)
        return [HAVE[number]] + licensor + [verb.participle, "any", noun]

    def _npi_clause(self, rng: random.Random) -> list[str]:
        """`no dog has ever seen a cat .`, `the dog has not seen any cats .`"""
        number, npi = rng.choice((SG, PL)), rng.choice(("ever", "any"))
        if rng.random() < 0.4:
            subject = ["no", self._noun(rng, ANIMAL_KINDS).form(number)]
            return subject + self._npi_predicate(rng, number, npi, negate=False) + ["."]
        subject = self._np(rng, ANIMAL_KINDS, number, allow_no=False).tokens
        return subject + self._npi_predicate(rng, number, npi, negate=True) + ["."]

    def _reflexive_tokens(self, rng: random.Random, subject_noun: Noun, number: str,
                          attractor: bool) -> tuple[list[str], int]:
        """`the king near the women sees himself`: returns tokens and the reflexive's index."""
        tokens = self._simple_np(rng, subject_noun, number, allow_no=False)
        if attractor:
            tokens += self._pp(rng, subject_noun)
        verb = rng.choice([verb for verb in self._transitives if subject_noun.kind in verb.objects])
        group = self._agreeing(rng, verb, number)[0] if rng.random() < 0.7 else [verb.past]
        tokens += group + [self._reflexive(rng, subject_noun, number)]
        return tokens, len(tokens) - 1

    @staticmethod
    def _reflexive(rng: random.Random, noun: Noun, number: str) -> str:
        if number == PL:
            return REFLEXIVES[(PL, None)]
        if noun.kind == "animal":
            return REFLEXIVES[(SG, None)]
        # A person without grammatical gender may be either.
        return REFLEXIVES[(SG, noun.gender or rng.choice((MALE, FEMALE)))]

    def _reflexive_clause(self, rng: random.Random) -> list[str]:
        tokens, _ = self._reflexive_tokens(rng, rng.choice(self._animates), rng.choice((SG, PL)),
                                           attractor=rng.random() < 0.3)
        return tokens + ["."]

    def _attitude_prefix(self, rng: random.Random) -> list[str]:
        """`the queen thinks that`"""
        number = rng.choice((SG, PL))
        subject = self._simple_np(rng, rng.choice(self._people), number, allow_no=False)
        return subject + self._finite(rng, rng.choice(ATTITUDE_VERBS), number) + ["that"]

    def _embedded_clause(self, rng: random.Random) -> list[str]:
        prefix = self._attitude_prefix(rng)
        if rng.random() < 0.3:
            number = rng.choice((SG, PL))
            subject = ["no", self._noun(rng, ANIMAL_KINDS).form(number)]
            return prefix + subject + self._npi_predicate(rng, number, rng.choice(("ever", "any")), False) + ["."]
        return prefix + self._clause_tokens(rng, self._np(rng, ANIMAL_KINDS, modify=False)) + ["."]

    def _categories_of(self, word_noun: Noun | str) -> set[str]:
        if isinstance(word_noun, str):
            return {"number"}
        return {word_noun.category, "animal"} if word_noun.kind == "animal" else {word_noun.category}

    def _category_subject(self, rng: random.Random, numbers: bool = True) -> tuple[Noun | str, str]:
        """A noun or (if `numbers`) a number word or digit to say or ask something about, and its grammatical number."""
        if numbers and rng.random() < 0.15:
            return rng.choice(NUMBER_WORDS + DIGITS), SG
        return rng.choice(NOUNS), rng.choice((SG, PL))

    @staticmethod
    def _category_tokens(rng: random.Random, subject: Noun | str, number: str,
                         category: str) -> tuple[list[str], list[str]]:
        """Subject and predicate noun phrases: (`a dog`, `a mammal`), (`these big dogs`, `mammals`), (`7`, `a number`).

        Determiners and adjectives spread the questions evenly over a large space, so the pairs hold out a small
        share of the true (and of the false) questions and the corpus keeps asking about every noun and category."""
        singular, plural = CATEGORY_WORDS[category]
        if isinstance(subject, str):
            return [subject], ["a", singular]
        adjective = [rng.choice(ADJECTIVES)] if rng.random() < 0.5 else []
        if number == SG:
            return [rng.choice(("a", "the", "this", "that", "every"))] + adjective + [subject.singular], ["a", singular]
        determiner = rng.choice(([], ["the"], ["these"], ["those"], ["all"]))
        return determiner + adjective + [subject.plural], [plural]

    def _category_statement(self, rng: random.Random) -> list[str]:
        """`a dog is a mammal .`, `dogs are not birds .`"""
        subject, number = self._category_subject(rng)
        true_categories = self._categories_of(subject)
        if rng.random() < 0.75:
            category, negation = rng.choice(sorted(true_categories)), []
        else:
            category, negation = rng.choice(sorted(set(CATEGORY_WORDS) - true_categories)), ["not"]
        subject_tokens, predicate = self._category_tokens(rng, subject, number, category)
        return subject_tokens + [BE[number]] + negation + predicate + ["."]

    def _category_question_draft(self, rng: random.Random, numbers: bool = True) -> _Draft:
        subject, number = self._category_subject(rng, numbers)
        true_categories = self._categories_of(subject)
        answer = rng.random() < 0.5
        pool = true_categories if answer else set(CATEGORY_WORDS) - true_categories
        subject_tokens, predicate = self._category_tokens(rng, subject, number, rng.choice(sorted(pool)))
        tokens = [BE[number]] + subject_tokens + predicate + ["?", "yes" if answer else "no"]
        return _Draft(tokens, len(tokens) - 1, "no" if answer else "yes")

    def _category_question_with_answer(self, rng: random.Random) -> list[str]:
        return self._category_question_draft(rng).tokens

    # ----------------------------------------------------------------------------------------- pair builders
    def _sva(self, rng: random.Random, modifier: Callable[[Noun, str], list[str]]) -> _Draft:
        """Subject (with `modifier`), then a verb group whose first word is the agreement slot."""
        number = rng.choice((SG, PL))
        noun = rng.choice(self._animates)
        subject = self._simple_np(rng, noun, number, allow_no=False) + modifier(noun, number)
        verb = rng.choice(VERBS)
        group, wrong = self._agreeing(rng, verb, number)
        tokens = subject + group + self._object(rng, verb, modify=False) + ["."]
        return _Draft(tokens, len(subject), wrong)

    def _sva_simple(self, rng: random.Random) -> _Draft:
        return self._sva(rng, lambda noun, number: [])

    def _sva_pp(self, rng: random.Random) -> _Draft:
        return self._sva(rng, lambda noun, number: self._pp(rng, noun))

    def _sva_subj_rc(self, rng: random.Random) -> _Draft:
        return self._sva(rng, lambda noun, number: self._subject_rc(rng, number))

    def _sva_obj_rc(self, rng: random.Random) -> _Draft:
        return self._sva(rng, lambda noun, number: self._object_rc(rng, noun))

    def _object_agreement(self, rng: random.Random, determiner: Callable[[str], str]) -> _Draft:
        """`the dog sees these cats .`: the object noun's number is the slot, its determiner the cue."""
        subject = self._np(rng, ANIMAL_KINDS, modify=False, allow_no=False)
        verb = rng.choice(self._transitives)
        noun = self._noun(rng, verb.objects)
        number = rng.choice((SG, PL))
        obj = [determiner(number)] + ([rng.choice(ADJECTIVES)] if rng.random() < 0.15 else []) + [noun.form(number)]
        tokens = subject.tokens + self._finite(rng, verb, subject.number) + obj + ["."]
        return _Draft(tokens, len(tokens) - 2, noun.form(_flip(number)))

    def _det_noun(self, rng: random.Random) -> _Draft:
        return self._object_agreement(
            rng, lambda number: rng.choice(SINGULAR_DETERMINERS if number == SG else PLURAL_DETERMINERS))

    def _number_noun(self, rng: random.Random) -> _Draft:
        def numeral(number: str) -> str:
            words = rng.choice((NUMBER_WORDS, DIGITS))
            return words[0] if number == SG else rng.choice(words[1:])

        return self._object_agreement(rng, numeral)

    def _anaphor_number(self, rng: random.Random) -> _Draft:
        gender = rng.choice((MALE, FEMALE))
        number = rng.choice((SG, PL))
        tokens, slot = self._reflexive_tokens(rng, rng.choice(self._gendered[gender]), number, rng.random() < 0.4)
        wrong = REFLEXIVES[(SG, gender)] if number == PL else REFLEXIVES[(PL, None)]
        return _Draft(tokens + ["."], slot, wrong)

    def _anaphor_gender(self, rng: random.Random) -> _Draft:
        gender = rng.choice((MALE, FEMALE))
        tokens, slot = self._reflexive_tokens(rng, rng.choice(self._gendered[gender]), SG, rng.random() < 0.4)
        wrong = REFLEXIVES[(SG, FEMALE if gender == MALE else MALE)]
        return _Draft(tokens + ["."], slot, wrong)

    def _npi(self, rng: random.Random, npi: str) -> _Draft:
        """The licensor slot is right after the auxiliary (`has not ever` / `has also ever`), or the embedded
        subject's determiner (`... that no dog has ever` / `... that the dog has ever`); never the first word."""
        number = rng.choice((SG, PL))
        noun = self._noun(rng, ANIMAL_KINDS)
        if rng.random() < 0.4:
            prefix = self._attitude_prefix(rng)
            tokens = prefix + ["no", noun.form(number)] + self._npi_predicate(rng, number, npi, negate=False) + ["."]
            wrong = rng.choice(("the",) + (SINGULAR_DETERMINERS[:3] if number == SG else PLURAL_DETERMINERS[:3]))
            return _Draft(tokens, len(prefix), wrong)
        subject = self._simple_np(rng, noun, number, allow_no=False)
        tokens = subject + self._npi_predicate(rng, number, npi, negate=True) + ["."]
        return _Draft(tokens, len(subject) + 1, rng.choice(NONLICENSING_ADVERBS))

    def _npi_licensing(self, rng: random.Random) -> _Draft:
        return self._npi(rng, "ever")

    def _npi_any(self, rng: random.Random) -> _Draft:
        return self._npi(rng, "any")

    def _irregular_participle(self, rng: random.Random) -> _Draft:
        """`the dog has eaten the cake .` / `has ate`, and `the dog ate the cake .` / `the dog eaten`."""
        subject = self._np(rng, ANIMAL_KINDS, modify=rng.random() < 0.3, allow_no=False)
        verb = rng.choice(self._irregulars)
        if rng.random() < 0.6:
            adverb = [rng.choice(NONLICENSING_ADVERBS)] if rng.random() < 0.2 else []
            group, wrong = [HAVE[subject.number]] + adverb + [verb.participle], verb.past
        else:
            group, wrong = [verb.past], verb.participle
        slot = len(subject.tokens) + len(group) - 1
        return _Draft(subject.tokens + group + self._object(rng, verb, modify=False) + ["."], slot, wrong)

    def _category_question(self, rng: random.Random) -> _Draft:
        # Only 40 questions about numbers have the answer yes: held out as pairs they would leave the corpus
        # asking about numbers with the answer no alone.
        return self._category_question_draft(rng, numbers=False)
