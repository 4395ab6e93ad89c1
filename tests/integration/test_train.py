"""`train.py` end to end on a tiny local GPT-NeoX and a three-task jsonl suite, on the CPU.

In-process runs use Hydra's compose API and `gradspace.ftgd.run.run`; what a user types is run as a subprocess.
"""

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoTokenizer, GPTNeoXForCausalLM

from gradspace.data.suite import prepare_task_data
from gradspace.errors import GradspaceError
from gradspace.ftgd import callbacks as ftgd_callbacks
from gradspace.ftgd import module as ftgd_module
from gradspace.ftgd.callbacks import BaseMeasurement
from gradspace.ftgd.run import run
from gradspace.utils.io import RESULTS_FILE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
from conftest import TINY_SUITE_TASKS as TASKS  # noqa: E402

RESULT_KEYS = {"schema_version", "status", "model", "task", "tasks_trained", "objective", "mask", "seed", "phenomena", "eval_before",
               "eval_after", "transfer", "heldout_lm_loss", "config"}


def base_overrides(tiny_suite_dir: Path, out: Path, task: str = "sva") -> list[str]:
    return [
        "model=local", f"model.path={tiny_suite_dir / 'model'}", "data.source=jsonl", f"data.path={tiny_suite_dir / 'suite'}",
        "task=paradigm", f"task.name={task}", "ftgd.max_steps=6", "ftgd.batch_size=8", "optimizer.lr=3e-3",
        f"paths.cache_dir={tiny_suite_dir / 'cache'}", f"paths.log_dir={out / 'logs'}", "trainer.log_every_n_steps=1", "torch_threads=1",
        "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
    ]


def compose_run(tiny_suite_dir: Path, out: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*base_overrides(tiny_suite_dir, out), f"paths.output_dir={out}", *extra])
    return cfg


def run_in_process(tiny_suite_dir: Path, out: Path, *extra: str) -> dict:
    return run(compose_run(tiny_suite_dir, out, "logger=none", *extra))


