import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from detkit.engine.runs import (
    CHECKPOINT,
    RunFolderError,
    changed_settings,
    key_hash,
    new_version,
    plan_run,
    read_key,
    run_key,
    run_lock,
    write_key,
)

CONFIG = {"model": {"roi_extractor": "roi_align", "rpn": {"anchor_sizes": (16, 32)}},
          "trainer": {"max_steps": 4, "logger": {"init_args": {"save_dir": "runs"}},
                      "enable_progress_bar": False},
          "run_dir": "runs/x/v0", "ckpt_path": None, "checkpoint_every_n_steps": 100}


def test_run_key_leaves_out_paths_and_display_and_names_changes():
    key = run_key(CONFIG)
    assert key == {"model.roi_extractor": "roi_align", "model.rpn.anchor_sizes": [16, 32],
                   "trainer.max_steps": 4}
    moved = {**CONFIG, "run_dir": "elsewhere", "checkpoint_every_n_steps": 5}
    assert run_key(moved) == key and key_hash(run_key(moved)) == key_hash(key)
    longer = run_key({**CONFIG, "trainer": {**CONFIG["trainer"], "max_steps": 6}})
    assert key_hash(longer) != key_hash(key)
    assert changed_settings(key, longer) == ["trainer.max_steps: 4 -> 6"]
    assert changed_settings(key, {**key, "data.hflip": 0.0}) == ["data.hflip: <unset> -> 0.0"]


def test_run_key_holds_the_content_of_a_local_weights_file(tmp_path):
    """Other weights saved at the same path make another run (not a stale reuse); named
    weights ("imagenet") and no weights add nothing."""
    path = tmp_path / "backbone.pth"
    path.write_bytes(b"first")
    config = {**CONFIG, "model": {**CONFIG["model"], "backbone_weights": str(path)}}
    first = run_key(config)
    assert first["model.backbone_weights_sha256"] == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second")
    second = run_key(config)
    assert changed_settings(first, second) == [
        f"model.backbone_weights_sha256: \"{first['model.backbone_weights_sha256']}\" -> "
        f"\"{second['model.backbone_weights_sha256']}\""]
    named = run_key({**CONFIG, "model": {**CONFIG["model"], "backbone_weights": "imagenet"}})
    assert "model.backbone_weights_sha256" not in named
    assert "model.backbone_weights_sha256" not in run_key(CONFIG)


def finished_run(directory, key):
    (directory / CHECKPOINT).parent.mkdir(parents=True)
    (directory / CHECKPOINT).write_bytes(b"")
    write_key(directory, key)


def test_plan_run_versions_resume_and_refusals(tmp_path):
    parent, key = tmp_path / "quickstart" / "roi_align", run_key(CONFIG)
    first = plan_run(parent, key, run_dir=None, ckpt_path=None)
    assert first.directory == parent / "v0" and first.resume_from is None
    # a folder left empty by a failed start is reused, not skipped
    assert plan_run(parent, key, run_dir=None, ckpt_path=None).directory == parent / "v0"
    finished_run(parent / "v0", key)
    assert plan_run(parent, key, run_dir=None, ckpt_path=None).directory == parent / "v1"
    # --ckpt_path last: the latest version; v1 has no checkpoint yet
    with pytest.raises(RunFolderError, match="v1 has no checkpoints/last.ckpt"):
        plan_run(parent, key, run_dir=None, ckpt_path="last")
    resumed = plan_run(parent, key, run_dir=str(parent / "v0"), ckpt_path=None)
    assert resumed.resume_from == str(parent / "v0" / CHECKPOINT) and resumed.changes == []
    longer = {**key, "trainer.max_steps": 6}  # training longer continues the run
    assert plan_run(parent, longer, run_dir=str(parent / "v0"),
                    ckpt_path="last").changes == ["trainer.max_steps: 4 -> 6"]
    other = {**key, "model.roi_extractor": "roi_pool"}
    with pytest.raises(RunFolderError, match=r"model.roi_extractor: \"roi_align\" -> \"roi_pool\""):
        plan_run(parent, other, run_dir=str(parent / "v0"), ckpt_path=None)
    (parent / "v1" / "events.out.tfevents.1").write_text("")
    with pytest.raises(RunFolderError, match="holds files but no checkpoints/last.ckpt"):
        plan_run(parent, key, run_dir=str(parent / "v1"), ckpt_path=None)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        plan_run(parent, key, run_dir=None, ckpt_path=str(tmp_path / "missing.ckpt"))


