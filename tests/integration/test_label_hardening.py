"""Hostile but realistic labeling input through label.py's error path: one line, exit 2, nothing written."""

import pytest
import torch

from gradspace.labeling.sae import SparseAutoencoder, save_sae
from test_bad_input import check_clean_failure, label_overrides

pytestmark = pytest.mark.integration


def test_special_tokens_are_no_words_of_a_list(tiny_model_dir, tmp_path, capsys):
    overrides = [*label_overrides(tiny_model_dir), "feature=animals", "feature.sets.animals=[dog,cat,'<|endoftext|>',bird]"]
    check_clean_failure("label", overrides, tmp_path / "out", r"feature 'animals': \['<\|endoftext\|>'\] are special tokens", capsys)


def test_an_sae_with_nan_weights_is_named_as_such(tiny_model_dir, tmp_path, capsys):
    d_in, d_sae = 64, 8
    W_dec = torch.randn(d_sae, d_in)
    W_dec[3, 5] = float("nan")
    save_sae(SparseAutoencoder(torch.randn(d_in, d_sae), torch.zeros(d_sae), W_dec, torch.zeros(d_in), architecture="standard",
                               hook_name="blocks.0.hook_resid_post"), tmp_path / "sae")
    overrides = [*label_overrides(tiny_model_dir), "feature=sae_latent", "sae=local", f"sae.path={tmp_path / 'sae'}"]
    check_clean_failure("label", overrides, tmp_path / "out", r"SAE weights W_dec hold NaN or infinite values", capsys)