def train_cli(*args: str, cwd: Path = ROOT, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def outcome(results) -> dict:
    """Everything a run measured (not timings or paths)."""
    return {key: getattr(results, key) for key in ("eval_before", "eval_after", "transfer", "heldout_lm_loss", "steps")}


def wandb_records(run_dir: Path):
    """The protobuf records of an offline W&B run (its .wandb file is a LevelDB-style log of them)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = next(run_dir.glob("*.wandb")).read_bytes()
    block, position, pending, records = 32768, 7, b"", []  # the file starts with a 7-byte W&B header
    while position + 7 <= len(raw):
        if block - position % block < 7:
            position += block - position % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", raw[position : position + 7])
        chunk = raw[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:  # zero padding to the end of a block
            position += (block - position % block) % block
        elif kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    parsed = []
    for data in records:
        record = pb.Record()
        record.ParseFromString(data)
        parsed.append(record)
    return parsed


def wandb_summary(run_dir: Path) -> dict:
    history_keys, run_record = set(), None
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history_keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
        elif kind == "run":
            run_record = record.run
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    return {"keys": history_keys, "name": run_record.display_name, "group": run_record.run_group,
            "tags": list(run_record.tags), "config": config, "id": run_record.run_id}


def test_cli_run_writes_results_checkpoint_and_offline_wandb_run(tiny_suite_dir, tmp_path):
    out = tmp_path / "run"
    proc = train_cli(*base_overrides(tiny_suite_dir, tmp_path), f"hydra.run.dir={out}", "tags=[cli]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "transfer (accuracy after - before):" in proc.stdout

    results = json.loads((out / RESULTS_FILE).read_text())
    assert RESULT_KEYS <= set(results) and results["status"] == "ok"
    assert results["task"] == "sva" and results["tasks_trained"] == ["sva"] and results["objective"] == "bounded"
    assert set(results["eval_before"]) == set(results["eval_after"]) == set(results["transfer"]) == set(TASKS)
    assert results["phenomena"] == {task: f"{task}_group" for task in TASKS}
    for task in TASKS:
        for key in ("accuracy", "margin"):
            expected = results["eval_after"][task][key] - results["eval_before"][task][key]
            assert results["transfer"][task][key] == pytest.approx(expected)
    heldout = results["heldout_lm_loss"]
    assert heldout["delta"] == pytest.approx(heldout["after"] - heldout["before"]) and heldout["before"] > 0
    assert results["config"]["ftgd"]["max_steps"] == 6 and results["config"]["optimizer"]["lr"] == 3e-3
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / results["run"]["checkpoint"]).exists()  # relative to the run
    # the after-training measurements drop the optimizer state, after the last checkpoint has kept it
    saved_state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["optimizer_states"][0]["state"]
    assert saved_state and all(torch.count_nonzero(state["exp_avg_sq"]) for state in saved_state.values())

    (run_dir,) = (out / "wandb").glob("offline-run-*")
    logged = wandb_summary(run_dir)
    for key in ("train/loss", "train/margin", "train/grad_norm", "eval_before/accuracy/sva", "eval_after/margin/npi",
                "transfer/sva", "transfer/anaphor", "transfer_margin/npi", "heldout/lm_loss_delta"):
        assert key in logged["keys"], key
    assert logged["name"] == "local@main-sva-bounded" and {"cli", "sva", "bounded"} <= set(logged["tags"])
    assert logged["config"]["objective"] == {"name": "bounded"}


def test_same_seed_gives_identical_results_and_another_seed_does_not(tiny_suite_dir, tmp_path):
    first = run_in_process(tiny_suite_dir, tmp_path / "a", "callbacks=no_checkpoints")
    second = run_in_process(tiny_suite_dir, tmp_path / "b", "callbacks=no_checkpoints")
    other = run_in_process(tiny_suite_dir, tmp_path / "c", "callbacks=no_checkpoints", "seed=1")
    assert outcome(first) == outcome(second)
    assert outcome(first)["eval_before"] == outcome(other)["eval_before"]
    assert outcome(first)["eval_after"] != outcome(other)["eval_after"]
    assert json.loads((tmp_path / "a" / RESULTS_FILE).read_text())["transfer"] == first.transfer

    # The same config, output directory included, writes a byte-identical results file.
    first_text = (tmp_path / "a" / RESULTS_FILE).read_text()
    run_in_process(tiny_suite_dir, tmp_path / "a", "callbacks=no_checkpoints")
    assert (tmp_path / "a" / RESULTS_FILE).read_text() == first_text


def test_a_copy_of_the_same_checkpoint_reuses_its_base_measurement_and_gets_the_same_results(tiny_suite_dir, tmp_path, monkeypatch):
    # How a probe fine-tunes one copy per task: the untrained model is measured by the first copy only.
    first = run_in_process(tiny_suite_dir, tmp_path / "sva", "callbacks=no_checkpoints")
    measured = run_in_process(tiny_suite_dir, tmp_path / "npi", "callbacks=no_checkpoints", "task.name=npi")
    base = BaseMeasurement.of_results(first)
    assert base is not None and base.key == measured.base_key

    calls = []
    for name in ("evaluate_pairs", "heldout_lm_loss"):
        original = getattr(ftgd_callbacks, name)
        monkeypatch.setattr(ftgd_callbacks, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    reused = run(compose_run(tiny_suite_dir, tmp_path / "npi_reused", "logger=none", "callbacks=no_checkpoints", "task.name=npi"), base)
    assert sorted(calls) == ["evaluate_pairs", "heldout_lm_loss"]  # the after side only
    assert outcome(reused) == outcome(measured)

    # A copy that evaluates something else (its own task only) measures its own base.
    calls.clear()
    own = run(compose_run(tiny_suite_dir, tmp_path / "npi_own", "logger=none", "callbacks=no_checkpoints", "task.name=npi",
                          "data.eval_all_tasks=false"), base)
    assert own.base_key != base.key and len(calls) == 4
    assert own.eval_before == {"npi": measured.eval_before["npi"]}


def test_resume_from_checkpoint_gives_the_same_final_metrics(tiny_suite_dir, tmp_path):
    # A sparse, fixed mask and the token-level objective: the resumed run must restore the mask too.
    extra = ["objective=diff_tokens", "ftgd.mask.kind=topk", "ftgd.mask.density=0.2",
             "callbacks.model_checkpoint.every_n_train_steps=3"]
    full = run_in_process(tiny_suite_dir, tmp_path / "full", *extra)
    midway = tmp_path / "full" / "checkpoints" / "step3.ckpt"
    assert midway.is_file()
    resumed = run_in_process(tiny_suite_dir, tmp_path / "resumed", *extra, f"ckpt_path={midway}")
    assert resumed.steps == full.steps == 6
    assert outcome(resumed) == outcome(full)


def final_weights(results) -> dict[str, torch.Tensor]:
    """The fine-tuned model's parameters, by the model's own names, from the run's last checkpoint."""
    state = torch.load(results.run["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    return {name.removeprefix("model."): tensor for name, tensor in state.items() if name.startswith("model.")}


def test_micro_batches_make_the_same_steps_as_whole_batches(tiny_suite_dir, tmp_path):
    # A fixed mask too: it is chosen from the same first steps' pairs, however they are split into passes.
    extra = ["ftgd.batch_size=8", "ftgd.mask.kind=topk", "ftgd.mask.density=0.2"]
    whole = run_in_process(tiny_suite_dir, tmp_path / "whole", *extra)
    micro = run_in_process(tiny_suite_dir, tmp_path / "micro", *extra, "ftgd.micro_batch_size=2")
    assert micro.steps == whole.steps == 6
    whole_weights, micro_weights = final_weights(whole), final_weights(micro)
    start = dict(GPTNeoXForCausalLM.from_pretrained(tiny_suite_dir / "model").named_parameters())
    assert any(not torch.equal(whole_weights[name], start[name]) for name in start)
    for name, weight in whole_weights.items():
        assert torch.allclose(micro_weights[name], weight, atol=1e-5), name
    assert micro.heldout_lm_loss["after"] == pytest.approx(whole.heldout_lm_loss["after"], abs=1e-4)


@pytest.mark.parametrize("scope", ["global", "per_tensor"])
def test_topk_mask_updates_exactly_the_masked_entries(tiny_suite_dir, tmp_path, scope):
    # Weight decay moves every entry the optimizer touches, so an entry that should be held but is not would show.
    results = run_in_process(tiny_suite_dir, tmp_path / "masked", "ftgd.mask.kind=topk", "ftgd.mask.density=0.05",
                             f"ftgd.mask.scope={scope}", "ftgd.mask.schedule=fixed", "optimizer.weight_decay=0.1")
    masks = torch.load(results.run["checkpoint"], map_location="cpu", weights_only=True)["ftgd_mask"]
    start = dict(GPTNeoXForCausalLM.from_pretrained(tiny_suite_dir / "model").named_parameters())
    final = final_weights(results)
    assert set(masks) == set(start)
    # The mask has the density asked for: ceil(5%) of all entries, or of each tensor.
    if scope == "global":
        total = sum(param.numel() for param in start.values())
        assert sum(int(mask.sum()) for mask in masks.values()) == math.ceil(0.05 * total)
    else:
        assert all(int(masks[name].sum()) == math.ceil(0.05 * param.numel()) for name, param in start.items())
    for name, before in start.items():
        moved = final[name] != before
        assert torch.equal(moved, masks[name]), (
            f"{name}: {int((moved & ~masks[name]).sum())} entries moved outside the mask, "
            f"{int((masks[name] & ~moved).sum())} masked entries did not move")


def train_pair_margins(model: torch.nn.Module, tokenizer, pairs) -> torch.Tensor:
    """log p(good) − log p(bad) per pair, each sentence scored after the BOS token with a plain forward pass."""
    margins = []
    with torch.no_grad():
        for pair in pairs:
            logprob = []
            for sentence in (pair.good, pair.bad):
                ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(sentence, add_special_tokens=False).input_ids]])
                logits = model(ids).logits[0, :-1].log_softmax(-1)
                logprob.append(logits.gather(1, ids[0, 1:, None]).sum())
            margins.append(logprob[0] - logprob[1])
    return torch.stack(margins)


