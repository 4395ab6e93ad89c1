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
        "model": {"name": "m", "tokenizer": "kept"},
    })
    logged = loggable_config(cfg)
    assert "sk-live-123" not in str(logged) and "hf_abc" not in str(logged)
    assert logged["logger"]["wandb"]["api_key"] == REDACTED and logged["hub"]["nested"][0] == {"password": REDACTED, "lr": 1}
    assert logged["model"] == {"name": "m", "tokenizer": "kept"}
