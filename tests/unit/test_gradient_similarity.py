import math

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from gradspace.errors import GradspaceError
from gradspace.models.architecture import group_kind, module_group
from gradspace.probing.gradient_similarity import OVERALL, GradientSpace, GradientSpaceConfig, _TopSet

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                           vocab_size=50, max_position_embeddings=64, tie_word_embeddings=False)
    return GPTNeoXForCausalLM(config)


def named_numels(model):
    return [(name, p.numel()) for name, p in model.named_parameters()]


def correlated_gradients(model, n_tasks: int, shared: float, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Task gradients = shared direction * sqrt(shared) + own noise, so the exact cosine is about `shared`."""
    generator = torch.Generator().manual_seed(seed)
    common = {name: torch.randn(p.shape, generator=generator) for name, p in model.named_parameters()}
    tasks = []
    for _ in range(n_tasks):
        tasks.append({
            name: math.sqrt(shared) * common[name] + math.sqrt(1 - shared) * torch.randn(p.shape, generator=generator)
            for name, p in model.named_parameters()
        })
    return tasks


def exact_cosine(gradients: list[dict[str, torch.Tensor]], names=None) -> np.ndarray:
    flat = torch.stack([torch.cat([g[n].reshape(-1) for n in (names or g)]).double() for g in gradients])
    flat = flat / flat.norm(dim=1, keepdim=True)
    return (flat @ flat.T).numpy()


def exact_top_set(gradient: dict[str, torch.Tensor], names, fraction: float) -> set[int]:
    flat = torch.cat([gradient[n].reshape(-1) for n in names]).abs()
    k = math.ceil(fraction * flat.numel())
    return set(torch.topk(flat, k).indices.tolist())


@pytest.mark.parametrize(
    "name, group",
    [
        ("gpt_neox.embed_in.weight", "embedding"),
        ("gpt_neox.layers.3.attention.query_key_value.weight", "layer3.attention"),
        ("gpt_neox.layers.3.post_attention_layernorm.bias", "layer3.norm"),
        ("gpt_neox.layers.12.mlp.dense_4h_to_h.weight", "layer12.mlp"),
        ("gpt_neox.final_layer_norm.weight", "final_norm"),
        ("embed_out.weight", "unembedding"),
        ("lm_head.weight", "unembedding"),
        ("transformer.wte.weight", "embedding"),
        ("transformer.h.0.ln_1.weight", "layer0.norm"),
        ("transformer.h.0.attn.c_attn.weight", "layer0.attention"),
        ("transformer.h.0.mlp.c_fc.weight", "layer0.mlp"),
        ("model.layers.5.self_attn.o_proj.weight", "layer5.attention"),
        ("model.layers.5.mlp.gate_proj.weight", "layer5.mlp"),
        ("model.norm.weight", "final_norm"),
    ],
)
def test_module_groups_of_common_architectures(name, group):
    assert module_group(name) == group


def test_group_kind():
    assert [group_kind(g) for g in ("layer1.mlp", "final_norm", "embedding")] == ["mlp", "norm", "embedding"]


def test_levels_cover_overall_kinds_layers_and_groups(model):
    space = GradientSpace.for_model(model)
    levels = space.levels()
    assert levels[0] == OVERALL
    assert {"embedding", "attention", "mlp", "norm", "unembedding", "layer0", "layer1", "layer1.mlp"} <= set(levels)


def test_sketched_cosine_approximates_the_exact_cosine(model):
    gradients = correlated_gradients(model, n_tasks=4, shared=0.5)
    space = GradientSpace.for_model(model, GradientSpaceConfig(sketch_dim=8192, seed=1))
    for index, gradient in enumerate(gradients):
        space.add(f"t{index}", gradient.items())
    exact = exact_cosine(gradients)
    sketched = space.cosine()
    assert np.allclose(np.diag(sketched), 1.0)
    # Off-diagonal exact values are about 0.5; the sketch error is about 1/sqrt(8192) ~ 0.011.
    assert np.abs(sketched - exact).max() < 0.05
    assert np.abs(exact[0, 1] - 0.5) < 0.05


def test_per_level_cosine_matches_the_restricted_exact_cosine(model):
    gradients = correlated_gradients(model, n_tasks=3, shared=0.3, seed=2)
    # Make the MLP of layer 1 identical across tasks: its cosine is 1 while the rest is about 0.3.
    mlp_names = [n for n, _ in model.named_parameters() if module_group(n) == "layer1.mlp"]
    for gradient in gradients[1:]:
        for name in mlp_names:
            gradient[name] = gradients[0][name].clone()
    space = GradientSpace.for_model(model, GradientSpaceConfig(sketch_dim=8192))
    for index, gradient in enumerate(gradients):
        space.add(f"t{index}", gradient.items())
    assert np.allclose(space.cosine("layer1.mlp"), 1.0, atol=1e-9)
    attention = [n for n, _ in model.named_parameters() if group_kind(module_group(n)) == "attention"]
    assert np.abs(space.cosine("attention") - exact_cosine(gradients, attention)).max() < 0.05
    layer1 = [n for n, _ in model.named_parameters() if module_group(n).startswith("layer1.")]
    assert np.abs(space.cosine("layer1") - exact_cosine(gradients, layer1)).max() < 0.05
    exact_norm = float(torch.cat([gradients[2][n].reshape(-1) for n in attention]).norm())
    assert space.norms("attention")["t2"] == pytest.approx(exact_norm, rel=1e-6)


def test_top_k_jaccard_matches_brute_force_sets(model):
    gradients = correlated_gradients(model, n_tasks=3, shared=0.6, seed=3)
    fraction = 0.02
    space = GradientSpace.for_model(model, GradientSpaceConfig(top_fraction=fraction, chunk_size=1000))
    for index, gradient in enumerate(gradients):
        space.add(f"t{index}", gradient.items())
    names = [n for n, _ in model.named_parameters()]
    sets = [exact_top_set(g, names, fraction) for g in gradients]
    expected = len(sets[0] & sets[1]) / len(sets[0] | sets[1])
    assert space.jaccard()[0, 1] == pytest.approx(expected)
    mlp = [n for n, _ in model.named_parameters() if module_group(n) == "layer0.mlp"]
    mlp_sets = [exact_top_set(g, mlp, fraction) for g in gradients]
    assert space.jaccard("layer0.mlp")[1, 2] == pytest.approx(len(mlp_sets[1] & mlp_sets[2]) / len(mlp_sets[1] | mlp_sets[2]))
    assert 0.0 < expected < 1.0


def test_disjoint_gradients_have_zero_overlap_and_cosine(model):
    names = [n for n, _ in model.named_parameters()]
    first = {n: (torch.ones_like(p) if module_group(n) == "layer0.mlp" else torch.zeros_like(p)) for n, p in model.named_parameters()}
    second = {n: (torch.ones_like(p) if module_group(n) == "layer1.mlp" else torch.zeros_like(p)) for n, p in model.named_parameters()}
    space = GradientSpace.for_model(model)
    space.add("first", first.items())
    space.add("second", second.items())
    assert space.jaccard()[0, 1] == 0.0
    assert abs(space.cosine()[0, 1]) < 0.05
    # A task with no gradient on a level has no cosine there, rather than a made-up number.
    assert np.isnan(space.cosine("layer1.mlp")[0, 1])
    assert len(names) == len(space.parameters)


def test_state_grows_with_tasks_not_parameters(model):
    config = GradientSpaceConfig(sketch_dim=256, top_fraction=0.01)
    space = GradientSpace.for_model(model, config)
    gradients = correlated_gradients(model, n_tasks=5, shared=0.5)
    for index, gradient in enumerate(gradients):
        space.add(f"t{index}", gradient.items())
    total = sum(p.numel() for p in model.parameters())
    per_task = space.state_bytes() / 5
    assert per_task < 0.2 * total * 4  # far less than one float32 gradient per task
    assert per_task <= len(space.groups) * 256 * 4 + len(space.groups) * 8 + 2 * (0.01 * total + len(space.groups)) * 4


def test_top_sets_are_capped_on_large_models(model):
    total = sum(p.numel() for p in model.parameters())
    space = GradientSpace.for_model(model, GradientSpaceConfig(top_fraction=0.05, max_top_k=100))
    assert space.top_fraction == pytest.approx(100 / total)
    space.add("t", correlated_gradients(model, 1, 0.5)[0].items())
    assert len(space._top_overall[0]) == 100


def test_same_seed_same_projection_and_model_gradients(model):
    torch.manual_seed(1)
    ids = torch.randint(0, 50, (2, 8))
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    gradient = [(n, p.grad.clone()) for n, p in model.named_parameters()]
    spaces = [GradientSpace.for_model(model, GradientSpaceConfig(sketch_dim=128, seed=7)) for _ in range(2)]
    for space in spaces:
        space.add("a", gradient)
        space.add("b", [(n, 2.0 * g) for n, g in gradient])  # same direction, other scale
        space.add("c", [(n, -g) for n, g in gradient])
    assert np.array_equal(spaces[0].cosine(), spaces[1].cosine())
    assert spaces[0].cosine()[0, 1] == pytest.approx(1.0) and spaces[0].cosine()[0, 2] == pytest.approx(-1.0)
    assert spaces[0].jaccard()[0, 2] == 1.0  # |g| ranks the same parameters whatever the sign
    model.zero_grad()


def test_bad_input(model):
    with pytest.raises(GradspaceError, match="top_fraction"):
        GradientSpaceConfig(top_fraction=0.0)
    space = GradientSpace.for_model(model)
    with pytest.raises(ValueError, match="no gradient given"):
        space.add("t", [])


def brute_force_top(flat: torch.Tensor, k: int) -> np.ndarray:
    magnitude = flat.abs()
    order = torch.topk(magnitude, k).indices
    return np.sort(order[magnitude[order] > 0].numpy())


def test_top_sets_on_a_large_tensor_equal_brute_force_also_when_the_threshold_starts_too_high(monkeypatch):
    """The top sets are found above a threshold read off a sample; they must still be the exact sets when that
    threshold lets too few values through. It is then lowered step by step, so what is collected stays near k
    instead of being every value of the set."""
    n = 1 << 18
    gradient = torch.randn(n, generator=torch.Generator().manual_seed(0))
    k = math.ceil(0.01 * n)
    space = GradientSpace([("layers.0.mlp.weight", n)], GradientSpaceConfig(top_fraction=0.01, chunk_size=1 << 14))
    assert add_with_trace(space, gradient, monkeypatch)["lowered_at_rank"] == []  # the sample's threshold holds

    fix_threshold = _TopSet.fix_threshold
    monkeypatch.setattr(_TopSet, "fix_threshold", lambda top: (fix_threshold(top), top._set_rank(1)))
    space = GradientSpace([("layers.0.mlp.weight", n)], GradientSpaceConfig(top_fraction=0.01, chunk_size=1 << 14))
    trace = add_with_trace(space, gradient, monkeypatch)
    assert np.array_equal(space._top_overall[0], brute_force_top(gradient, k))
    assert np.array_equal(space._top_groups[0]["layer0.mlp"], brute_force_top(gradient, k))
    assert trace["lowered_at_rank"][0] == 1 and max(trace["collected"]) < 4 * k  # in steps, never "all above 0"


def add_with_trace(space: GradientSpace, gradient: torch.Tensor, monkeypatch) -> dict[str, list[int]]:
    """space.add of one gradient, noting each time a top set lowers its threshold and how many values it had."""
    trace: dict[str, list[int]] = {"lowered_at_rank": [], "collected": []}
    lower_threshold, sorted_indices = _TopSet.lower_threshold, _TopSet.sorted_indices

    def traced(top: _TopSet) -> None:
        trace["lowered_at_rank"].append(top.rank)
        lower_threshold(top)

    def final(top: _TopSet) -> np.ndarray:
        trace["collected"].append(sum(v.numel() for v in top.values))
        return sorted_indices(top)

    with monkeypatch.context() as patch:  # undone on return: a second call must not wrap these wrappers
        patch.setattr(_TopSet, "lower_threshold", traced)
        patch.setattr(_TopSet, "sorted_indices", final)
        space.add("t", [(next(iter(space.parameters)), gradient)])
    return trace


def test_the_threshold_sample_is_not_fooled_by_the_columns_of_a_matrix(monkeypatch):
    """One column of a matrix far larger than the rest (Gemma-3's embedding gradient has such columns): a sample
    at a regular stride that is a multiple of the row width sees that column alone, and its threshold lets too few
    values through. Random sample positions give a threshold that holds at once."""
    monkeypatch.setattr(_TopSet, "SAMPLE", 1 << 10)
    rows, width = 4096, 640  # stride 2560: every 4th row's column 0, for a regular stride
    gradient = torch.randn(rows, width, generator=torch.Generator().manual_seed(1))
    gradient[:, 0] = 10 + torch.rand(rows, generator=torch.Generator().manual_seed(2))
    space = GradientSpace([("layers.0.mlp.weight", rows * width)], GradientSpaceConfig(top_fraction=0.01, chunk_size=1 << 16))
    trace = add_with_trace(space, gradient.reshape(-1), monkeypatch)
    assert trace["lowered_at_rank"] == []
    assert np.array_equal(space._top_overall[0], brute_force_top(gradient.reshape(-1), math.ceil(0.01 * rows * width)))


def test_a_task_state_round_trips_into_another_space(model):
    gradients = correlated_gradients(model, n_tasks=3, shared=0.5, seed=4)
    config = GradientSpaceConfig(sketch_dim=256, top_fraction=0.02)
    whole, resumed = GradientSpace.for_model(model, config), GradientSpace.for_model(model, config)
    for index, gradient in enumerate(gradients):
        whole.add(f"t{index}", gradient.items())
    resumed.add_state(whole.task_state("t0"))
    for index, gradient in enumerate(gradients[1:], start=1):
        resumed.add(f"t{index}", gradient.items())
    for level in ("overall", "mlp", "layer1"):
        assert np.allclose(whole.cosine(level), resumed.cosine(level))
        assert np.array_equal(whole.jaccard(level), resumed.jaccard(level))
    assert whole.norms() == pytest.approx(resumed.norms())
    with pytest.raises(ValueError, match="different model"):
        GradientSpace.for_model(model, GradientSpaceConfig(top_fraction=0.5)).add_state(whole.task_state("t1"))
