"""tools/study.sh, README's study, with a stand-in Python that records each command: every
command it would run parses (configs, extractor names, sweeps), in the documented order."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from detkit.engine.cli import resolve_config
from detkit.engine.compare import parse_sweep
from detkit.models import check_extractor_names

REPO = Path(__file__).resolve().parents[2]

STAND_IN = """import json, pathlib, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
def value(flag):
    return args[args.index(flag) + 1] if flag in args else None
if value("--run_dir"):  # what train.py leaves
    best = pathlib.Path(value("--run_dir")) / "checkpoints" / "best.ckpt"
    best.parent.mkdir(parents=True, exist_ok=True)
    best.write_bytes(b"")
"""


def run_study(tmp_path, *questions, check=True, env=None):
    """study.sh in a copy of the repository's tools/ and configs/ (its runs/ stay empty);
    returns the commands it ran, or with ``check=False`` the finished process too."""
    for folder in ("tools", "configs"):
        if not (tmp_path / folder).exists():
            shutil.copytree(REPO / folder, tmp_path / folder)
    log = tmp_path / "commands.jsonl"
    log.unlink(missing_ok=True)
    stand_in = tmp_path / "python"
    stand_in.write_text(f"#!{sys.executable}\n" + STAND_IN.format(log=str(log)))
    stand_in.chmod(0o755)
    done = subprocess.run(["bash", "tools/study.sh", *questions], cwd=tmp_path, check=check,
                          env={**os.environ, "PYTHON": str(stand_in), **(env or {})},
                          capture_output=True,
                          text=True)
    commands = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return commands if check else (commands, done)


def option(args, flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_every_study_command_parses(tmp_path, monkeypatch):
    commands = run_study(tmp_path)
    tools = [Path(c[0]).name for c in commands]
    assert tools == ["train.py"] + ["compare.py"] * 15  # the shared detector, 5 calls x 3 seeds
    compares = commands[1:]
    outs = [option(c, "--out")[0] for c in compares]
    # seed by seed: every question gets seed 0 (--seeds 1), then seed 1, then seed 2
    assert outs == ["runs/study/extractors", "runs/study/resolution", "runs/study/deformation",
                    "runs/study/deformation", "runs/study/scale"] * 3
    assert [int(option(c, "--seeds")[0]) for c in compares] == [1] * 5 + [2] * 5 + [3] * 5
    # question a: the same runs against each plain counterpart, each baseline named (compare
    # then names its report, numbers and effect plot after it)
    baselines = [option(c, "--baseline") for c in compares]
    assert baselines == [[], [], ["psroi_align"], ["roi_align"], []] * 3
    monkeypatch.chdir(tmp_path)  # the configs are read where the script ran
    donor = resolve_config(commands[0][1:])
    assert donor["data"]["synthetic"]["deformation"] == "strong"
    assert donor["trainer"]["max_steps"] == 3000
    for command in commands:
        if Path(command[0]).name != "compare.py":
            continue
        configs = option(command, "--config")
        assert configs == ["configs/quickstart.yaml", "configs/study.yaml"]
        check_extractor_names(option(command, "--extractors")[0].split(","))
        sweep = option(command, "--vary")
        if sweep:
            parse_sweep(sweep[0])
        layered = resolve_config([a for c in configs for a in ("--config", c)])
        assert list(layered["model"]["init"]["freeze"]) == ["backbone", "fpn", "rpn"]
        assert layered["model"]["init"]["checkpoint"] == "runs/study/donor/checkpoints/best.ckpt"
        # runs another question trained with the same settings are reused, not trained again;
        # and the runs of one condition share their frozen front
        assert option(command, "--reuse-runs") == ["runs/study"]
        assert layered["model"]["init"]["frozen_cache"] == "runs/study/frozen_front"


def test_the_donors_check_runs_when_asked_and_a_misspelt_question_runs_nothing(tmp_path):
    commands = run_study(tmp_path, "donors")
    assert [Path(c[0]).name for c in commands] == ["train.py", "train.py"] + ["compare.py"] * 3
    assert option(commands[1], "--run_dir") == ["runs/study/donor_roi_pool"]
    assert option(commands[1], "--model.roi_extractor") == ["roi_pool"]
    assert {option(c, "--out")[0] for c in commands[2:]} == {"runs/study/donors"}
    commands, done = run_study(tmp_path, "d", "e", check=False)
    assert done.returncode == 2 and "unknown question e" in done.stderr and not commands
    for seeds in ("0", "two"):
        commands, done = run_study(tmp_path, "d", check=False, env={"SEEDS": seeds})
        assert done.returncode == 2 and "SEEDS must be a positive integer" in done.stderr
        assert not commands
