"""The discrete step's final choice: the point ranking on validation examples, and the soft labels' say among the
candidates the validation split cannot tell apart (no model: the readouts are a fixed table)."""

import pytest
import torch

from gradspace.errors import GradspaceError
from gradspace.labeling.config import DiscreteConfig
from gradspace.labeling.discrete import HardLabelScorer, select_label, ties_with_first

pytestmark = pytest.mark.unit

VOCABULARY = 10
SOFT_WORD, SHARP_WORD, BAD_WORD = 7, 3, 5


def selection_config(**changes) -> DiscreteConfig:
    """The soft label's top word as its only candidate, one round of swaps from it."""
    settings = dict(top=1, sweeps=1, prior_top=0, swap_rounds=1, swap_top=1, swap_beam=1, max_examples=256,
                    max_candidates=64, tie_share=0.16, resamples=400, tie_break="soft_label",
                    tie_objective_words="train_and_validation")
    return DiscreteConfig(**{**settings, **changes})


class TableScorer(HardLabelScorer):
    """A scorer whose readout of label (t,) on the examples is the fixed row `table[t]` (positives first), and whose
    gradient swaps propose the sharp word from any label."""

    def __init__(self, table: torch.Tensor, n_positive: int):
        self.table = table
        self.targets = torch.tensor([1] * n_positive + [0] * (table.shape[1] - n_positive))
        self.kl_weight = 0.0

    def per_example_outputs(self, labels):
        return self.table[[label[0] for label in labels]], torch.zeros(len(labels), self.table.shape[1])

    def swap_candidates(self, label, top):
        return [(SHARP_WORD,)]


def readouts(n_positive: int, n_negative: int, misranked_positives: int, seed: int) -> torch.Tensor:
    """One label's readout: positives above every negative but for `misranked_positives` of them, which fall in the
    middle of the negatives."""
    generator = torch.Generator().manual_seed(seed)
    negative = torch.rand(n_negative, generator=generator)
    positive = 2.0 + torch.rand(n_positive, generator=generator)
    positive[:misranked_positives] = 0.5 + 0.01 * torch.arange(misranked_positives)
    return torch.cat([positive, negative])


def table_of(n_positive: int, n_negative: int, soft_misranked: int) -> torch.Tensor:
    table = torch.stack([readouts(n_positive, n_negative, 0, seed) for seed in range(VOCABULARY)])
    table[SOFT_WORD] = readouts(n_positive, n_negative, soft_misranked, 100)
    table[BAD_WORD] = torch.cat([torch.rand(n_positive), torch.rand(n_negative) + 0.5])
    return table


def soft_label_on(word: int, runner_up: int) -> torch.Tensor:
    p = torch.full((1, 1, VOCABULARY), 0.01)
    p[0, 0, word], p[0, 0, runner_up] = 0.7, 0.2
    return p / p.sum(-1, keepdim=True)


def test_within_the_noise_of_few_validation_words_the_soft_labels_word_wins():
    """4 validation positives: the soft label's word misranks one of them (AUROC ~0.9), the swap's word none (1.0);
    the lead rests on one word, so the soft label's word is kept. The strict ranking, and the lowest objective among
    the tied, keep the swap's word."""
    table = table_of(n_positive=4, n_negative=60, soft_misranked=1)
    scorer, p = TableScorer(table, 4), soft_label_on(SOFT_WORD, SHARP_WORD)
    chosen = select_label(scorer, p, selection_config())
    assert chosen.found_by == {(SOFT_WORD,): "soft_label_top", (SHARP_WORD,): "gradient_swap"}
    assert chosen.scored[0].label_ids == (SHARP_WORD,) and chosen.scored[0].auroc == pytest.approx(1.0)
    assert chosen.best.label_ids == (SOFT_WORD,) and chosen.best.auroc < 1.0 and set(chosen.tied) == {(SOFT_WORD,), (SHARP_WORD,)}
    strict = select_label(scorer, p, selection_config(tie_share=1.0))
    by_objective = select_label(scorer, p, selection_config(tie_break="objective"))
    assert strict.best.label_ids == by_objective.best.label_ids == (SHARP_WORD,)
    assert by_objective.best.objective < chosen.best.objective


def test_a_lead_the_validation_words_bear_out_beats_the_soft_label():
    """40 validation positives, of which the soft label's word misranks 12: the swap's word wins outright."""
    table = table_of(n_positive=40, n_negative=60, soft_misranked=12)
    chosen = select_label(TableScorer(table, 40), soft_label_on(SOFT_WORD, SHARP_WORD), selection_config())
    assert chosen.best.label_ids == (SHARP_WORD,) and chosen.tied == [(SHARP_WORD,)]


def test_the_tie_break_objective_is_measured_on_the_words_it_is_given():
    """Two soft-label words tied on 4 validation positives: on them the first separates the classes more widely
    (the lower objective); on 40 words (the training and validation words together) the second does, and wins.
    Without those words the validation objective decides."""
    other_word = 2
    validation = table_of(n_positive=4, n_negative=60, soft_misranked=0)
    validation[SOFT_WORD] = torch.cat([5.0 + torch.rand(4), torch.rand(60)])  # a wide margin on the 4 words
    validation[other_word] = torch.cat([1.2 + torch.rand(4), torch.rand(60)])
    wide = table_of(n_positive=40, n_negative=60, soft_misranked=0)
    wide[SOFT_WORD] = readouts(40, 60, 12, 100)  # on more words it misranks a third of them
    wide[other_word] = torch.cat([1.2 + torch.rand(40), torch.rand(60)])
    p = soft_label_on(SOFT_WORD, other_word)
    config = selection_config(top=2, swap_rounds=0)
    on_validation = select_label(TableScorer(validation, 4), p, config)
    on_more_words = select_label(TableScorer(validation, 4), p, config, tie_scorer=TableScorer(wide, 40))
    assert set(on_validation.tied) == set(on_more_words.tied) == {(SOFT_WORD,), (other_word,)}
    assert on_validation.best.label_ids == (SOFT_WORD,) and on_more_words.best.label_ids == (other_word,)
    assert on_more_words.tie_objectives[(other_word,)] < on_more_words.tie_objectives[(SOFT_WORD,)]


def test_ties_are_paired_bootstrap_resamples_of_each_class():
    """Against a perfect label, one misranked word of 8 is noise (a resample leaves it out with probability
    (7/8)^8 = 0.34), two are not ((6/8)^8 = 0.10 < 0.16); an identical readout always ties, a bad one never."""
    targets = torch.tensor([1] * 8 + [0] * 50)
    perfect, one_miss, two_misses = (readouts(8, 50, misses, 100)[None] for misses in (0, 1, 2))
    bad = torch.cat([torch.rand(8), torch.rand(50) + 0.5])[None]
    rows = torch.cat([perfect, perfect, one_miss, two_misses, bad])
    assert ties_with_first(rows, targets, share=0.16, resamples=400).tolist() == [True, True, True, False, False]
    assert ties_with_first(rows, targets, share=1.0, resamples=400).tolist() == [True, True, False, False, False]


@pytest.mark.parametrize(("changes", "message"), [({"tie_share": 0.0}, "tie_share=0.0 must be in"),
                                                  ({"resamples": 0}, "resamples=0 must be at least 1"),
                                                  ({"tie_break": "votes"}, "tie_break='votes' is unknown"),
                                                  ({"tie_objective_words": "heldout"}, "tie_objective_words='heldout' is unknown")])
def test_selection_settings_are_checked(changes, message):
    with pytest.raises(GradspaceError, match=message):
        selection_config(**changes)