def test_ftgd_raises_the_trained_tasks_margin_and_training_another_task_does_not(tiny_suite_dir, tmp_path):
    cfg = compose_run(tiny_suite_dir, tmp_path / "unused")
    pairs = prepare_task_data(cfg.task, cfg.data, cfg.model, Path(cfg.paths.cache_dir), None).train  # sva's train split
    model = GPTNeoXForCausalLM.from_pretrained(tiny_suite_dir / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_suite_dir / "model")
    before = train_pair_margins(model, tokenizer, pairs)

    def change(name: str, *extra: str) -> torch.Tensor:
        results = run_in_process(tiny_suite_dir, tmp_path / name, *extra)
        assert results.steps == 6
        model.load_state_dict(final_weights(results))
        return train_pair_margins(model, tokenizer, pairs) - before

    sva, npi = change("sva"), change("npi", "task.name=npi")
    assert {pair.task for pair in pairs} == {"sva"} and len(pairs) > 40
    # Measured: sva +0.56 nats on average (52 of 55 pairs up); npi (the control) −0.09 (24 of 55 up).
    assert sva.mean() > 0.3 and (sva > 0).float().mean() > 0.8, f"mean margin change {sva.mean():.3f}"
    assert npi.mean() < 0.25 * sva.mean(), f"training npi moved the sva margin by {npi.mean():.3f}"


