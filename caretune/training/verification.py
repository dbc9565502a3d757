"""Reading a run manifest back: `caretune runs verify` (each difference between what was recorded and the files
now) and `caretune runs show`."""

from __future__ import annotations

import os
from pathlib import Path

from caretune.constants import DATASET_INFO
from caretune.packages import training_packages, training_versions
from caretune.training.audit import listing_changes, path_changes, untracked_code
from caretune.training.manifest import file_record, git_state, installed_version, sha256

SECTION_SINCE = {"adapters": 2, "paths": 3}  # the manifest format that first recorded a section


def current_registry(manifest: dict, resolve) -> dict:
    """The registry entries now, of the dataset folder the manifest's datasets were registered in ({} without one)."""
    from caretune.basics.registry import RegistryError, load_registry

    recipe = manifest.get("recipe") or {}
    dataset_dir = ((recipe.get("keys") or {}) if isinstance(recipe.get("keys"), dict) else {}).get("dataset_dir", "data")
    registry = resolve(str(Path(str(dataset_dir)) / DATASET_INFO), None)
    try:
        return load_registry(registry)
    except (RegistryError, OSError):
        return {}


class Unrecorded(Exception):
    """A manifest section that was never recorded, or is malformed: it cannot be verified."""


def as_entry(entry: object) -> dict:
    """A listed file's record: format 3 keeps a dict, earlier formats the SHA-256 alone."""
    return entry if isinstance(entry, dict) else {"sha256": entry}


