"""Dataclass configs round-trip with the YAML that ships them: every YAML key is a field and back again."""

from dataclasses import asdict, fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradspace.errors import GradspaceError
from gradspace.ftgd.masks import MaskConfig
from gradspace.labeling.config import (
    DiscreteConfig,
    EvaluationConfig,
    LabelingConfig,
    SoftLabelConfig,
    feature_config,
    prompt_config,
    sae_config,
)
from gradspace.labeling.sae_training import BuiltinSAEConfig
from gradspace.synth.pretrain import PretrainConfig
from gradspace.synth.world import WorldConfig
from gradspace.utils.run_config import config_from_section, plain_section

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"


def normalised(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("yaml_file, section, config_class", [
    ("model/synth-1m.yaml", "world", WorldConfig),
    ("model/synth-1m.yaml", "pretrain", PretrainConfig),
    ("model/synth-4m.yaml", "world", WorldConfig),
    ("model/synth-4m.yaml", "pretrain", PretrainConfig),
    ("train.yaml", "ftgd.mask", MaskConfig),
])
def test_shipped_section_round_trips(yaml_file, section, config_class):
    shipped = plain_section(OmegaConf.select(OmegaConf.load(CONF / yaml_file), section))
    config = config_class(**shipped)
    assert {key: normalised(value) for key, value in asdict(config).items()} == shipped
    assert config_class(**asdict(config)) == config
    assert set(shipped) == {field.name for field in fields(config_class)}, "a field is missing from the YAML"


def test_synth_1m_yaml_is_the_code_default():
    """The code's defaults are the built-in world (what non-synthetic models are evaluated on) and synth-1m."""
    shipped = OmegaConf.load(CONF / "model" / "synth-1m.yaml")
    assert PretrainConfig(**plain_section(shipped.pretrain)) == PretrainConfig()
    assert WorldConfig(**plain_section(shipped.world)) == WorldConfig()


def compose_label(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("label", overrides=["logger=none", *overrides])


@pytest.mark.parametrize("section, config_class", [
    ("label", SoftLabelConfig), ("discrete", DiscreteConfig), ("evaluation", EvaluationConfig),
])
def test_label_yaml_sections_round_trip(section, config_class):
    shipped = plain_section(OmegaConf.load(CONF / "label.yaml")[section])
    config = config_from_section(config_class, shipped, section)
    assert asdict(config) == shipped
    assert set(shipped) == {field.name for field in fields(config_class)}


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "feature").glob("*.yaml")))
def test_feature_yamls_round_trip(option):
    required = {"records": ["feature.path=records.jsonl"], "delphi": ["feature.path=latents", "feature.ids=[0]"]}.get(option, [])  # their `???`
    shipped = plain_section(compose_label(f"feature={option}", *required).feature)
    assert asdict(feature_config(shipped)) == shipped


@pytest.mark.parametrize("option", ["default", "contextual"])
def test_prompt_yamls_round_trip(option):
    shipped = plain_section(compose_label(f"prompt={option}").prompt)
    config = prompt_config(shipped)
    families = {name: {key: value for key, value in asdict(family).items() if key in shipped["families"][name]}
                for name, family in config.families.items()}
    assert {**asdict(config), "families": families} == shipped


def test_builtin_sae_yaml_is_the_builtin_sae_default():
    shipped = plain_section(OmegaConf.load(CONF / "sae" / "builtin.yaml"))
    assert sae_config(shipped) == BuiltinSAEConfig()
    assert set(shipped) - {"source"} == {field.name for field in fields(BuiltinSAEConfig)}


def test_every_labeling_section_of_the_composed_config_is_read():
    config = LabelingConfig.from_config(compose_label("feature=sae_latent", "sae=local", "sae.path=/x"))
    assert config.label.kl_weight == 0.05 and config.feature.kind == "sae" and config.sae.path == "/x"


@pytest.mark.parametrize("override, message", [
    ("+label.kl_wieght=0.2", r"^label.kl_wieght is not a setting of label; the known ones are steps, length, .*kl_weight"),
    ("+discrete.swap_round=0", r"^discrete.swap_round is not a setting of discrete; the known ones are top, "),
    ("+feature.treshold=0.5", r"^feature.treshold is not a setting of feature"),
    ("+prompt.families.synth.answer=[yes,no]", r"^prompt.families.synth.answer is not a setting"),
    ("+sae.dsae=64", r"^sae.dsae is not a setting of sae"),
])
def test_a_misspelt_labeling_key_is_refused_by_name(override, message):
    extra = ["sae=builtin"] if override.startswith("+sae") else []
    with pytest.raises(GradspaceError, match=message):
        LabelingConfig.from_config(compose_label(*extra, override))


def test_a_missing_labeling_key_is_refused_by_name():
    with pytest.raises(GradspaceError, match="^label lacks kl_weight"):
        LabelingConfig.from_config(compose_label("~label.kl_weight"))


@pytest.mark.parametrize("override, message", [
    ("evaluation.frequent_scan_words=-1", r"^evaluation.frequent_scan_words=-1 must be a whole number >= 0"),
    ("label.seed_prompt='they are all kinds of'", r"^label.seed_prompt='they are all kinds of' needs a \{words\} slot"),
])
def test_a_bad_setting_of_the_descent_through_a_read_label_is_refused_in_one_line(override, message):
    with pytest.raises(GradspaceError, match=message):
        LabelingConfig.from_config(compose_label(override))


@pytest.mark.parametrize("overrides, message", [
    (["feature.fit_on=sentences"], r"^feature.fit_on='sentences' is unknown; use one of windows, tokens"),
    (["feature.fit_on=windows", "label.method=descent"], r"^feature.fit_on=windows scans one-token labels over whole windows \(label.method=descent"),
    (["feature.fit_on=windows", "label.length=2"], r"^feature.fit_on=windows .*label.length=2\): use label.method=scan label.length=1, or feature.fit_on=tokens"),
])
def test_a_delphi_fit_the_scan_cannot_make_is_refused_in_one_line(overrides, message):
    with pytest.raises(GradspaceError, match=message):
        LabelingConfig.from_config(compose_label("feature=delphi", "feature.path=/x", "feature.ids=[1]", *overrides))


def test_a_delphi_fit_on_tokens_takes_any_method():
    config = LabelingConfig.from_config(compose_label("feature=delphi", "feature.path=/x", "feature.ids=[1]", "feature.fit_on=tokens",
                                                      "label.method=descent"))
    assert config.feature.fit_on == "tokens"