def test_non_finite_loss_stops_with_a_clear_error_and_writes_no_results(tiny_suite_dir, tmp_path, monkeypatch):
    real_loss, calls = ftgd_module.objective_loss, []

    def diverging(model, batch, objective):  # the third training step's loss is NaN
        loss, stats = real_loss(model, batch, objective)
        calls.append(objective)
        return (loss * float("nan") if len(calls) == 3 else loss), stats

    monkeypatch.setattr(ftgd_module, "objective_loss", diverging)
    with pytest.raises(GradspaceError, match=r"non-finite training loss \(nan\) at step 2 .*lower optimizer.lr"):
        run_in_process(tiny_suite_dir, tmp_path / "nan")
    assert not (tmp_path / "nan" / RESULTS_FILE).exists()


def test_missing_checkpoint_is_a_user_error_before_any_work(tiny_suite_dir, tmp_path):
    with pytest.raises(GradspaceError, match=r"ckpt_path=.*missing.ckpt is not a file; point it at a .ckpt"):
        run_in_process(tiny_suite_dir, tmp_path / "bad", f"ckpt_path={tmp_path / 'missing.ckpt'}")
    assert not (tmp_path / "bad").exists()


def test_multirun_over_three_tasks_gives_three_separate_wandb_runs(tiny_suite_dir, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [o for o in base_overrides(tiny_suite_dir, tmp_path) if not o.startswith("task.name=")]
    proc = train_cli("-m", *overrides, "task.name=sva,npi,anaphor", f"hydra.sweep.dir={sweep}", "callbacks=no_checkpoints")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(path for path in sweep.iterdir() if path.is_dir() and path.name.isdigit())
    assert [job.name for job in jobs] == ["0", "1", "2"]
    runs = []
    for job, task in zip(jobs, ("sva", "npi", "anaphor")):
        results = json.loads((job / RESULTS_FILE).read_text())
        assert results["task"] == task and results["tasks_trained"] == [task]
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        runs.append(wandb_summary(run_dir))
    assert len({r["id"] for r in runs}) == 3
    assert [r["name"] for r in runs] == [f"local@main-{task}-bounded" for task in ("sva", "npi", "anaphor")]
    assert {r["group"] for r in runs} == {sweep.name}
    assert all("transfer/sva" in r["keys"] for r in runs)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_suite_dir, tmp_path):
    single = run_in_process(tiny_suite_dir, tmp_path / "single", "callbacks=no_checkpoints")
    out = tmp_path / "ddp"
    proc = train_cli(*base_overrides(tiny_suite_dir, tmp_path), "trainer=ddp", f"hydra.run.dir={out}", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("transfer (accuracy after - before):") == 1  # one summary, from rank 0

    ddp = json.loads((out / RESULTS_FILE).read_text())
    assert ddp["config"]["trainer"]["devices"] == 2 and ddp["steps"] == single.steps
    # The global batch is split over the processes and DDP averages their gradients: the same updates up to the
    # order of floating-point sums. Adam rescales the near-zero gradients of words the task never uses to full-size
    # steps, so that rounding shows on the other tasks; the trained task matches closely.
    for task in TASKS:
        for key in ("accuracy", "margin"):
            assert ddp["eval_before"][task][key] == single.eval_before[task][key]
    assert ddp["transfer"]["sva"]["margin"] == pytest.approx(single.transfer["sva"]["margin"], abs=1e-4)
    assert ddp["transfer"]["sva"]["accuracy"] == single.transfer["sva"]["accuracy"]
    for task in TASKS:
        assert ddp["transfer"][task]["margin"] == pytest.approx(single.transfer[task]["margin"], abs=0.1)
        assert ddp["transfer"][task]["accuracy"] == pytest.approx(single.transfer[task]["accuracy"], abs=0.2)
    assert ddp["heldout_lm_loss"]["delta"] == pytest.approx(single.heldout_lm_loss["delta"], abs=0.01)
    (run_dir,) = (out / "wandb").glob("offline-run-*")  # only rank 0 opened a W&B run
    assert "transfer/sva" in wandb_summary(run_dir)["keys"]


def test_a_logger_config_with_a_target_adds_that_tracker(tiny_suite_dir, tmp_path):
    """`logger=csv` is a Lightning CSVLogger from its `_target_`: the same metrics W&B gets, in csv/metrics.csv."""
    import csv

    out = tmp_path / "csv-run"
    results = run(compose_run(tiny_suite_dir, out, "logger=csv", "callbacks=no_checkpoints"))
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    logged = {key: float(value) for row in rows for key, value in row.items() if value not in ("", None)}
    assert logged["transfer/sva"] == pytest.approx(results.transfer["sva"]["accuracy"])
    assert logged["heldout/lm_loss_delta"] == pytest.approx(results.heldout_lm_loss["delta"])
    assert sum(1 for row in rows if row.get("train/loss")) == 6
