"""A training process killed with SIGKILL resumes exactly: same steps, same losses, each step
logged once (read back from TensorBoard's event files)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detkit.engine.cli import train
from detkit.engine.module import DetectionModule
from tests.engine.helpers import FAST_MODEL, FAST_TRAINER, coco_args

REPO = Path(__file__).resolve().parents[2]


# The training subprocess: once 5 optimizer steps are done (after the step-4 checkpoint), it
# writes the marker file and hangs, so the test kills it at a known point. Patched in code, not
# given as a --trainer.callbacks setting: settings are part of the run key a resume must match.
STALLING_TRAIN = """
import pathlib, sys, time
from detkit.engine.cli import train
from detkit.engine.module import DetectionModule
from detkit.engine.module import DetectionModule

def stall(self, outputs, batch, batch_idx):
    if self.global_step == 5:
        self.logger.experiment.flush()
        pathlib.Path(sys.argv[1]).write_text("stalled")
        time.sleep(600)

DetectionModule.on_train_batch_end = stall
train(sys.argv[2:])
"""


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_sigkilled_run_resumes_with_the_same_steps_and_losses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # no augmentation: its draws come from albumentations' own stream, which is not replayed
    args = [*coco_args(tmp_path / "coco"), *FAST_MODEL, *FAST_TRAINER,
            "--data.hflip", "0", "--data.scale_jitter", "[1, 1]",
            "--trainer.max_steps", "6", "--trainer.val_check_interval", "3",
            "--trainer.check_val_every_n_epoch", "null", "--checkpoint_every_n_steps", "4"]
    reference = Path(train([*args, "--run_dir", "reference"])["run_dir"])

    marker = tmp_path / "stalled"
    process = subprocess.Popen(
        [sys.executable, "-c", STALLING_TRAIN, str(marker), *args, "--run_dir", "killed"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the training subprocess never reached step 5"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed = tmp_path / "killed"
    assert (killed / ".lock").exists()  # left behind by the killed process: stale

    steps_run = []
    original = DetectionModule.on_train_start

    def recording(self):
        steps_run.append(self.global_step)
        return original(self)

    monkeypatch.setattr(DetectionModule, "on_train_start", recording)
    resumed = train([*args, "--run_dir", "killed"])  # resumes from the step-4 last.ckpt
    assert steps_run == [4]
    assert Path(resumed["run_dir"]) == Path("killed") and not (killed / ".lock").exists()

    expected, got = scalars(reference), scalars(killed)
    for tag in ("train/loss", "train/loss_classifier", "val/AP", "val/AR100"):
        steps = [step for step, _ in got[tag]]
        assert steps == sorted(set(steps)), f"{tag} logged twice for a step: {steps}"
        assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], tag
        for (step, value), (_, reference_value) in zip(got[tag], expected[tag], strict=True):
            assert abs(value - reference_value) <= 1e-5 * max(1.0, abs(reference_value)), \
                (tag, step, value, reference_value)
    assert [s for s, _ in got["train/loss"]] == [0, 1, 2, 3, 4, 5]
    assert [s for s, _ in got["val/AP"]] == [2, 5]
