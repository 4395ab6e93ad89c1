"""Discriminator prompts: a template with a `{word}` slot, a `{label}` slot (and an optional `{context}` slot),
tokenized once into pieces so that every example's prompt is assembled from token ids without re-tokenizing.

A prompt family says how the frozen LM's output is read (`readout`):
- answer: a yes/no question; the logit difference of the two answer tokens at the last position. The synthetic
  model is asked in its own language ("is a dog a mammal ?", "is seven a number ?": questions its corpus contains,
  with `{article}` realising the word's indefinite article as the corpus does); tokenizers with a chat template can
  get the question as a user turn, other models plain (few-shot) text.
- example_likelihood: the label conditions the example: log p(word | "... example of a <label>: ") minus
  log p(word | the family's label-free `neutral` template); `{word}` comes once, after the label.
- label_likelihood: the example conditions the label: log p(label | "<word> is a kind of "); `{label}` comes last.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from gradspace.errors import GradspaceError
from gradspace.evaluation.logprobs import prefix_token_id
from gradspace.labeling.articles import article_rule
from gradspace.labeling.config import PromptConfig
from gradspace.labeling.vocabulary import is_space_sensitive

SLOT_PATTERN = re.compile(r"\{(word|label|context|article|label_article)\}")


@dataclass(frozen=True)
class PromptSpec:
    style: str
    template: str
    answers: tuple[str, str] | None  # answer readout: (positive, negative) answer; each must be one token
    system: str | None = None  # chat only
    readout: str = "answer"  # answer | example_likelihood | label_likelihood
    neutral: str | None = None  # example_likelihood: the label-free template


@dataclass(frozen=True)
class Example:
    """One token to classify: its id and (for context-dependent features) the tokens before it in its text. `word`,
    where given, is the text the prompt spells at the word slot (an activation record's span, a word respelled for
    another model's tokenizer, several tokens there); else the token's own text."""

    token: int
    context: tuple[int, ...] = ()
    word: str = ""

    def text(self, tokenizer) -> str:
        return self.word or tokenizer.decode([self.token]).strip()


@dataclass
class PromptBatch:
    """Right-padded prompts after the shared prefix. Padding lies after every readout, so causal attention needs no mask."""

    input_ids: torch.Tensor  # [N, T]
    label_positions: torch.Tensor  # [N, L] where the label's L tokens go
    readout_positions: torch.Tensor  # [N] the last prompt token (answer: its next-token logits hold the answer)
    # [N] where the label's own article goes ("a mammal", "an animal"), for templates with {label_article}
    label_article_positions: torch.Tensor | None = None
    # example_likelihood: [N] the word's first token (it ends at the readout position), and the label-free prompts
    # [N, T'] (from the document start) with their word's first token [N] (it ends at the last non-padding token)
    word_starts: torch.Tensor | None = None
    neutral_ids: torch.Tensor | None = None
    neutral_word_starts: torch.Tensor | None = None
    neutral_ends: torch.Tensor | None = None

    def to(self, device) -> "PromptBatch":
        return PromptBatch(**{k: None if v is None else v.to(device) for k, v in self.as_dict().items()})

    def as_dict(self) -> dict[str, torch.Tensor | None]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def resolve_prompt_spec(prompt: PromptConfig, tokenizer, model_source: str, model_name: str = "") -> PromptSpec:
    """Pick the family for this model: `style=auto` means synth for synthetic models, the family the oracle check
    chose for the model (`prompt.style_by_model`), chat where the tokenizer has a chat template, plain otherwise."""
    style = prompt.style
    if style == "auto":
        if model_source == "synth":
            style = "synth"
        elif model_name in prompt.style_by_model:
            style = prompt.style_by_model[model_name]
        elif getattr(tokenizer, "chat_template", None):
            style = "chat"
        else:
            style = "plain"
    if style not in prompt.families:
        raise GradspaceError(f"prompt style '{style}' has no entry under prompt.families; add prompt.families.{style}.template")
    family = prompt.families[style]
    answers = None
    if family.readout == "answer":
        answers = tuple(family.answers or ())
        if len(answers) != 2:
            raise GradspaceError(f"prompt.families.{style}.answers must be [positive, negative], got {list(answers)}")
        answers = (str(answers[0]), str(answers[1]))
    if family.readout == "example_likelihood" and not family.neutral:
        raise GradspaceError(f"prompt.families.{style} reads the word's likelihood: give it a label-free `neutral` template")
    return PromptSpec(style=style, template=str(family.template), answers=answers, system=family.system, readout=family.readout,
                      neutral=None if family.neutral is None else str(family.neutral))


def word_token_id(tokenizer, word: str) -> int | None:
    """The single token that spells `word` where it follows a space, or None if it takes several tokens or is unknown."""
    text = (" " + word) if is_space_sensitive(tokenizer) else word
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return ids[0]


def template_pieces(text: str, tokenizer) -> tuple[list[list[int] | str], dict[str, bool]]:
    """Pieces alternating literal token ids and slot names, and which slots a space precedes: that space moves into
    the slot's tokens, where BPE tokenizers expect it (" dog", not " " + "dog")."""
    parts = SLOT_PATTERN.split(text)
    space_before: dict[str, bool] = {}
    pieces: list[list[int] | str] = []
    for index, part in enumerate(parts):
        if index % 2 == 1:
            pieces.append(part)
            continue
        if index + 1 < len(parts) and part.endswith(" "):
            space_before[parts[index + 1]] = True
            part = part.rstrip(" ")
        pieces.append(tokenizer.encode(part, add_special_tokens=False) if part else [])
    return pieces, space_before


class PromptBuilder:
    """Turns a `PromptSpec` into token pieces and assembles example prompts with `label_length` label slots."""

    def __init__(self, spec: PromptSpec, tokenizer, label_length: int, add_bos: bool = True):
        if label_length < 1:
            raise GradspaceError(f"label.length={label_length} must be at least 1")
        self.spec = spec
        self.tokenizer = tokenizer
        self.label_length = label_length
        self.space_sensitive = is_space_sensitive(tokenizer)
        text = self._render(spec, tokenizer)
        slots = SLOT_PATTERN.findall(text)
        if slots.count("label") != 1 or "word" not in slots:
            raise GradspaceError(
                f"prompt template {spec.template!r} must contain {{label}} exactly once and {{word}} at least once "
                f"(found {slots.count('label')} and {slots.count('word')}); fix prompt.families.{spec.style}.template"
            )
        if slots.count("label_article") > 1:
            raise GradspaceError(f"prompt template {spec.template!r} has {{label_article}} more than once; use it at most once")
        self.uses_label_article = "label_article" in slots
        if slots.count("context") > 1:
            raise GradspaceError(f"prompt template {spec.template!r} has {{context}} more than once; use it at most once")
        self.uses_context = "context" in slots
        self.readout = spec.readout
        self._check_readout_slots(slots)
        pieces, self.space_before = template_pieces(text, tokenizer)
        if self.readout == "example_likelihood" and pieces[-1]:
            raise GradspaceError(f"the example_likelihood readout reads the word at the prompt's end: remove the text after "
                                 f"{{word}} in {spec.template!r}")
        # The document-start token evaluation conditions on too (chat templates bring their own).
        self.start_ids = [prefix_token_id(tokenizer)] if add_bos and not self.is_chat else []
        # The literal tokens before the first slot are the same for every prompt: the shared (cacheable) prefix.
        self.prefix_ids: list[int] = self.start_ids + list(pieces[0])
        self.article = article_rule(spec.style)
        self.pieces = pieces[1:]
        self.answer_ids = tuple(self._single_token(answer) for answer in spec.answers) if spec.readout == "answer" else ()
        # What the label slots hold until the label's embeddings replace them.
        self.placeholder_id = prefix_token_id(tokenizer)
        self._takes_an: dict[int, torch.Tensor] = {}
        self.neutral_pieces, self.neutral_space_before = ([], {}) if spec.neutral is None else template_pieces(spec.neutral, tokenizer)
        # Each article slot spells its articles as its own place in the template asks (" a" after a space in BPE).
        self.article_ids = self._articles("article")  # the word's {article}
        self.label_article_ids = self._articles("label_article")
        if self.uses_label_article and any(len(self.label_article_ids[a]) != 1 for a in ("a", "an")):
            raise GradspaceError(f"{{label_article}} needs 'a' and 'an' to be single tokens; remove it from {spec.template!r}")

    def _articles(self, slot: str) -> dict[str, list[int]]:
        """{"", "a", "an"} -> token ids in `slot`; a vocabulary without "an" (a model trained on "is a eel ...") gets
        "a" before vowels too."""
        spelled = {article: self.spell(article, slot) for article in ("a", "an")}
        known = {article: ids for article, ids in spelled.items() if len(ids) == 1 and ids[0] != self.tokenizer.unk_token_id}
        return {"": [], "a": spelled["a"], "an": known.get("an", spelled["a"])}

    def takes_an(self, vocabulary_size: int) -> torch.Tensor:
        """[V] bool: tokens whose word takes "an" (the label article a soft label mixes in by its probability); all
        False where the template has no {label_article}. Computed once per builder (a vocabulary is 262k tokens)."""
        if vocabulary_size not in self._takes_an:
            mask = torch.zeros(vocabulary_size, dtype=torch.bool)
            if self.uses_label_article and self.label_article_ids["an"] != self.label_article_ids["a"]:
                size = min(len(self.tokenizer), vocabulary_size)
                for token, text in enumerate(self.tokenizer.batch_decode([[t] for t in range(size)])):
                    word = text.strip()
                    mask[token] = bool(word) and word.isalpha() and self.article(word) == "an"
            self._takes_an[vocabulary_size] = mask
        return self._takes_an[vocabulary_size]

    @property
    def is_chat(self) -> bool:
        return self.spec.style == "chat"

    def _check_readout_slots(self, slots: list[str]) -> None:
        """The likelihood readouts read a token sequence the label precedes or ends: say so when the template cannot."""
        where = f"fix prompt.families.{self.spec.style}.template {self.spec.template!r}"
        if self.readout == "example_likelihood":
            if slots.count("word") != 1 or slots.index("word") < slots.index("label") or slots[-1] != "word":
                raise GradspaceError(f"the example_likelihood readout needs {{word}} once, as the last slot, after {{label}}; {where}")
            neutral = SLOT_PATTERN.findall(self.spec.neutral or "")
            if (neutral.count("word") != 1 or neutral[-1] != "word" or "label" in neutral or "label_article" in neutral
                    or not self.spec.neutral.endswith("{word}")):
                raise GradspaceError(f"the neutral template {self.spec.neutral!r} needs {{word}} once, last, and no label")
        elif self.readout == "label_likelihood" and slots[-1] != "label":
            raise GradspaceError(f"the label_likelihood readout needs {{label}} as the last slot; {where}")

    def _render(self, spec: PromptSpec, tokenizer) -> str:
        if spec.style != "chat":
            return spec.template
        if not getattr(tokenizer, "chat_template", None):
            raise GradspaceError("prompt.style=chat but the tokenizer has no chat template; use prompt.style=plain")
        messages = ([{"role": "system", "content": spec.system}] if spec.system else []) + [
            {"role": "user", "content": spec.template}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _single_token(self, answer: str) -> int:
        ids = self.tokenizer.encode(answer, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise GradspaceError(
                f"answer {answer!r} is not a single known token for this tokenizer ({ids}); "
                f"set prompt.families.{self.spec.style}.answers to single tokens"
            )
        return ids[0]

    def _slot_ids(self, slot: str, example: Example) -> list[int]:
        if slot == "context":
            ids = list(example.context)
            return [i for i in ids if i not in self.tokenizer.all_special_ids]
        # The word is re-spelled from its text so that it reads as a word after the template's quote or space.
        word = example.text(self.tokenizer)
        if slot == "article":
            return list(self.article_ids[self.article(word)])
        return self.spell(word, "word")

    def spell(self, word: str, slot: str, space_before: dict[str, bool] | None = None) -> list[int]:
        space = (self.space_before if space_before is None else space_before).get(slot)
        prefix = " " if space and self.space_sensitive else ""
        return self.tokenizer.encode(prefix + word, add_special_tokens=False)

    def neutral(self, example: Example) -> tuple[list[int], int]:
        """The label-free prompt (from the document start) and where its word begins (its word ends it)."""
        ids = list(self.start_ids)
        word_start = -1
        for piece in self.neutral_pieces:
            if isinstance(piece, list):
                ids.extend(piece)
            elif piece == "word":
                word_start = len(ids)
                ids.extend(self.spell(example.text(self.tokenizer), "word", self.neutral_space_before))
            else:
                ids.extend(self._slot_ids(piece, example))
        return ids, word_start

    def build(self, example: Example) -> tuple[list[int], list[int], int]:
        """(token ids after the prefix, positions of the label slots in them, position of the label's article or -1);
        label slots hold a placeholder id, the label article "a" until the label decides."""
        ids: list[int] = []
        label_positions: list[int] = []
        article_position = -1
        placeholder = self.placeholder_id
        for piece in self.pieces:
            if isinstance(piece, list):
                ids.extend(piece)
            elif piece == "label":
                label_positions = list(range(len(ids), len(ids) + self.label_length))
                ids.extend([placeholder] * self.label_length)
            elif piece == "label_article":
                article_position = len(ids)
                ids.extend(self.label_article_ids["a"])
            else:
                ids.extend(self._slot_ids(piece, example))
        return ids, label_positions, article_position

    def batch(self, examples: Sequence[Example], pad_id: int) -> PromptBatch:
        built = [self.build(example) for example in examples]
        width = max(len(ids) for ids, _, _ in built)
        input_ids = torch.full((len(built), width), pad_id, dtype=torch.long)
        for row, (ids, _, _) in enumerate(built):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        label_positions = torch.tensor([positions for _, positions, _ in built], dtype=torch.long)
        readout = torch.tensor([len(ids) - 1 for ids, _, _ in built], dtype=torch.long)
        articles = torch.tensor([article for _, _, article in built], dtype=torch.long) if self.uses_label_article else None
        batch = PromptBatch(input_ids, label_positions, readout, articles)
        if self.readout == "example_likelihood":
            # The word is the template's last slot: it runs from its first token to the readout position.
            batch.word_starts = readout - torch.tensor([len(self._slot_ids("word", e)) - 1 for e in examples], dtype=torch.long)
            neutral = [self.neutral(example) for example in examples]
            width = max(len(ids) for ids, _ in neutral)
            batch.neutral_ids = torch.full((len(neutral), width), pad_id, dtype=torch.long)
            for row, (ids, _) in enumerate(neutral):
                batch.neutral_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            batch.neutral_word_starts = torch.tensor([start for _, start in neutral], dtype=torch.long)
            batch.neutral_ends = torch.tensor([len(ids) - 1 for ids, _ in neutral], dtype=torch.long)
        return batch

    def render_text(self, example: Example, label_ids: Sequence[int]) -> str:
        """The full prompt as text with a hard label, for logs and reports."""
        ids, positions, article_position = self.build(example)
        for position, token in zip(positions, label_ids):
            ids[position] = token
        if article_position >= 0:
            word = self.tokenizer.decode([label_ids[0]]).strip()
            ids[article_position] = self.label_article_ids[self.article(word) or "a"][0]
        return self.tokenizer.decode(self.prefix_ids + ids)
