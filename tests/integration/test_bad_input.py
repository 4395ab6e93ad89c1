"""Bad input across the entry points: one line naming the problem and the fix, a non-zero exit, nothing written,
and earlier results left as they were."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gradspace.errors import exit_on_user_error

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = '{"status": "ok", "from": "an earlier run"}\n'


def entry_run(entry: str):
    if entry == "train":
        from gradspace.ftgd.run import run
    elif entry == "probe":
        from gradspace.probing.run import run
    else:
        from gradspace.labeling.run import run
    return run


def local_overrides(suite: Path) -> list[str]:
    return ["model=local", f"model.path={suite / 'model'}", "data.source=jsonl", f"data.path={suite / 'suite'}",
            "logger=none", f"paths.cache_dir={suite / 'cache'}"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def damaged_model(model_dir: Path, scratch: Path, size: int | None) -> Path:
    """A copy of the model whose model.safetensors is cut to `size` bytes (None: half of it)."""
    copy = scratch / f"model-{size}"
    shutil.copytree(model_dir, copy)
    weights = copy / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2 if size is None else size)
    return copy


def weightless_model(model_dir: Path, scratch: Path) -> Path:
    """A copy of the model directory with its config and tokenizer but no weights file."""
    copy = scratch / "weightless"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    return copy


def suite_with_a_long_sentence(suite: Path, scratch: Path) -> Path:
    """The tiny suite plus one pair whose good sentence has 30,000 words (a batch of it would ask for ~8 GB)."""
    copy = scratch / "long-suite"
    shutil.copytree(suite / "suite", copy)
    with (copy / "sva.jsonl").open("a") as handle:
        handle.write(json.dumps({"sentence_good": " ".join(["the dog runs"] * 10_000), "sentence_bad": "the dog run"}) + "\n")
    return copy


def label_overrides(model_dir: Path) -> list[str]:
    # The tiny model knows "is a dog a mammal ? yes", so the synthetic-language prompt has its answer tokens.
    return ["model=local", f"model.path={model_dir}", "logger=none", f"paths.cache_dir={model_dir.parent / 'cache'}",
            "prompt.style=synth"]


def bad_jsonl_cases(tmp: Path):
    good = json.dumps({"sentence_good": "the dog runs", "sentence_bad": "the dog run"})
    latin1 = '{"sentence_good": "the caf\xe9 runs", "sentence_bad": "the caf\xe9 run"}\n'.encode("latin-1")
    return {
        "not UTF-8": (write_bytes(tmp / "u" / "sva.jsonl", good.encode() + b"\n" + latin1), r"sva\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 27\); save the file as UTF-8"),
        "malformed line": (write(tmp / "m" / "sva.jsonl", f"{good}\n{{oops\n"), r"sva\.jsonl:2: not valid JSON"),
        "empty file": (write(tmp / "e" / "sva.jsonl", "\n"), r"sva\.jsonl: no minimal pairs"),
        "missing field": (write(tmp / "f" / "sva.jsonl", json.dumps({"sentence_good": "a"}) + "\n"), r"sva\.jsonl:1: missing or empty field\(s\) sentence_bad"),
        "directory without data": ((tmp / "empty_dir").mkdir() or tmp / "empty_dir", r"no \.jsonl files"),
    }


CASES = [
    # (id, entry point, overrides given the fixture dir and a scratch dir, expected message)
    ("unknown task", "train", lambda s, t, m: [*local_overrides(s), "task=paradigm", "task.name=nope"], r"unknown task 'nope'.*known tasks: anaphor, npi, sva"),
    ("offline hub model", "train", lambda s, t, m: [*local_overrides(s)[2:], "model=pythia-70m", "task=all"], r"could not load model 'EleutherAI/pythia-70m' at revision 'main'.*connect to the internet"),
    ("offline hub dataset", "train", lambda s, t, m: ["model=pythia-70m", "logger=none", f"paths.cache_dir={t}"], r"could not load nyu-mll/blimp/.*set paths.blimp_dir="),
    ("conflicting options", "train", lambda s, t, m: [*local_overrides(s), "objective=lm", "ftgd.mask.kind=topk"], r"lm baseline has no gradient differential to mask"),
    ("missing checkpoint", "train", lambda s, t, m: [*local_overrides(s), f"ckpt_path={t / 'none.ckpt'}"], r"is not a file"),
    ("one task is no space", "probe", lambda s, t, m: [*local_overrides(s), "task=paradigm", "task.name=sva", "source.inprocess=false"], r"needs at least 2"),
    ("word list outside the vocabulary", "label", lambda s, t, m: [*label_overrides(m), "feature=animals", "feature.sets.animals=[zebra,okapi]"], r"none of its words"),
    ("template without the label slot", "label", lambda s, t, m: [*label_overrides(m), "feature=animals", "prompt.families.synth.template='is a {word} ok ?'"], r"template .*label"),
    ("SAE directory that is not one", "label", lambda s, t, m: [*label_overrides(m), "feature=sae_latent", "sae=local", f"sae.path={t}"], r"cfg\.json|SAE"),
    ("latent feature without an SAE", "label", lambda s, t, m: [*label_overrides(m), "feature=sae_latent"], r"needs an SAE; add sae=builtin"),
    ("zero steps", "train", lambda s, t, m: [*local_overrides(s), "ftgd.max_steps=0"], r"^error: ftgd\.max_steps=0 must be at least 1; set ftgd\.max_steps=<integer >= 1>$"),
    ("negative learning rate", "train", lambda s, t, m: [*local_overrides(s), "optimizer.lr=-1"], r"^error: optimizer\.lr=-1 must be positive"),
    ("empty batches", "train", lambda s, t, m: [*local_overrides(s), "ftgd.batch_size=0"], r"^error: ftgd\.batch_size=0 must be at least 1"),
    ("text for a step count", "train", lambda s, t, m: [*local_overrides(s), "ftgd.max_steps=abc"], r"^error: ftgd\.max_steps='abc' is not a whole number"),
    ("text for the seed", "train", lambda s, t, m: [*local_overrides(s), "seed=x"], r"^error: seed='x' is not a whole number"),
    ("paradigm without a name", "train", lambda s, t, m: [*local_overrides(s), "task=paradigm"], r"^error: task\.name has no value; set it on the command line"),
    ("truncated safetensors", "train", lambda s, t, m: [*local_overrides(s), f"model.path={damaged_model(s / 'model', t, None)}"], r"^error: could not load model .*model-None: its safetensors weights are damaged or incomplete \(.*\); save or download the model again$"),
    ("empty safetensors", "train", lambda s, t, m: [*local_overrides(s), f"model.path={damaged_model(s / 'model', t, 0)}"], r"^error: could not load model .*model-0: its safetensors weights are damaged or incomplete"),
    ("sentence longer than the cap", "train", lambda s, t, m: [*local_overrides(s), f"data.path={suite_with_a_long_sentence(s, t)}", "ftgd.max_sentence_tokens=32"], r"^error: .*long-suite/sva\.jsonl:73: sentence_good has 30001 tokens, more than ftgd\.max_sentence_tokens=32; shorten or remove that pair"),
    ("sentence longer than the model's context", "train", lambda s, t, m: [*local_overrides(s), f"data.path={suite_with_a_long_sentence(s, t)}"], r"^error: .*sva\.jsonl:73: sentence_good has 30001 tokens, more than the model's context \(64 tokens\)"),
    ("local model without a path", "probe", lambda s, t, m: ["model=local", "logger=none"], r"^error: model config 'local' has no path; set model\.path=\.\.\.$"),
    ("local model without a path", "label", lambda s, t, m: ["model=local", "logger=none"], r"^error: model config 'local' has no path"),
    ("model directory without weights", "train", lambda s, t, m: [*local_overrides(s), f"model.path={weightless_model(s / 'model', t)}"], r"^error: could not load the model directory (?!.*internet).*it needs config\.json, the weights"),
    ("missing sweep dir", "probe", lambda s, t, m: [*local_overrides(s), f"source.multirun_dir={t / 'nowhere'}"], r"no such directory"),
]


def check_clean_failure(entry: str, overrides: list[str], out: Path, expected: str, capsys) -> None:
    results = write(out / "results.json", PREVIOUS)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=entry, overrides=[*overrides, f"paths.output_dir={out}"])
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(entry_run(entry))(cfg)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(expected, errors[0]), errors
    assert results.read_text() == PREVIOUS, "an earlier result was overwritten"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"], "a failed run left files behind"


@pytest.mark.parametrize("entry, make_overrides, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_fails_cleanly(entry, make_overrides, expected, tiny_suite_dir, tiny_model_dir, tmp_path, capsys):
    overrides = make_overrides(tiny_suite_dir, tmp_path / "scratch", tiny_model_dir)
    check_clean_failure(entry, overrides, tmp_path / "out", expected, capsys)


@pytest.mark.parametrize("case", ["malformed line", "empty file", "missing field", "directory without data", "not UTF-8"])
def test_bad_pair_files_fail_cleanly(case, tiny_suite_dir, tmp_path, capsys):
    path, expected = bad_jsonl_cases(tmp_path)[case]
    overrides = [*local_overrides(tiny_suite_dir), f"data.path={path}", "task=all"]
    check_clean_failure("train", overrides, tmp_path / "out", expected, capsys)


def cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_user_error_is_one_line_and_exit_code_2(tiny_suite_dir, tmp_path):
    proc = cli("train.py", *local_overrides(tiny_suite_dir), "task=paradigm", "task.name=nope", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: unknown task 'nope'")
    assert not (tmp_path / "run" / "results.json").exists()


def test_cli_unknown_model_lists_the_known_ones(tmp_path):
    proc = cli("train.py", "model=gpt5", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'model/gpt5'" in proc.stderr and "pythia-410m" in proc.stderr and "synth-1m" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sweep_with_a_failing_job_finishes_the_others_and_records_the_failure(tiny_suite_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("train.py", "-m", *local_overrides(tiny_suite_dir), "task=paradigm", "task.name=sva,nope,npi",
               "ftgd.max_steps=2", "ftgd.batch_size=4", "callbacks=no_checkpoints", "torch_threads=1",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode != 0 and "task.name=nope" in proc.stderr
    assert json.loads((sweep / "0" / "results.json").read_text())["status"] == "ok"
    assert json.loads((sweep / "2" / "results.json").read_text())["status"] == "ok"
    assert not (sweep / "1" / "results.json").exists()
    assert "unknown task 'nope'" in json.loads((sweep / "1" / "failure.json").read_text())["error"]

    from gradspace.probing.transfer import read_multirun_dir

    records = read_multirun_dir(sweep)
    assert len(records.records) == 2 and any("failed (GradspaceError: unknown task 'nope'" in p for p in records.problems)
