"""Run folders: one folder per training run, keyed by its resolved config, written by one process.

Layout (``ROOT`` and ``NAME`` are the logger's ``save_dir`` and ``name``, e.g. ``runs`` and
``quickstart``)::

    ROOT/NAME/EXTRACTOR/v0/    config.yaml, hparams.yaml, run.json, events.out.tfevents.*,
                               checkpoints/{best,last}.ckpt
    ROOT/NAME/EXTRACTOR/v1/    the next run of that config name and extractor

``run.json`` holds the run's *key*: the resolved config without the settings that cannot change
its results (:data:`NOT_RESULT_KEYS`: paths, logging, progress display, checkpoint interval),
flattened to dotted keys, and a short hash of it. Resuming or reusing a run compares keys and
names every setting that differs. ``.lock`` holds the pid of the process writing the folder.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detkit._validation import weights_file
from detkit.data.synthetic import FACTORS, PRESETS
from detkit.models import EXTRACTORS

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
_STARTING = "starting"  # a claim: the folder's run lock is about to be taken

# Settings that change where or how a run is recorded, never what it computes (a frozen front
# read back from model.init.frozen_cache is bit-identical to the one it replaces).
NOT_RESULT_KEYS = (
    "config", "ckpt_path", "run_dir", "checkpoint_every_n_steps", "trainer.logger",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.default_root_dir", "model.init.frozen_cache",
)
# Settings that name a local weights file: the key holds the file's content, as SETTING_sha256,
# so other weights saved at the same path make another run.
WEIGHTS_SETTINGS = ("model.backbone_weights", "model.init.checkpoint")
# Settings added after runs were keyed without them: at these values they stay out of the key,
# so those runs keep their keys (and are reused) while a run that sets them differs.
LATER_SETTINGS = {"model.init.checkpoint": None, "model.init.parts": ["backbone", "fpn", "rpn"],
                  "model.init.freeze": []}
# Settings a resumed run may change: training longer continues the same run.
RESUMABLE_CHANGES = ("trainer.max_steps",)


class RunFolderError(ValueError):
    """A run folder cannot be used as asked: its config differs, or another process writes it."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; values JSON-normalised (tuples to lists, other
    objects to ``str``) so keys from a fresh parse and from ``run.json`` compare equal."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def setting_in(name: str, settings: Sequence[str]) -> bool:
    """Whether the dotted setting ``name`` is one of ``settings`` or inside one of them
    (``model.rpn.nms_thresh`` is in ``model.rpn``)."""
    return any(name == s or name.startswith(s + ".") for s in settings)


