"""Safe loading and no secrets in what is logged."""

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradspace.utils.run_config import REDACTED, loggable_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "src").rglob("*.py")) + [ROOT / name for name in ("train.py", "probe.py", "label.py")]


def calls(name: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                yield path, node


def keyword(node: ast.Call, name: str):
    return next((kw.value for kw in node.keywords if kw.arg == name), None)


def test_pickle_loading_is_weights_only_everywhere():
    for path, node in calls("load"):
        if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            value = keyword(node, "weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno} torch.load without weights_only=True"
    for path, node in calls("fit"):
        if keyword(node, "ckpt_path") is not None:
            value = keyword(node, "weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno} resumes without weights_only=True"


def test_remote_code_is_off_in_every_model_config():
    for path in (ROOT / "conf" / "model").glob("*.yaml"):
        assert OmegaConf.load(path).get("trust_remote_code") is False, path


def test_secrets_never_reach_the_logged_config(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sk-live-123")
    cfg = OmegaConf.create({
        "logger": {"wandb": {"project": "p", "api_key": "${oc.env:WANDB_API_KEY}"}},
        "hub": {"HF_TOKEN": "hf_abc", "nested": [{"password": "x", "lr": 1}]},
        "model": {"name": "m", "tokenizer": "kept", "prefix_token": "<|endoftext|>"},
    })
    logged = loggable_config(cfg)
    assert "sk-live-123" not in str(logged) and "hf_abc" not in str(logged)
    assert logged["logger"]["wandb"]["api_key"] == REDACTED and logged["hub"]["nested"][0] == {"password": REDACTED, "lr": 1}
    # a tokenizer's token named in a setting is no credential: a run's config must load again as it ran
    assert logged["model"] == {"name": "m", "tokenizer": "kept", "prefix_token": "<|endoftext|>"}


@pytest.mark.parametrize("override, expected", [
    ("+my_token=abc123", "+my_token=<redacted>"),
    ("logger.wandb.api_key=abc123", "logger.wandb.api_key=<redacted>"),
    ("++hub.HF_TOKEN=hf_x", "++hub.HF_TOKEN=<redacted>"),
    ("model.tokenizer=gpt2", "model.tokenizer=gpt2"),
    ("model.prefix_token=<s>", "model.prefix_token=<s>"),
    ("task.name=sva", "task.name=sva"),
    ("~logger", "~logger"),
])
def test_overrides_lose_secret_values(override, expected):
    from gradspace.utils.run_config import scrub_override

    assert scrub_override(override) == expected


def test_saved_hydra_files_hold_no_secret(monkeypatch):
    from hydra import compose, initialize_config_dir

    from gradspace.utils.hydra_files import safe_config_files

    monkeypatch.setenv("MY_SECRET_ENV", "env-secret-value")
    overrides = ["+my_token=tok-secret-1", "+logger.wandb.api_key=key-secret-2", "+hub.password=${oc.env:MY_SECRET_ENV}", "task=npi"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    files = safe_config_files(cfg)
    text = "".join(OmegaConf.to_yaml(OmegaConf.create(content)) for content in files.values())
    for secret in ("tok-secret-1", "key-secret-2", "env-secret-value"):
        assert secret not in text
    assert files["overrides.yaml"] == ["+my_token=<redacted>", "+logger.wandb.api_key=<redacted>", "+hub.password=<redacted>", "task=npi"]
    assert files["config.yaml"]["my_token"] == REDACTED and files["config.yaml"]["task"]["name"] == "npi"
    assert files["hydra.yaml"]["hydra"]["overrides"]["task"] == files["overrides.yaml"]


def test_secret_values_are_redacted_wherever_they_occur():
    from gradspace.utils.run_config import redact_values, secret_values

    secrets = secret_values({"a": {"api_key": "abcdef"}, "b": ["+x.token=ghijkl", "+short_token=1"]})
    assert secrets == {"abcdef", "ghijkl"}  # one character is no secret worth hiding every "1" for
    assert redact_values({"dir": "runs/+x.token=ghijkl,seed=1", "n": 1}, secrets) == {"dir": "runs/+x.token=<redacted>,seed=1", "n": 1}


@pytest.mark.parametrize("env_mode, config_mode, expected", [
    ("offline", "auto", "offline"), ("dryrun", "auto", "offline"), ("disabled", "auto", "disabled"),
    (None, "auto", "online"), ("offline", "online", "online"), ("online", "offline", "offline"),
])
def test_an_explicit_wandb_mode_wins(monkeypatch, env_mode, config_mode, expected):
    from gradspace.utils.wandb_setup import resolve_wandb_mode

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    if env_mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    assert resolve_wandb_mode(config_mode) == expected


def test_unknown_wandb_mode_in_the_environment_is_one_line(monkeypatch):
    from gradspace.errors import GradspaceError
    from gradspace.utils.wandb_setup import resolve_wandb_mode

    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(GradspaceError, match=r"^WANDB_MODE='sometimes' is unknown; set it to one of online, run, offline"):
        resolve_wandb_mode("auto")