class Verification:
    """One manifest checked against the files now: each section's check adds its problems; paths resolve from the
    manifest, never from the current folder."""

    def __init__(self, manifest: dict, output_dir: Path, deep: bool) -> None:
        self.manifest, self.output_dir, self.deep = manifest, output_dir, deep
        self.root = manifest.get("project_root")
        self.complete = manifest.get("manifest_format", 1) >= 3  # full listings: a file not recorded is new
        self.problems: list[str] = []

    def resolve(self, path: object, absolute: object) -> Path:
        if isinstance(absolute, str) and absolute:
            return Path(absolute)
        if isinstance(path, str) and path and (Path(path).is_absolute() or self.root):
            return Path(self.root or "/") / path
        raise Unrecorded(f"{path}: no absolute path or project root recorded")

    def compare(self, label: str, path: Path, recorded: object, current: str | None) -> None:
        if not isinstance(recorded, str):
            raise Unrecorded(f"{label}: no SHA-256 recorded")
        if current is None:
            self.problems.append(f"{label} {path}: missing now")
        elif current != recorded:
            self.problems.append(f"{label} {path}: changed (SHA-256 {recorded[:12]}… then, {current[:12]}… now)")

    def code(self) -> None:
        recorded = self.manifest["code"]
        if not recorded.get("commit"):
            raise Unrecorded("not a git checkout when the run started")
        now_state = git_state(Path(self.root)) if self.root else None
        if now_state is None:
            raise Unrecorded("no project root recorded")
        if now_state["commit"] != recorded["commit"]:
            self.problems.append(f"code: commit {recorded['commit'][:12]} then, {str(now_state['commit'])[:12]} now")
        if "diff_sha256" not in recorded:
            raise Unrecorded("no hash of the uncommitted changes recorded")
        if now_state["diff_sha256"] != recorded["diff_sha256"]:
            then = "uncommitted changes" if recorded["diff_sha256"] else "a clean tree"
            current = "other uncommitted changes" if now_state["diff_sha256"] else "a clean tree"
            self.problems.append(f"code: {then} then, {current} now")
        if isinstance(recorded.get("untracked"), dict):
            untracked = untracked_code(Path(self.root)) or {}
            for name in sorted(set(untracked) | set(recorded["untracked"])):
                if untracked.get(name, "gone") != recorded["untracked"].get(name, "absent"):
                    when = "new since" if name not in recorded["untracked"] else "changed or removed since"
                    self.problems.append(f"code: untracked file {name}: {when}")

    def config_file(self, label: str) -> None:
        recorded = self.manifest[label]
        if recorded is None and label == "deepspeed":
            return  # not used
        path = self.resolve(recorded["path"], recorded.get("abs_path"))
        self.compare(label, path, recorded["sha256"], file_record(path)["sha256"] if path.is_file() else None)

    def data(self) -> None:
        recorded = self.manifest["datasets"]
        if not isinstance(recorded, list) or not recorded:
            raise Unrecorded("expected a list of datasets")
        registry_now = current_registry(self.manifest, self.resolve)
        for dataset in recorded:
            path = self.resolve(dataset["file"], dataset.get("abs_file"))
            self.compare(f"dataset {dataset['name']}", path, dataset["sha256"], sha256(path))
            if dataset.get("target") and os.path.realpath(path) != dataset["target"]:
                self.problems.append(
                    f"dataset {dataset['name']} {path}: points at {os.path.realpath(path)} now, {dataset['target']} then"
                )
            if "entry" in dataset and dataset.get("entry") != registry_now.get(dataset["name"]):
                self.problems.append(f"dataset {dataset['name']}: its {DATASET_INFO} entry changed since")
            report = dataset.get("conversion")
            if report:
                report_path = self.resolve(report["path"], report.get("abs_path"))
                self.compare(f"conversion report of {dataset['name']}", report_path, report["sha256"], sha256(report_path))
        for number, attempt in enumerate(self.manifest.get("attempts") or [], start=1):
            for dataset in recorded:
                seen = (attempt.get("data_sha256") or {}).get(dataset["name"])
                if seen and seen != dataset["sha256"]:
                    self.problems.append(
                        f"dataset {dataset['name']}: attempt {number} trained on other data (SHA-256 {seen[:12]}…)"
                    )

    def model(self) -> None:
        recorded = self.manifest["base_model"]
        if not recorded.get("folder"):
            raise Unrecorded(f"{recorded.get('name')} was not on this machine when the run ended")
        files = recorded.get("listing") or {
            **{name: {"sha256": digest} for name, digest in recorded["files"].items()},
            **recorded["weights"],
        }
        if not files:
            raise Unrecorded("no files recorded")
        self.problems.extend(listing_changes("base model", Path(recorded["folder"]), files, self.deep, complete=self.complete))

    def started_from(self) -> None:
        for adapter in self.manifest["adapters"]:
            folder = self.resolve(adapter["path"], adapter.get("abs_path"))
            if not adapter["files"]:
                raise Unrecorded(f"{adapter['path']} held no adapter files when the run started")
            for name, digest in adapter["files"].items():
                self.compare("starting adapter", folder / name, digest, sha256(folder / name))
            recorded = adapter.get("trained_by")
            if recorded:
                manifest_path = Path(recorded["manifest"])
                self.compare("starting adapter's run manifest", manifest_path, recorded["sha256"], sha256(manifest_path))

    def outputs(self) -> None:
        recorded = {
            name: entry if isinstance(entry, dict) else {"sha256": entry} for name, entry in self.manifest["outputs"].items()
        }
        skip = tuple(folder.name for folder in self.output_dir.glob("checkpoint-*"))
        self.problems.extend(listing_changes("output", self.output_dir, recorded, self.deep, skip, complete=self.complete))

    def checkpoints(self) -> None:
        for checkpoint, files in self.manifest["checkpoints"].items():
            recorded = {name: as_entry(entry) for name, entry in files.items()}
            self.problems.extend(
                listing_changes("checkpoint", self.output_dir / checkpoint, recorded, self.deep, complete=self.complete)
            )
        for folder in sorted(self.output_dir.glob("checkpoint-*")):
            if folder.is_dir() and folder.name not in self.manifest["checkpoints"]:
                self.problems.append(f"checkpoint {folder}: present now, not recorded")

    def named_paths(self) -> None:
        for key, record in self.manifest["paths"].items():
            self.problems.extend(path_changes(f"recipe path {key}:", record, self.deep))

    def packages(self) -> None:
        now = training_versions()
        for package, recorded in self.manifest["packages"].items():
            current = now[package] if package in now else installed_version(package)
            if current != recorded:
                self.problems.append(f"package {package}: {recorded} then, {current} now")

    def run(self) -> tuple[list[str], list[str]]:
        """(problems, sections verified)."""
        verified: list[str] = []
        sections = {
            "code": self.code,
            "recipe": lambda: self.config_file("recipe"),
            "deepspeed": lambda: self.config_file("deepspeed"),
            "datasets": self.data,
            "base_model": self.model,
            "adapters": self.started_from,
            "outputs": self.outputs,
            "paths": self.named_paths,
            "checkpoints": self.checkpoints,
            "packages": self.packages,
        }
        for name, check in sections.items():
            label = name.replace("_", " ")
            if name not in self.manifest and self.manifest.get("manifest_format", 1) < SECTION_SINCE.get(name, 1):
                continue  # recorded from a later format on
            if name not in self.manifest or (self.manifest[name] is None and name != "deepspeed"):  # deepspeed None: not used
                self.problems.append(f"{label}: never recorded, so not verified")
                continue
            before = len(self.problems)
            try:
                check()
            except Unrecorded as why:
                self.problems.append(f"{label}: not verifiable ({why})")
            except (KeyError, TypeError, AttributeError, ValueError) as err:
                self.problems.append(f"{label}: malformed in the manifest ({type(err).__name__}: {err})")
            if len(self.problems) == before:
                verified.append(label)
        return self.problems, verified


