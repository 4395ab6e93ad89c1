"""delphi on both ends: a cache written by delphi's own LatentCache is read as delphi's loader reads it, a cache
written here is read by delphi's LatentDataset, gradspace -> delphi layout -> gradspace loses nothing, bad caches stop
with one line and exit 2, and the detection and fuzzing scores are the same when computed twice."""

import json
from pathlib import Path

import pytest
import torch

from conftest import build_tiny_lm, run_benchmark, save_model
from gradspace.errors import GradspaceError
from gradspace.labeling.delphi_cache import (
    activating_windows,
    cache_config,
    fuzz_positions,
    latent_windows,
    pack_codes,
    read_cache,
    write_cache,
)
from test_bad_input import ROOT, check_clean_failure, label_overrides

pytestmark = pytest.mark.integration
HOOK = "gpt_neox.layers.0"
COUNTS = {"train": 2, "validation": 2, "test": 2}


def sparse_sae(lm, tokens: torch.Tensor, d_sae: int = 12, density: float = 0.03):
    """A ReLU SAE on the tiny LM's first layer whose every latent fires on about `density` of `tokens`' positions."""
    from gradspace.labeling.sae import SparseAutoencoder

    generator = torch.Generator().manual_seed(0)
    d_in = lm.config.hidden_size
    W_enc = torch.randn(d_in, d_sae, generator=generator)
    sae = SparseAutoencoder(W_enc, torch.zeros(d_sae), torch.randn(d_sae, d_in, generator=generator), torch.zeros(d_in),
                            architecture="standard", hook_name=HOOK, apply_b_dec_to_input=False)
    with torch.no_grad():
        outputs = lm(tokens, output_hidden_states=True).hidden_states[1].reshape(-1, d_in)
        pre = sae.pre_activations(outputs)
        sae.b_enc -= torch.quantile(pre, 1 - density, dim=0)
    return sae


def random_tokens(tokenizer, sequences: int = 16, ctx_len: int = 64) -> torch.Tensor:
    words = [tokenizer.convert_tokens_to_ids(w) for w in ("the", "a", "dog", "cat", "bird", "runs", "sees", "near", "that")]
    generator = torch.Generator().manual_seed(1)
    return torch.tensor(words)[torch.randint(len(words), (sequences, ctx_len), generator=generator)]


@pytest.fixture(scope="module")
def delphi_written(tmp_path_factory):
    """A cache written by delphi's own LatentCache (save_splits, save_config) over the tiny LM and a sparse SAE."""
    cache_module = pytest.importorskip("delphi.latents.cache", reason="eai-delphi is not installed (pip install 'gradspace[delphi]')")
    from delphi.config import CacheConfig

    lm, tokenizer = build_tiny_lm()
    tokens = random_tokens(tokenizer)
    sae = sparse_sae(lm, tokens)
    root = tmp_path_factory.mktemp("delphi-cache") / "latents"
    cache = cache_module.LatentCache(lm, {HOOK: lambda x: sae.encode(x)}, batch_size=4)
    cache.run(tokens.numel(), tokens)
    cache.save_splits(n_splits=3, save_dir=root)
    cache.save_config(save_dir=root, cfg=CacheConfig(cache_ctx_len=64, n_splits=3, batch_size=4), model_name="tiny")
    return root, tokens, tokenizer


