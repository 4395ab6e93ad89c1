"""Mixed precision: the FTGD training step under each `trainer.precision`, on this machine's device.

    python benchmarks/check_precision.py
    python benchmarks/check_precision.py --model-dir <model dir> --pairs-dir <folder of BLiMP-format jsonl files>

Precision is a Lightning Trainer setting (`trainer.precision`: 32-true | bf16-mixed | 16-mixed), so the module's
code is the same for all of them: Lightning wraps `training_step` in `torch.autocast` for the device. This script
runs `FTGDModule` (objective `bounded`) on synth-1m pairs for a few steps per precision and checks, from hooks
inside the model, that
- autocast is on exactly for the mixed precisions, with the expected compute dtype in the linear layers;
- the parameters (and so the optimizer's master weights) stay float32 and change;
- the log-probabilities the objective sums are float32 (`token_logprobs` upcasts the logits), the loss finite.
On a CPU `16-mixed` is run as `bf16-mixed` by Lightning (no fp16 autocast on CPU): same code path, bf16 dtype.
It prints one PASS/FAIL line per precision and the step time relative to 32-true (no goal: CPU bf16 is
emulated on many CPUs and may be slower; the speed-up is a GPU matter).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader

from gradspace.data.suite import read_pairs_dir
from gradspace.ftgd import objectives
from gradspace.ftgd.masks import MaskConfig
from gradspace.ftgd.module import FTGDModule
from gradspace.ftgd.objectives import collate_pairs
from gradspace.models.loading import default_cache_dir, load_model
from harness import pin_threads, print_header

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class Probe(L.Callback):
    """Records, during training steps, autocast state and dtypes seen inside the model, and step times."""

    def __init__(self) -> None:
        self.linear_dtypes: set[torch.dtype] = set()
        self.autocast: set[bool] = set()
        self.logprob_dtypes: set[torch.dtype] = set()
        self.step_seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args, **kwargs) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.step_seconds.append(time.perf_counter() - self._start)

    def linear_hook(self, module, inputs, output) -> None:
        self.linear_dtypes.add(output.dtype)
        self.autocast.add(torch.is_autocast_enabled(output.device.type))


def run(precision: str, model_dir: str, batches: list, accelerator: str, steps: int) -> tuple[Probe, bool, bool, float]:
    loaded = load_model({"name": "bench", "source": "local", "path": model_dir}, progress=False)
    probe = Probe()
    for module in loaded.model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(probe.linear_hook)
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    original = objectives.token_logprobs

    def recording_token_logprobs(model, batch):
        out = original(model, batch)
        probe.logprob_dtypes.add(out.dtype)
        return out

    objectives.token_logprobs = recording_token_logprobs  # observe the objective's own call, change nothing
    try:
        no_mask = MaskConfig(kind="none", density=1.0, scope="global", schedule="fixed", calibration_batches=1, recompute_every=1)
        module = FTGDModule(loaded.model, "bounded", lambda params: torch.optim.AdamW(params, lr=1e-3), no_mask)
        trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps, max_epochs=-1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[probe])
        trainer.fit(module, DataLoader(batches, batch_size=None))
        loss = trainer.callback_metrics.get("train/loss")
    finally:
        objectives.token_logprobs = original
    params = dict(loaded.model.named_parameters())
    float32 = all(p.dtype == torch.float32 for p in params.values())
    changed = any(not torch.equal(before[name], p.detach().cpu()) for name, p in params.items())
    finite = loss is not None and bool(torch.isfinite(loss))
    return probe, float32 and changed, finite, statistics.median(probe.step_seconds[1:] or probe.step_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--pairs-per-step", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-dir", default=None,
                        help="a local model directory and, with --pairs-dir, its BLiMP-format pairs instead of synth-1m")
    parser.add_argument("--pairs-dir", default=None, help="a folder of BLiMP-format jsonl files (with --model-dir)")
    args = parser.parse_args()
    if (args.model_dir is None) != (args.pairs_dir is None):
        parser.error("--model-dir and --pairs-dir go together")

    pin_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is not supported on CPU.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    print_header("precision: FTGD steps under 32-true, bf16-mixed, 16-mixed")
    if args.model_dir:
        model_dir, pairs = args.model_dir, read_pairs_dir(args.pairs_dir)
    else:
        from gradspace.synth.pretrain import PretrainConfig, ensure_synth_model
        from gradspace.synth.world import WorldConfig, load_or_build_world

        cache = default_cache_dir()
        model_dir = str(ensure_synth_model("synth-1m", WorldConfig(), PretrainConfig(), cache) / "main")
        pairs = load_or_build_world(WorldConfig(), cache).pairs
    tokenizer = load_model({"name": "bench", "source": "local", "path": model_dir}, progress=False).tokenizer
    batches = [collate_pairs(tokenizer, pairs[i * args.pairs_per_step : (i + 1) * args.pairs_per_step], "bounded")
               for i in range(args.steps)]
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    device_type = "cuda" if accelerator == "gpu" else "cpu"
    expected = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16,
                "16-mixed": torch.float16 if device_type == "cuda" else torch.bfloat16}
    baseline = None
    all_passed = True
    for precision in PRECISIONS:
        probe, weights_ok, finite, seconds = run(precision, model_dir, batches, accelerator, args.steps)
        mixed = precision != "32-true"
        checks = {
            f"autocast {'on' if mixed else 'off'}": probe.autocast == {mixed},
            f"linear outputs {expected[precision]}": probe.linear_dtypes == {expected[precision]},
            "log-probs float32": probe.logprob_dtypes == {torch.float32},
            "weights float32 and updated": weights_ok,
            "loss finite": finite,
        }
        passed = all(checks.values())
        all_passed &= passed
        baseline = baseline or seconds
        failed = [name for name, ok in checks.items() if not ok]
        print(f"{precision:>10} on {device_type}: {'PASS' if passed else 'FAIL ' + ', '.join(failed)} "
              f"({'; '.join(checks)}); step {1e3 * seconds:.1f} ms = {seconds / baseline:.2f}x 32-true")
    print(f"summary: same code path under every precision {'PASS' if all_passed else 'FAIL'}")


if __name__ == "__main__":
    main()
