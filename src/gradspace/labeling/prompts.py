"""Discriminator prompts: a template with a `{word}` slot, a `{label}` slot (and an optional `{context}` slot),
tokenized once into pieces so that every example's prompt is assembled from token ids without re-tokenizing.

The style follows the model family: the synthetic model is asked in its own language ("is a dog a mammal ?",
"is an eagle a bird ?", "is seven a number ?": questions its corpus contains, with the `{article}` slot realising
the word's indefinite article as the corpus does), tokenizers with a chat template get the question as a user turn, other models
get plain text. The answer is read out as the logit difference of the two answer tokens at the last position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from gradspace.errors import GradspaceError
from gradspace.evaluation.logprobs import prefix_token_id
from gradspace.labeling.articles import article_rule
from gradspace.labeling.config import PromptConfig

SLOT_PATTERN = re.compile(r"\{(word|label|context|article|label_article)\}")


@dataclass(frozen=True)
class PromptSpec:
    style: str
    template: str
    answers: tuple[str, str]  # (positive, negative) answer; each must be one token
    system: str | None = None  # chat only


@dataclass(frozen=True)
class Example:
    """One token to classify: its id and (for context-dependent features) the tokens before it in its text."""

    token: int
    context: tuple[int, ...] = ()


@dataclass
class PromptBatch:
    """Right-padded prompts after the shared prefix. Padding lies after every readout, so causal attention needs no mask."""

    input_ids: torch.Tensor  # [N, T]
    label_positions: torch.Tensor  # [N, L] where the label's L tokens go
    readout_positions: torch.Tensor  # [N] the last prompt token, whose next-token logits hold the answer
    # [N] where the label's own article goes ("a mammal", "an animal"), for templates with {label_article}
    label_article_positions: torch.Tensor | None = None

    def to(self, device) -> "PromptBatch":
        articles = None if self.label_article_positions is None else self.label_article_positions.to(device)
        return PromptBatch(self.input_ids.to(device), self.label_positions.to(device), self.readout_positions.to(device), articles)


def resolve_prompt_spec(prompt: PromptConfig, tokenizer, model_source: str) -> PromptSpec:
    """Pick the template for this model: `style=auto` means synth for synthetic models, chat where the tokenizer
    has a chat template, plain otherwise."""
    style = prompt.style
    if style == "auto":
        if model_source == "synth":
            style = "synth"
        elif getattr(tokenizer, "chat_template", None):
            style = "chat"
        else:
            style = "plain"
    if style not in prompt.families:
        raise GradspaceError(f"prompt style '{style}' has no entry under prompt.families; add prompt.families.{style}.template")
    family = prompt.families[style]
    answers = tuple(family.answers or ())
    if len(answers) != 2:
        raise GradspaceError(f"prompt.families.{style}.answers must be [positive, negative], got {list(answers)}")
    return PromptSpec(style=style, template=str(family.template), answers=(str(answers[0]), str(answers[1])),
                      system=family.system)


def is_space_sensitive(tokenizer) -> bool:
    """True for BPE-style tokenizers where ' dog' and 'dog' are different tokens (the space belongs to the token)."""
    return tokenizer.encode(" the", add_special_tokens=False) != tokenizer.encode("the", add_special_tokens=False)


def word_token_id(tokenizer, word: str) -> int | None:
    """The single token that spells `word` where it follows a space, or None if it takes several tokens or is unknown."""
    text = (" " + word) if is_space_sensitive(tokenizer) else word
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return ids[0]


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
        # Pieces alternate literal token ids and slot names; a space before a slot moves into the slot's tokens,
        # where BPE tokenizers expect it (" dog", not " " + "dog").
        parts = SLOT_PATTERN.split(text)
        self.space_before: dict[str, bool] = {}
        pieces: list[list[int] | str] = []
        for index, part in enumerate(parts):
            if index % 2 == 1:
                pieces.append(part)
                continue
            if index + 1 < len(parts) and part.endswith(" "):
                self.space_before[parts[index + 1]] = True
                part = part.rstrip(" ")
            pieces.append(tokenizer.encode(part, add_special_tokens=False) if part else [])
        # The document-start token evaluation conditions on too (chat templates bring their own).
        start = [prefix_token_id(tokenizer)] if add_bos and spec.style != "chat" else []
        # The literal tokens before the first slot are the same for every prompt: the shared (cacheable) prefix.
        self.prefix_ids: list[int] = start + list(pieces[0])
        self.article = article_rule(spec.style)
        self.pieces = pieces[1:]
        self.answer_ids = tuple(self._single_token(answer) for answer in spec.answers)
        # A vocabulary without "an" (a model trained on "is a eel ...") gets "a" before vowels too.
        spelled = {article: self._spell(article, "article") for article in ("a", "an")}
        known = {article: ids for article, ids in spelled.items() if len(ids) == 1 and ids[0] != tokenizer.unk_token_id}
        self.article_ids = {"": [], "a": spelled["a"], "an": known.get("an", spelled["a"])}
        if self.uses_label_article and any(len(self.article_ids[a]) != 1 for a in ("a", "an")):
            raise GradspaceError(f"{{label_article}} needs 'a' and 'an' to be single tokens; remove it from {spec.template!r}")

    def takes_an(self, vocabulary_size: int) -> torch.Tensor:
        """[V] bool: tokens whose word takes "an" (the label article a soft label mixes in by its probability); all
        False where the template has no {label_article}."""
        mask = torch.zeros(vocabulary_size, dtype=torch.bool)
        if not self.uses_label_article or self.article_ids["an"] == self.article_ids["a"]:
            return mask
        for token in range(vocabulary_size):
            word = self.tokenizer.decode([token]).strip()
            mask[token] = bool(word) and word.isalpha() and self.article(word) == "an"
        return mask

    @staticmethod
    def _render(spec: PromptSpec, tokenizer) -> str:
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
        word = self.tokenizer.decode([example.token]).strip()
        if slot == "article":
            return list(self.article_ids[self.article(word)])
        return self._spell(word, "word")

    def _spell(self, word: str, slot: str) -> list[int]:
        prefix = " " if self.space_before.get(slot) and self.space_sensitive else ""
        return self.tokenizer.encode(prefix + word, add_special_tokens=False)

    def build(self, example: Example) -> tuple[list[int], list[int], int]:
        """(token ids after the prefix, positions of the label slots in them, position of the label's article or -1);
        label slots hold a placeholder id, the label article "a" until the label decides."""
        ids: list[int] = []
        label_positions: list[int] = []
        article_position = -1
        placeholder = self.answer_ids[1]
        for piece in self.pieces:
            if isinstance(piece, list):
                ids.extend(piece)
            elif piece == "label":
                label_positions = list(range(len(ids), len(ids) + self.label_length))
                ids.extend([placeholder] * self.label_length)
            elif piece == "label_article":
                article_position = len(ids)
                ids.extend(self.article_ids["a"])
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
        return PromptBatch(input_ids, label_positions, readout, articles)

    def render_text(self, example: Example, label_ids: Sequence[int]) -> str:
        """The full prompt as text with a hard label, for logs and reports."""
        ids, positions, article_position = self.build(example)
        for position, token in zip(positions, label_ids):
            ids[position] = token
        if article_position >= 0:
            word = self.tokenizer.decode([label_ids[0]]).strip()
            ids[article_position] = self.article_ids[self.article(word) or "a"][0]
        return self.tokenizer.decode(self.prefix_ids + ids)