def run_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide a run's results (see :data:`NOT_RESULT_KEYS`), flattened and in
    :func:`canonical_key` form. A setting of :data:`WEIGHTS_SETTINGS` that names a local file
    adds its content's SHA-256 as ``SETTING_sha256``: a run started from other weights at the
    same path is another run."""
    key = {k: v for k, v in flatten(config).items()
           if not setting_in(k, NOT_RESULT_KEYS) and LATER_SETTINGS.get(k, ...) != v}
    for setting in WEIGHTS_SETTINGS:
        weights = key.get(setting)
        path = weights_file(weights) if isinstance(weights, str) else None
        if path is not None:
            key[setting + "_sha256"] = file_sha256(path)
    return canonical_key(key)


EXTRACTOR_ARGS = "model.roi_extractor_args"
SYNTHETIC = "data.synthetic"


def canonical_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """One spelling for settings that are written two ways but train the same run, so that a run
    is found whichever way a study asked for it (``--vary data.synthetic.deformation=none`` and
    the preset's own ``none`` left unset; ``output_size=7`` and the extractor's default 7):

    - a synthetic set's factor left unset (None) takes its preset's setting
      (:meth:`~detkit.data.SyntheticFactors.settings`);
    - ``model.roi_extractor_args`` gets the extractor's own defaults for the arguments it
      leaves out (its constructor's signature), one flattened key each.

    Keys stored by earlier versions read in this form too (:func:`read_key`), with today's
    presets and defaults: a run keyed before a default changed would match the new default."""
    key = dict(key)
    preset = PRESETS.get(str(key.get(f"{SYNTHETIC}.preset")))
    if preset is not None:
        for name in FACTORS:
            if f"{SYNTHETIC}.{name}" in key and key[f"{SYNTHETIC}.{name}"] is None:
                key[f"{SYNTHETIC}.{name}"] = preset["factors"][name]
    extractor = EXTRACTORS.get(str(key.get("model.roi_extractor")))
    if extractor is not None and (key.get(EXTRACTOR_ARGS, ...) in ({}, None) or any(
            k.startswith(EXTRACTOR_ARGS + ".") for k in key)):
        key.pop(EXTRACTOR_ARGS, None)
        defaults = {name: p.default for name, p in inspect.signature(extractor).parameters.items()
                    if name != "in_channels" and p.default is not inspect.Parameter.empty}
        for name, value in flatten(defaults, EXTRACTOR_ARGS + ".").items():
            key.setdefault(name, value)
    return dict(sorted(key.items()))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"name: old -> new"`` for every setting that differs (missing shown as ``<unset>``)."""
    def show(key: str, side: Mapping[str, Any]) -> str:
        return json.dumps(side[key]) if key in side else "<unset>"

    return [f"{k}: {show(k, old)} -> {show(k, new)}" for k in sorted(set(old) | set(new))
            if old.get(k, ...) != new.get(k, ...)]


def read_key(directory: Path) -> dict[str, Any] | None:
    """The key stored in ``directory/run.json`` (in :func:`canonical_key` form), or None when
    there is none."""
    path = directory / RUN_FILE
    return canonical_key(json.loads(path.read_text())["key"]) if path.exists() else None


def write_key(directory: Path, key: Mapping[str, Any]) -> None:
    path = directory / RUN_FILE
    tmp = path.with_name(f".{RUN_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"hash": key_hash(key), "key": key}, indent=1))
    os.replace(tmp, path)


def check_same_config(directory: Path, key: Mapping[str, Any], *, resuming: bool) -> list[str]:
    """Raise :class:`RunFolderError` naming the settings by which ``key`` differs from the run in
    ``directory``; when ``resuming``, changes in :data:`RESUMABLE_CHANGES` are allowed and
    returned (the caller says so)."""
    old = read_key(directory)
    if old is None:
        return []
    changes = changed_settings(old, key)
    allowed = [c for c in changes if resuming and c.split(":")[0] in RESUMABLE_CHANGES]
    refused = [c for c in changes if c not in allowed]
    if refused:
        raise RunFolderError(
            f"{directory} holds a run with a different config ({'; '.join(refused)}); resume it "
            "with its own settings, or start a new run (leave out --run_dir / --ckpt_path)")
    return allowed


_VERSION = re.compile(r"v(\d+)")


def versions(parent: Path) -> list[Path]:
    """``parent/v0``, ``parent/v1``, ... that exist, in version order."""
    if not parent.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in parent.iterdir()
             if p.is_dir() and (m := _VERSION.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def new_version(parent: Path) -> Path:
    """Create, claim and return ``parent/vN``, N one above the highest existing (``mkdir``
    without ``exist_ok`` is atomic). The highest version is reused while it is still empty (a
    start that failed before writing anything). A claim (:func:`_claim`) marks the folder as
    this process's from here until :func:`run_lock` takes it over, so processes started
    together get different versions."""
    existing = versions(parent)
    if existing and not has_content(existing[-1]) and _claim(existing[-1]):
        return existing[-1]
    number = int(existing[-1].name[1:]) + 1 if existing else 0
    while True:
        candidate = parent / f"v{number}"
        number += 1
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        if _claim(candidate):  # else another process reused it between mkdir and claim
            return candidate


def has_content(directory: Path) -> bool:
    """Whether ``directory`` holds anything but its lock file."""
    return directory.is_dir() and any(p.name != LOCK_FILE for p in directory.iterdir())


def clear(directory: Path) -> None:
    """Remove everything in ``directory`` but its lock (the caller holds it)."""
    for path in directory.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _me() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _take(path: Path, text: str, *, take_over: str) -> str | None:
    """Create the lock file ``path`` holding ``text``, taking over a stale one (its process is
    gone) and one that holds ``take_over``; returns None when taken, else the live holder.

    Processes of this host take locks in one folder one at a time (an exclusive ``flock`` on
    the folder): without it, two that found the same stale lock could both break it, the second
    deleting the lock the first had just made, and both would write the run."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        if fcntl is not None:  # POSIX; elsewhere the window stays open
            fcntl.flock(folder, fcntl.LOCK_EX)  # released when the descriptor closes
        return _take_locked(path, text, take_over)
    finally:
        os.close(folder)


def _take_locked(path: Path, text: str, take_over: str) -> str | None:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = path.read_text().strip()
            if holder == take_over:
                path.write_text(text)
                return None
            if process_alive(holder):
                return holder
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as file:
            file.write(text)
        return None
    return path.read_text().strip() if path.exists() else "unknown"


def _claim(directory: Path) -> bool:
    """Mark a new run folder as this process's (``.lock`` holding ``pid@host starting``) until
    :func:`run_lock` takes it; False when a live process holds or claims it."""
    mine = f"{_me()} {_STARTING}"
    return _take(directory / LOCK_FILE, mine, take_over=mine) is None


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` (``pid@host``) while the block runs. A lock whose process is gone
    (same host, pid not alive, e.g. after ``kill -9``) is stale and taken over, as is this
    process's own claim (:func:`new_version`); a live one raises :class:`RunFolderError` naming
    the process."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    mine = _me()
    holder = _take(path, mine, take_over=f"{mine} {_STARTING}")
    if holder is not None:
        raise RunFolderError(
            f"{directory} is being written by process {holder.split()[0]} (lock file {path}); "
            "wait for it, or delete the lock file if that process is gone")
    try:
        yield
    finally:
        if path.exists() and path.read_text().strip() == mine:
            path.unlink()


def process_alive(holder: str) -> bool:
    """Whether the ``pid@host`` process may still run (another host: assume it does)."""
    pid, _, host = holder.split()[0].partition("@") if holder else ("", "", "")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass
class RunPlan:
    """Where a training run writes, and what it resumes.

    Attributes:
        directory: the run folder.
        resume_from: the checkpoint ``trainer.fit`` starts from (None: from scratch).
        changes: settings that differ from the resumed run's (only :data:`RESUMABLE_CHANGES`).
    """

    directory: Path
    resume_from: str | None = None
    changes: list[str] = field(default_factory=list)


def plan_run(parent: Path, key: Mapping[str, Any], *, run_dir: str | None,
             ckpt_path: str | None) -> RunPlan:
    """Pick the run folder (see the module docstring).

    - ``run_dir`` given: resume it from its ``checkpoints/last.ckpt``, or start there when it is
      empty or missing;
    - ``ckpt_path="last"``: resume the latest version under ``parent``;
    - otherwise a new version under ``parent`` (starting from ``ckpt_path`` if it is a file).

    Raises:
        RunFolderError: the folder holds a run with other settings, or nothing to resume.
        FileNotFoundError: ``ckpt_path`` names a missing file.
    """
    if run_dir is not None:
        directory = Path(run_dir)
        if ckpt_path not in (None, "last"):
            raise RunFolderError("give --run_dir (resumes its last.ckpt) or --ckpt_path FILE "
                                 "(starts a new run from that checkpoint), not both")
        if (directory / CHECKPOINT).exists():
            changes = check_same_config(directory, key, resuming=True)
            return RunPlan(directory, str(directory / CHECKPOINT), changes)
        if ckpt_path == "last":
            raise RunFolderError(f"--ckpt_path last: {directory} has no {CHECKPOINT} to resume")
        if has_content(directory):
            raise RunFolderError(f"{directory} holds files but no {CHECKPOINT} (a run stopped "
                                 "before its first checkpoint?); delete it or choose another "
                                 "--run_dir")
        return RunPlan(directory)
    if ckpt_path == "last":
        existing = versions(parent)
        if not existing:
            raise RunFolderError(f"--ckpt_path last: no run under {parent} to resume")
        directory = existing[-1]
        if not (directory / CHECKPOINT).exists():
            raise RunFolderError(f"--ckpt_path last: the latest run {directory} has no "
                                 f"{CHECKPOINT}; name another run with --run_dir")
        changes = check_same_config(directory, key, resuming=True)
        return RunPlan(directory, str(directory / CHECKPOINT), changes)
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    return RunPlan(new_version(parent), ckpt_path)