def verify(manifest: dict, output_dir: Path, deep: bool = False) -> tuple[list[str], list[str]]:
    """(problems, sections verified): each difference between what the manifest recorded and the files now, and
    each section never recorded or malformed; paths resolve from the manifest, never from the current folder.
    `deep` also hashes the base model's weights (else their sizes are compared)."""
    return Verification(manifest, output_dir, deep).run()


def describe(manifest: dict) -> str:
    """The manifest as a person reads it."""
    code = manifest.get("code") or {}
    recipe = manifest.get("recipe") or {}
    state = f"{manifest.get('state')} (exit {manifest.get('exit_code')})"
    lines = [
        f"state       {state}, {manifest.get('started')} -> {manifest.get('ended') or 'not ended'}",
        f"code        {code.get('commit') or 'not a git checkout'}{' (dirty tree)' if code.get('dirty') else ''}",
        f"recipe      {recipe.get('path')}  sha256 {(recipe.get('sha256') or '')[:16]}",
        f"deepspeed   {(manifest.get('deepspeed') or {}).get('path') or 'off'}",
    ]
    for dataset in manifest.get("datasets", []):
        report = dataset.get("conversion") or {}
        counts = (
            f"; converted: read {report.get('read')}, train {report.get('written')}, eval {report.get('eval')}, "
            f"care reminder {(report.get('settings') or {}).get('care_reminder')}"
            if report
            else ""
        )
        digest = (dataset.get("sha256") or "")[:16]
        lines.append(f"dataset     {dataset['name']} ({dataset['role']}) {dataset.get('file')}  sha256 {digest}{counts}")
    recorded = manifest.get("packages") or {}
    direct = ", ".join(f"{k} {recorded[k]}" for k in ("caretune", *training_packages()) if recorded.get(k))
    packages = f"{len(recorded)} recorded; {direct}"
    hw = manifest.get("hardware") or {}
    gpus = ", ".join(g["name"] for g in hw.get("gpus", [])) or f"CPU ({hw.get('cpu_count')} cores)"
    env = manifest.get("environment") or {}
    base = manifest.get("base_model") or {}
    lines += [
        f"packages    {packages}",
        f"hardware    {gpus}; CUDA {hw.get('cuda')}; world size {manifest.get('world_size')}; seed {manifest.get('seed')}",
        f"command     {' '.join(map(str, (manifest.get('command') or {}).get('llamafactory') or []))}",
        f"switches    {env.get('switches') or {}}; secrets set (names only): {', '.join(env.get('secrets_set') or []) or 'none'}",
        f"result      step {manifest.get('last_step')}, loss {manifest.get('last_loss')}",
        f"base model  {base.get('name')}  {base.get('folder') or 'not on this machine'}; "
        f"{len(base.get('listing') or {**(base.get('files') or {}), **(base.get('weights') or {})})} files recorded",
        f"checkpoints {', '.join(manifest.get('checkpoints') or {}) or 'none'}",
    ]
    for adapter in manifest.get("adapters") or []:
        trained = (adapter.get("trained_by") or {}).get("manifest") or "not trained by caretune train"
        lines.append(f"starts from {adapter.get('path')} ({len(adapter.get('files') or {})} files; trained by {trained})")
    for name, entry in (manifest.get("outputs") or {}).items():
        digest = entry.get("sha256") if isinstance(entry, dict) else entry
        lines.append(f"output      {name}  sha256 {(digest or '')[:16]}")
    for key, record in (manifest.get("paths") or {}).items():
        lines.append(f"path        {key} -> {record.get('target')}")
    for number, attempt in enumerate(manifest.get("attempts") or [], start=1):
        resumed = f"resumed from {attempt.get('resumed_from')}" if attempt.get("resumed_from") else "from the start"
        lines.append(
            f"attempt {number}   {attempt.get('started')} -> {attempt.get('ended') or 'not ended'}: {resumed}, steps up to "
            f"{attempt.get('last_step')}, {attempt.get('state') or 'running'} (exit {attempt.get('exit_code')})"
        )
    return "\n".join(lines)
