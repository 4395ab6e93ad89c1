import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradspace.evaluation.minimal_pairs import FORWARD_COST_IN_POSITIONS, PairTokens, pair_batches, split_pair_tokens

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("good, bad, shared", [
    ([0, 5, 6, 7], [0, 5, 8, 7], [0, 5]),
    ([0, 5], [0, 6], [0]),
    ([0, 5, 6], [0, 5, 6], [0, 5, 6]),
    ([0, 5], [0, 5, 6, 7], [0, 5]),
])
def test_split_pair_tokens_splits_at_the_first_difference(good, bad, shared):
    tokens = split_pair_tokens(good, bad)
    assert tokens.shared == shared
    assert tokens.shared + tokens.good == good and tokens.shared + tokens.bad == bad
    assert tokens.fed_length == max(len(good), len(bad), len(shared) + 1) - len(shared) - 1


def pair(shared: int, continuation: int) -> PairTokens:
    return PairTokens([0] * shared, [1] * continuation, [2] * continuation)


@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 12)), max_size=60), st.integers(1, 16))
def test_every_pair_is_in_exactly_one_batch_of_at_most_the_batch_size(shapes, pairs_per_batch):
    batches = pair_batches([pair(*shape) for shape in shapes], pairs_per_batch)
    assert sorted(i for batch in batches for i in batch) == list(range(len(shapes)))
    assert all(0 < len(batch) <= pairs_per_batch for batch in batches)


def test_pairs_of_the_same_shape_share_a_batch_and_shapes_far_apart_do_not():
    shapes = [(3, 10)] * 4 + [(2, 2)] * 4 + [(3, 10)] * 4
    batches = pair_batches([pair(*shape) for shape in shapes], pairs_per_batch=32)
    assert sorted(map(sorted, batches)) == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7]]


def test_a_few_positions_of_padding_are_cheaper_than_another_forward_pass():
    # Continuations of 9 and 10 fed positions: one batch pads 2 rows by one position, far below a pass's cost.
    assert 2 < FORWARD_COST_IN_POSITIONS
    assert pair_batches([pair(3, 10), pair(3, 11)], pairs_per_batch=32) == [[1, 0]]


@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 12)), max_size=60), st.integers(1, 16), st.integers(1, 80),
       st.booleans())
def test_a_batch_of_more_than_one_pair_keeps_within_the_logit_positions(shapes, pairs_per_batch, positions, prefix_logits):
    tokens = [pair(*shape) for shape in shapes]
    batches = pair_batches(tokens, pairs_per_batch, max_logit_positions=positions, prefix_logits=prefix_logits)
    assert sorted(i for batch in batches for i in batch) == list(range(len(shapes)))
    for batch in batches:
        width = max(len(tokens[i].shared) for i in batch) if prefix_logits else 0
        fed = max(max(tokens[i].fed_length for i in batch), 1)
        assert len(batch) == 1 or len(batch) * (2 * fed + width) <= positions
