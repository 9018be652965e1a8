"""The command-line tools: one-line errors, --debug, help that fits the tool, the install."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from detkit.engine.cli import evaluate, train, visualize
from detkit.engine.errors import ToolArgumentParser, UsageError, one_line, run_tool

REPO = Path(__file__).resolve().parents[2]


def fails_with(error):
    def main(argv):
        main.argv = argv
        raise error
    return main


def test_user_errors_are_one_line(capsys):
    message = "val.json: annotation #3 has bbox [1, 2], expected 4 finite numbers [x, y, w, h]"
    assert run_tool(fails_with(ValueError(message)), [], prog="eval.py") == 2
    err = capsys.readouterr().err
    assert err == f"eval.py: error: {message} (--debug shows the traceback)\n"
    assert run_tool(fails_with(FileNotFoundError(2, "No such file", "x.ckpt")), [], prog="t") == 2
    assert capsys.readouterr().err.splitlines() == [
        "t: error: [Errno 2] No such file: 'x.ckpt' (--debug shows the traceback)"]
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert run_tool(fails_with(oom), [], prog="t") == 2  # torch is loaded: a user error too
    assert capsys.readouterr().err.startswith("t: error: CUDA out of memory.")
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    no_gpu = MisconfigurationException("No supported gpu backend found!")
    assert run_tool(fails_with(no_gpu), [], prog="t") == 2  # --trainer.accelerator gpu, no GPU
    assert capsys.readouterr().err.startswith("t: error: No supported gpu backend found!")


def test_error_reporting_and_predict_help_load_no_torch():
    """Every tool reports errors through detkit.engine.errors; importing it (and predict's
    --help) must stay instant: no torch, no Lightning."""
    code = ("import sys, runpy; sys.argv = ['predict.py', '--help']\n"
            "try:\n    runpy.run_path('tools/predict.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert "--images" in out and out.strip().endswith("[]")


def test_a_dataloader_workers_traceback_is_cut_to_its_message():
    wrapped = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback "
                         "(most recent call last):\n  File \"x.py\", line 1, in f\n    g()\n"
                         "ValueError: a.json: image 3 has no 'file_name'\n")
    assert one_line(wrapped) == "a.json: image 3 has no 'file_name'"
    assert one_line(KeyError("key")) == "key"


def test_bugs_print_the_traceback_and_say_so(capsys):
    assert run_tool(fails_with(KeyError("boxes")), [], prog="eval.py") == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'boxes'" in err
    assert "eval.py: internal error (KeyError): this is a bug" in err.splitlines()[-1]


def test_debug_flag_and_environment_show_the_traceback(monkeypatch):
    main = fails_with(ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        run_tool(main, ["--a", "1", "--debug"])
    assert main.argv == ["--a", "1"]  # the tool's parser never sees --debug
    monkeypatch.setenv("DETKIT_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        run_tool(main, [])


def test_argparse_tools_refuse_in_one_line(capsys):
    parser = ToolArgumentParser(prog="bench.py")
    parser.add_argument("--size", type=int)
    with pytest.raises(UsageError, match=r"unrecognized arguments: --bogus \(see bench.py"):
        parser.parse_args(["--bogus"])
    assert vars(parser.parse_args(["--size", "3"])) == {"size": 3}  # --debug adds nothing

    def main(argv):
        parser.parse_args(argv)
    assert run_tool(main, ["--size", "x"], prog="bench.py") == 2
    assert capsys.readouterr().err == (
        "bench.py: error: argument --size: invalid int value: 'x' (see bench.py --help)\n")


def test_lightning_cli_errors_are_one_line(capsys):
    assert run_tool(train, ["--data.batch_size", "abc"], prog="train.py") == 2
    assert capsys.readouterr().err == ('train.py: error: Parser key "data.batch_size": Expected '
                                       "a <class 'int'>. Got value: abc\n")
    assert run_tool(train, ["--data.format", "coco"], prog="train.py") == 2
    assert capsys.readouterr().err.splitlines() == [
        "train.py: error: format='coco' needs train_images, train_ann, val_images, val_ann "
        "(missing) (--debug shows the traceback)"]
    # the checkpoint is read first: a wrong path fails before any data is read
    assert run_tool(evaluate, ["--ckpt", "c.ckpt", "--out", "o", "--data.format", "coco"],
                    prog="eval.py") == 2
    assert capsys.readouterr().err.splitlines() == [
        "eval.py: error: checkpoint c.ckpt does not exist (--debug shows the traceback)"]


def help_text(tool, capsys):
    with pytest.raises(SystemExit) as exit_:
        tool(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_eval_and_visualize_help_fit_the_tool(capsys):
    text = help_text(evaluate, capsys)
    lines = text.splitlines()
    assert lines[0].startswith("usage: ") and "--ckpt CKPT --out DIR" in lines[0]
    assert lines[2].startswith("Evaluate a checkpoint on a config's validation data")
    assert "--trainer.accelerator" in text and "--trainer.precision" in text
    for unused in ("--trainer.max_steps", "--trainer.devices", "--model.optimizer",
                   "--data.hflip", "--seed_everything"):
        assert unused not in text, unused
    options = text.split("\n\n", 2)[2]  # after the usage and the description
    assert options.index("--ckpt CKPT") < options.index("--model.backbone") < options.index(
        "--trainer.accelerator")  # its own options first, the Trainer's last
    # LightningCLI's full help is 576 lines; the synthetic set's factors take about 20
    assert len(lines) < 200
    text = help_text(visualize, capsys)
    assert "Draw a checkpoint's predictions" in text and "--num_images" in text
    assert "--trainer." not in text and "--debug" in text


def test_the_clone_seen_from_its_parent_does_not_shadow_an_editable_install(tmp_path):
    """A folder named detkit without __init__.py (the clone, from its parent folder) is a
    namespace package; with setuptools' default editable finder, which runs after the path
    search, it shadowed the installed package. pyproject's package-dir puts the clone on
    sys.path instead (a static .pth entry): the real package wins the path search."""
    clone = tmp_path / "parent" / "detkit"
    (clone / "detkit").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "detkit/__init__.py"):
        shutil.copy(REPO / name, clone / name)
    wheel = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta; "
         "print(build_meta.build_editable(sys.argv[1]))", str(tmp_path / "wheel")],
        cwd=clone, capture_output=True, text=True, check=True).stdout.split()[-1]
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the install's paths
    with zipfile.ZipFile(tmp_path / "wheel" / wheel) as archive:
        archive.extractall(site)
    # -S: not this interpreter's own site-packages (it may hold an install of this repository),
    # only the wheel's site folder
    found = subprocess.run(
        [sys.executable, "-S", "-c", f"import site; site.addsitedir({str(site)!r}); import detkit; "
         "print(getattr(detkit, '__file__', None))"],
        cwd=clone.parent, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
    assert found == str(clone / "detkit" / "__init__.py")