def test_run_lock_refuses_a_live_writer_and_takes_over_a_dead_ones(tmp_path):
    with run_lock(tmp_path):
        holder = (tmp_path / ".lock").read_text()
        assert holder.startswith(f"{os.getpid()}@")
        with pytest.raises(RunFolderError, match=f"being written by process {holder}"):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / ".lock").write_text(f"{dead}@{holder.split('@')[1]}")  # e.g. after kill -9
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == holder.replace(holder.split("@")[0],
                                                                  str(os.getpid()))


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    from detkit.engine.checkpointing import save_atomically

    class FakeTrainer:
        is_global_zero = True

        class strategy:  # noqa: N801
            @staticmethod
            def barrier(name):
                pass

        @staticmethod
        def save_checkpoint(path):
            torch.save({"global_step": 3}, path)
            raise KeyboardInterrupt  # killed after the temporary file was written

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        save_atomically(FakeTrainer(), target)
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["last.ckpt"]


def test_runs_started_together_get_their_own_versions(tmp_path):
    """Found on a GPU machine: three trainings started at once, one chose the empty v0 that
    another had just created and failed on its lock. Each start now claims its folder at once."""
    parent = tmp_path / "runs" / "roi_align"
    script = ("import sys, time; from pathlib import Path; from detkit.engine.runs import "
              "new_version; print(new_version(Path(sys.argv[1])).name, flush=True); time.sleep(2)")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(parent)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    names = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert names == ["v0", "v1", "v2", "v3"]
    # a start that died before writing anything leaves an empty, claimed v3: it is reused
    assert new_version(parent) == parent / "v3"
    with run_lock(parent / "v3"):  # the claim becomes the run's lock
        assert (parent / "v3" / ".lock").read_text() == f"{os.getpid()}@{socket.gethostname()}"
        assert new_version(parent) == parent / "v4"  # a live run's folder is not reused


def test_a_stale_lock_found_by_several_processes_goes_to_one(tmp_path):
    """Three processes find the same dead holder's lock. Checking the holder is made slow, so
    without the folder lock all three would break the stale lock (each deleting the lock the
    previous one had just made) and all three would write the run; exactly one may."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / ".lock").write_text(f"{dead}@{socket.gethostname()}")
    script = (
        "import sys, time; from pathlib import Path; import detkit.engine.runs as runs\n"
        "alive = runs.process_alive\n"
        "runs.process_alive = lambda holder: time.sleep(0.5) or alive(holder)\n"
        "try:\n"
        "    with runs.run_lock(Path(sys.argv[1])):\n"
        "        print('took', flush=True); time.sleep(2)\n"
        "except runs.RunFolderError:\n"
        "    print('refused', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["refused", "refused", "took"]
    assert not (tmp_path / ".lock").exists()  # released by the one that took it


def test_settings_written_two_ways_give_one_key(tmp_path):
    """An unset synthetic factor is its preset's setting; an extractor argument left out is the
    extractor's default; keys stored before this read the same way."""
    def config(deformation, args):
        return {"data": {"format": "synthetic",
                         "synthetic": {"preset": "default", "deformation": deformation}},
                "model": {"roi_extractor": "roi_align", "roi_extractor_args": args}}

    unset = run_key(config(None, {}))
    assert unset == run_key(config("none", {"output_size": 7}))
    assert unset["model.roi_extractor_args.featmap_names"] == ["p2", "p3", "p4", "p5"]
    assert unset != run_key(config("mild", {}))
    assert unset != run_key(config(None, {"output_size": 4}))
    hard = run_key({**config(None, {}), "data": {"synthetic": {"preset": "hard",
                                                               "deformation": None}}})
    assert hard["data.synthetic.deformation"] == "strong"
    stored = {"data.format": "synthetic", "data.synthetic.preset": "default",
              "data.synthetic.deformation": None, "model.roi_extractor": "roi_align",
              "model.roi_extractor_args": {}}
    (tmp_path / "run.json").write_text(json.dumps({"hash": "old", "key": stored}))
    assert read_key(tmp_path) == run_key(config(None, {}))