def test_a_cache_written_by_delphi_reads_as_delphis_loader_reads_it(delphi_written):
    from delphi.latents.constructors import pool_max_activation_windows
    from delphi.latents.loader import TensorBuffer

    root, tokens, _ = delphi_written
    files = sorted((root / HOOK).glob("*.safetensors"))
    assert [f.name for f in files] == ["0_3.safetensors", "4_7.safetensors", "8_11.safetensors"]
    cache = read_cache(root, HOOK)
    assert torch.equal(cache.tokens, tokens) and cache.width == 12 and cache.model_name == "tiny"
    seen = 0
    for file in files:
        latents, locations, activations = TensorBuffer(str(file), HOOK).load_data_per_latent()
        for latent, where, values in zip(latents.tolist(), locations, activations):
            mine = cache.latents[latent]
            assert torch.equal(mine.flat, where[:, 0] * 64 + where[:, 1])
            assert torch.equal(mine.values, values.float())
            # delphi's activating windows, strongest first, are ours
            flat = where[:, 0] * 64 + where[:, 1]
            token_windows, _ = pool_max_activation_windows(values, tokens.reshape(-1, 32), flat // 32, flat % 32, 32)
            assert [w.tokens for w in activating_windows(cache, latent, 32)] == token_windows.tolist()
            seen += 1
    assert seen == 12


def test_a_cache_written_here_is_read_by_delphis_dataset(tmp_path):
    pytest.importorskip("delphi.latents.loader", reason="eai-delphi is not installed")
    from delphi.config import ConstructorConfig, SamplerConfig
    from delphi.latents.loader import LatentDataset

    lm, tokenizer = build_tiny_lm()
    tokens = random_tokens(tokenizer)
    sae = sparse_sae(lm, tokens)
    with torch.no_grad():
        codes = sae.encode(lm(tokens, output_hidden_states=True).hidden_states[1])
    where = (codes.abs() > 1e-5).nonzero()
    write_cache(tmp_path, HOOK, tokens, where, codes[codes.abs() > 1e-5], 12, 2, cache_config("tiny", 64, tokens.numel(), 2, "test"))
    dataset = LatentDataset(tmp_path, SamplerConfig(n_examples_train=2, n_examples_test=2, n_quantiles=2),
                            ConstructorConfig(min_examples=1, n_non_activating=2), tokenizer=tokenizer, modules=[HOOK],
                            latents={HOOK: torch.arange(12)})
    records = {r.latent.latent_index: r for r in dataset}
    cache = read_cache(tmp_path, HOOK)
    assert records and all(len(r.examples) == len(activating_windows(cache, i, 32)) for i, r in records.items())
    for latent, record in records.items():
        assert [e.tokens.tolist() for e in record.examples] == [w.tokens for w in activating_windows(cache, latent, 32)]


def test_gradspace_to_delphi_layout_and_back(tmp_path):
    """Per-text codes -> packed rows -> delphi's files -> the same tokens, locations and (float16) activations."""
    generator = torch.Generator().manual_seed(0)
    codes = []
    for length in (7, 30, 41, 12, 50):
        dense = torch.relu(torch.randn(length, 600, generator=generator) - 2.0)
        codes.append((torch.randint(5, 90, (length,), generator=generator).tolist(), dense.to_sparse()))
    tokens, locations, values = pack_codes(codes, 32, separator=0)
    assert tokens.shape == (4, 32)  # 140 + 5 separators = 145 tokens: 4 full rows, the rest dropped as delphi drops it
    stream = [t for ids, _ in codes for t in (*ids, 0)]
    assert tokens.flatten().tolist() == stream[:128]
    write_cache(tmp_path / "latents", "blocks.3.hook_resid_post", tokens, locations, values, 600, 5,
                cache_config("m", 32, 128, 5, "test"))
    # 600 latents in 5 files: linspace boundaries, uint16 locations
    names = sorted(p.name for p in (tmp_path / "latents" / "blocks.3.hook_resid_post").glob("*.safetensors"))
    assert names == ["0_119.safetensors", "120_239.safetensors", "240_359.safetensors", "360_479.safetensors", "480_599.safetensors"]
    back = read_cache(tmp_path, None)  # the run folder holding latents/, its only hookpoint
    assert back.hookpoint == "blocks.3.hook_resid_post" and torch.equal(back.tokens, tokens)
    for latent in range(600):
        mask = locations[:, 2] == latent
        flat = locations[mask, 0] * 32 + locations[mask, 1]
        assert torch.equal(back.latents[latent].flat, flat)
        assert torch.equal(back.latents[latent].values, values[mask].half().float())


def small_cache(root: Path, tokenizer) -> Path:
    """A cache in which latent 0 fires on 'dog' and 'cat' (more on 'dog') in the second half of the sequences, latent 1
    on 'bird' in the first half: each fires in about half of the windows."""
    tokens = random_tokens(tokenizer, sequences=24)
    dog, cat, bird = (tokenizer.convert_tokens_to_ids(w) for w in ("dog", "cat", "bird"))
    where, values = [], []
    for (seq, pos), token in zip(torch.cartesian_prod(torch.arange(24), torch.arange(64)).tolist(), tokens.flatten().tolist()):
        if token in (dog, cat) and seq >= 12:
            where.append((seq, pos, 0))
            values.append(2.0 + (seq * 7 + pos) % 5 if token == dog else 1.0)
        if token == bird and seq < 12:
            where.append((seq, pos, 1))
            values.append(1.0 + pos % 3)
    write_cache(root, HOOK, tokens, torch.tensor(where), torch.tensor(values), 4, 2, cache_config("tiny", 64, tokens.numel(), 2, "test"))
    return root


def test_delphi_sampling_is_disjoint_and_across_quantiles(tmp_path):
    _, tokenizer = build_tiny_lm()
    cache = read_cache(small_cache(tmp_path / "latents", tokenizer), HOOK)
    counts = {"train": 10, "validation": 4, "test": 6}
    sampled = latent_windows(cache, 1, 32, 2, counts, seed=0)
    chosen = [w.index for part in sampled.activating.values() for w in part] + [w.index for part in sampled.non_activating.values() for w in part]
    assert len(chosen) == len(set(chosen)) == 40
    assert sorted(w.quantile for w in sampled.activating["test"]) == [0, 0, 0, 1, 1, 1]
    strongest = activating_windows(cache, 1, 32)
    top_half = {w.index for w in strongest[: len(strongest) // 2]}
    assert all((w.index in top_half) == (w.quantile == 0) for w in sampled.activating["test"])
    assert all(not any(w.activations) for part in sampled.non_activating.values() for w in part)
    # delphi's marks: the strong tokens of an activating window; in a non-activating one the 24th first
    window = sampled.activating["test"][0]
    assert fuzz_positions(window, 3) == [i for i, a in enumerate(window.activations) if a >= 0.3 * max(window.activations)]
    assert 24 in fuzz_positions(sampled.non_activating["test"][0], 3) and len(fuzz_positions(sampled.non_activating["test"][0], 3)) == 3


def damage(root: Path, case: str) -> None:
    folder = root / HOOK
    if case == "no config":
        (folder / "config.json").unlink()
    elif case == "truncated file":
        data = (folder / "0_1.safetensors").read_bytes()
        (folder / "0_1.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "no locations":
        from safetensors.numpy import load_file, save_file

        data = load_file(str(folder / "0_1.safetensors"))
        save_file({"activations": data["activations"], "tokens": data["tokens"]}, str(folder / "0_1.safetensors"))
    elif case == "bad name":
        (folder / "0_1.safetensors").rename(folder / "first.safetensors")


BAD = {
    "no config": r"layers\.0/config\.json: missing",
    "truncated file": r"0_1\.safetensors: not readable as safetensors",
    "no locations": r"0_1\.safetensors: no 'locations' tensor",
    "bad name": r"first\.safetensors: the file name is not <first latent>_<last latent>",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_caches_fail_cleanly(case, tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    root = small_cache(tmp_path / "latents", AutoTokenizer.from_pretrained(tiny_model_dir))
    damage(root, case)
    overrides = [*label_overrides(tiny_model_dir), "feature=delphi", f"feature.path={root}", "feature.ids=[0]", "prompt=contextual"]
    check_clean_failure("label", overrides, tmp_path / "out", BAD[case], capsys)


@pytest.mark.parametrize("scored, fit_on", [(True, "tokens"), (False, "windows")], ids=["delphi scoring", "window fit"])
def test_a_readout_that_cannot_read_windows_fails_before_labelling(scored, fit_on, tiny_model_dir, tmp_path, capsys):
    """The synth readout asks yes/no: neither delphi's scorer nor the window fit can read windows through it."""
    from transformers import AutoTokenizer

    root = small_cache(tmp_path / "latents", AutoTokenizer.from_pretrained(tiny_model_dir))
    overrides = [*label_overrides(tiny_model_dir), "feature=delphi", f"feature.path={root}", "feature.ids=[0]", "prompt=contextual",
                 "feature.n_quantiles=2", "feature.n_train=10", "feature.n_validation=4", "feature.n_test=6", f"feature.fit_on={fit_on}",
                 *(["model@evaluation.scorer_model=local", f"evaluation.scorer_model.path={tiny_model_dir}", "delphi.score=true"]
                   if scored else [])]
    check_clean_failure("label", overrides, tmp_path / "out", r"reading whole windows needs a readout that opens with "
                        r"'\{context\} \{word\}'.*use prompt=contextual with the label_likelihood family", capsys)


def test_tokens_of_another_tokenizer_fail_cleanly(tiny_model_dir, tmp_path):
    root = tmp_path / "latents"
    write_cache(root, HOOK, torch.full((2, 64), 50_000), torch.tensor([[0, 1, 0]]), torch.tensor([1.0]), 2, 1,
                cache_config("gpt2", 64, 128, 1, "test"))
    from gradspace.labeling.delphi_cache import check_tokens

    with pytest.raises(GradspaceError, match=r"token id 50000 is outside .* vocabulary of 40; the cache was written with another tokenizer \(gpt2\)"):
        check_tokens(read_cache(root, HOOK), 40, "tiny")


def label_delphi(model_dir: Path, cache: Path, out: Path, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir

    from gradspace.labeling.run import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("label", overrides=[*label_overrides(model_dir), "feature=delphi", f"feature.path={cache}", "feature.ids=[0,1]",
                                           "feature.n_quantiles=2", "feature.n_train=10", "feature.n_validation=4", "feature.n_test=6",
                                           "prompt=contextual", "prompt.style=label_likelihood", "label.method=scan", "label.vocabulary=all",
                                           "label.min_letters=1", "model@evaluation.scorer_model=local",
                                           f"evaluation.scorer_model.path={model_dir}", "delphi.score=true", f"paths.output_dir={out}",
                                           *overrides])
    return run(cfg).to_json()


def test_label_a_delphi_cache_and_score_it_as_delphi_does_twice_alike(tmp_path):
    model_dir = save_model(*build_tiny_lm(), tmp_path / "tiny-neox")
    from transformers import AutoTokenizer

    cache = small_cache(tmp_path / "latents", AutoTokenizer.from_pretrained(model_dir))
    first, second = (label_delphi(model_dir, cache, tmp_path / name) for name in ("one", "two"))
    assert [f["delphi"] for f in first["features"]] == [f["delphi"] for f in second["features"]]
    assert first["delphi"] == second["delphi"] and first["delphi"]["latents"] == 2
    entry = first["features"][0]
    for kind in ("detection", "fuzz"):
        scores = entry["delphi"][kind]
        assert set(scores) == {"label", "random_other_latent", "most_frequent_top_activating", "vocabulary_projection"}
        assert scores["vocabulary_projection"] is None  # no SAE beside the cache
        assert set(scores["label"]) == {"label", "balanced_accuracy", "f1", "precision", "recall", "auroc"}
        assert scores["random_other_latent"]["label"] == first["features"][1]["label"]
        assert scores["most_frequent_top_activating"]["label"] == "dog"  # latent 0's strongest windows peak on 'dog'
    assert entry["delphi"]["windows"] == {"test": 12, "validation": 8}
    # delphi's files: the explanation as a JSON string, the score files as lists of ClassifierOutput
    explanation = tmp_path / "one" / "delphi" / "explanations" / f"{HOOK}_latent0.txt"
    assert json.loads(explanation.read_text()) == entry["label"]
    rows = json.loads((tmp_path / "one" / "delphi" / "scores" / "detection" / f"{HOOK}_latent0.txt").read_text())
    assert len(rows) == 12 and {"str_tokens", "activations", "distance", "activating", "prediction", "probability", "correct"} <= set(rows[0])
    assert sum(r["activating"] for r in rows) == 6
    table = run_benchmark("label_delphi.py", "table", str(tmp_path / "one" / "results.json"), str(tmp_path / "two" / "results.json"))
    assert table.count(f"| 0 | 0 | {entry['label']} |") == 4 and "label above every baseline on" in table
    # the run's labels scored again on the windows it drew: the same scores
    rescored = run_benchmark("label_delphi.py", "rescore", str(tmp_path / "one" / "results.json"))
    label = entry["delphi"]["detection"]["label"]["balanced_accuracy"]
    assert "latent0 " in rescored and f"label {entry['label']!r} {label:.2f} -> {label:.2f}" in rescored
    assert f"label above every baseline on {first['delphi']['detection']['label_above_every_baseline']} of 2" in rescored
    # the label fitted on the scorer itself, beside the run's own label as the run scored it
    bound = run_benchmark("label_delphi.py", "ceiling", str(tmp_path / "one" / "results.json"))
    assert f"label {entry['label']!r} {label:.2f}" in bound and "fitted on the scorer (kl 0.0) '" in bound
    assert "seed 0: mean detection balanced accuracy {\"scorer_fit_kl0.0\": " in bound
    # other readings of the scorer and a set of words: its own detection readout scores the label as the run did
    read = run_benchmark("label_delphi.py", "readouts", str(tmp_path / "one" / "results.json"))
    assert f"token/label {label:.2f}" in read and "about/frequent_words " in read and "mentions/label " in read


def test_labels_fitted_on_whole_windows(tmp_path):
    """feature.fit_on=windows: the scan's examples are the windows themselves, each read at its most label-like token;
    the label's held-out score is over the test windows (6 activating, 6 not), and delphi scores it as before."""
    model_dir = save_model(*build_tiny_lm(), tmp_path / "tiny-neox")
    from transformers import AutoTokenizer

    cache = small_cache(tmp_path / "latents", AutoTokenizer.from_pretrained(model_dir))
    results = label_delphi(model_dir, cache, tmp_path / "out", "feature.fit_on=windows")
    assert [f["heldout_examples"] for f in results["features"]] == [{"positive": 6, "negative": 6}] * 2
    assert all(f["delphi"]["detection"]["label"]["label"] == f["label"] for f in results["features"])


def test_an_sae_run_writes_its_codes_as_a_delphi_cache_and_its_labels_as_explanations(tiny_model_dir, tmp_path):
    """feature=sae_latent with delphi.write_cache: the built-in SAE's codes over the corpus, packed as delphi packs a
    dataset, read back equal; each label lands in delphi/explanations/<hook>_latent<i>.txt."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gradspace.evaluation.logprobs import prefix_token_id
    from gradspace.labeling.features import sae_codes
    from gradspace.labeling.run import run
    from gradspace.labeling.sae import load_local_sae

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the {a} {v} near a {b} .\n" for a in ("dog", "cat", "bird") for v in ("runs", "sees")
                              for b in ("dog", "cat", "bird")) * 4)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("label", overrides=[*label_overrides(tiny_model_dir), "feature=sae_latent", "sae=builtin", "sae.d_sae=16",
                                           "sae.k=2", "sae.steps=30", "sae.batch_size=64", f"feature.corpus_path={corpus}",
                                           "feature.ids=[]", "feature.select_count=1", "feature.select_density=[0.0,1.0]",
                                           "feature.select_min_words=1", "feature.select_word_share=0.0", "prompt=contextual",
                                           "label.method=scan", "label.vocabulary=all", "label.min_letters=1",
                                           f"delphi.write_cache={tmp_path / 'latents'}", "delphi.cache_ctx_len=32",
                                           "delphi.n_splits=2", f"paths.output_dir={tmp_path / 'out'}"])
    results = run(cfg).to_json()
    hook = results["sae"]["hook_name"]
    cache = read_cache(tmp_path / "latents", hook)
    sae = load_local_sae(next((tmp_path / "cache" / "saes").iterdir()))
    lm, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    lines = corpus.read_text().splitlines()
    cut = int(len(lines) * 0.7)
    tokens, locations, values = pack_codes(sae_codes(lm, tokenizer, sae, lines[:cut]) + sae_codes(lm, tokenizer, sae, lines[cut:]),
                                           32, prefix_token_id(tokenizer))
    assert torch.equal(cache.tokens, tokens) and cache.width == 16
    for latent in range(16):
        mask = locations[:, 2] == latent
        assert torch.equal(cache.latents[latent].flat, locations[mask, 0] * 32 + locations[mask, 1])
        assert torch.allclose(cache.latents[latent].values, values[mask], rtol=1e-3)
    (feature,) = results["features"]
    explanation = tmp_path / "out" / "delphi" / "explanations" / f"{hook}_{feature['feature']}.txt"
    assert json.loads(explanation.read_text()) == feature["label"]


def tiny_delphi_scorer(model_dir: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from gradspace.labeling.config import LabelingConfig
    from gradspace.labeling.delphi_scoring import DelphiScorer
    from gradspace.labeling.scorer import SecondModelScorer
    from gradspace.models.loading import load_model

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("label", overrides=[*label_overrides(model_dir), "prompt=contextual", "prompt.style=label_likelihood",
                                           "model@evaluation.scorer_model=local",
                                           f"evaluation.scorer_model.path={model_dir}", *overrides])
    config = LabelingConfig.from_config(cfg)
    loaded = load_model(cfg.evaluation.scorer_model, model_dir.parent / "cache", progress=False)
    return DelphiScorer(SecondModelScorer(config, loaded), config.delphi.fuzz_threshold)


def test_detection_reads_each_window_at_its_most_label_like_token(tiny_model_dir):
    """The window runs once and each token's readout branches off it: the same scores as the per-token readout's
    own prompts written out in full (the fuzzing path), one-token and two-token labels alike, maxed over the window."""
    from gradspace.labeling.discrete import HardLabelScorer
    from gradspace.labeling.oracle import word_label_ids
    from gradspace.labeling.prompts import Example

    delphi = tiny_delphi_scorer(tiny_model_dir)
    texts = ["the dog runs near a cat", "a bird sees the cat that runs", "the cat"]
    labels = ["dog", "bird", "cat dog"]
    branched = delphi.window_token_readouts(texts, labels)
    tokenizer, scorer = delphi.tokenizer, delphi.scorer
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text, add_special_tokens=False)
        examples = [Example(token, tuple(ids[:i]), tokenizer.decode([token]).strip()) for i, token in enumerate(ids)]
        for label in labels:
            spelled = word_label_ids(scorer.discriminator(1).builder, label)
            full = HardLabelScorer(scorer.discriminator(len(spelled)), examples, [], tokenizer.pad_token_id, scorer.allowed)
            per_token, _ = full.per_example_outputs([spelled])
            assert branched[label][row] == pytest.approx(float(per_token[0].max()), abs=1e-4), (text, label)
    assert len({round(float(v), 4) for v in branched["dog"]}) == 3  # the texts read differently


def test_delphi_scoring_needs_a_readout_that_reads_the_window_before_the_token(tiny_model_dir):
    for override in ("prompt.families.label_likelihood.template='The word {word} in {context} is a kind of {label}'", "prompt.style=synth"):
        with pytest.raises(GradspaceError, match=r"opens with '\{context\} \{word\}', reads label_likelihood.*use prompt=contextual with the label_likelihood family"):
            tiny_delphi_scorer(tiny_model_dir, override)
