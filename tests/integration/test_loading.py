import pytest
import torch

from gradspace.errors import GradspaceError
from gradspace.models.loading import load_model

pytestmark = pytest.mark.integration


def test_local_directory_loads_with_padding_and_same_weights(tiny_model_dir, tiny_lm):
    loaded = load_model({"name": "tiny", "source": "local", "path": str(tiny_model_dir)})
    reference, _ = tiny_lm
    assert loaded.tokenizer.pad_token_id is not None and loaded.revision == "main"
    ids = torch.tensor([[0, 5, 6, 7]])
    assert torch.allclose(loaded.model(ids).logits, reference(ids).logits, atol=1e-6)


def test_missing_local_directory_is_one_clear_error(tmp_path):
    with pytest.raises(GradspaceError, match="not a saved model directory.*model.path"):
        load_model({"name": "x", "source": "local", "path": str(tmp_path / "nowhere")})


def test_hub_model_offline_says_what_to_do():
    with pytest.raises(GradspaceError, match=r"could not load model 'EleutherAI/pythia-70m' at revision 'step1000'.*connect to the internet"):
        load_model({"name": "pythia-70m", "source": "hf", "path": "EleutherAI/pythia-70m", "revision": "step1000"})


@pytest.mark.parametrize("cfg, message", [
    ({"name": "x", "source": "ftp", "path": "p"}, "model.source='ftp' is unknown"),
    ({"name": "x", "source": "hf"}, "has no path"),
])
def test_bad_model_configs(cfg, message):
    with pytest.raises(GradspaceError, match=message):
        load_model(cfg)


def test_remote_code_stays_off_unless_asked(tiny_model_dir, monkeypatch):
    import transformers

    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    load_model({"name": "tiny", "source": "local", "path": str(tiny_model_dir)})
    load_model({"name": "tiny", "source": "local", "path": str(tiny_model_dir), "trust_remote_code": True})
    assert seen == [False, True]
