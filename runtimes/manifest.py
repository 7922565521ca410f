"""The artifact manifest: ``NAME.json`` beside every ``NAME.onnx|.pt|.ptl``.

Written by :mod:`edgerobust.exporters`, read here on the device side (no torch needed). It says
what the artifact is, how to feed it, what it was made from and how faithfully it reproduces its
source (the parity result).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.errors import ArtifactError, OutputError

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """Metadata of one exported artifact (see design.md, "Artifact")."""

    format: str  # onnx | torchscript | ptl | pte
    precision: str  # fp32 | int8
    arch: str
    class_names: list[str]
    input: dict[str, Any]  # name, shape (with -1 for the batch), dtype, range, layout
    file: str  # artifact file name, relative to the manifest
    sha256: str
    size_bytes: int
    params: int | None  # None: not countable in the file (an imported model; see notes)
    engine: str | None = None  # quantization engine (fbgemm | x86 | qnnpack | onnxruntime)
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint sha256, source domain, split
    parity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # int8 made by the exporter itself (ONNX): the target CPU, the configuration and why, the
    # tuning table and the layers kept in fp32 by the accuracy-aware fallback. Empty otherwise.
    quantization: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # .pte: how much of the graph the backend delegate runs (see exporters/executorch.py)
    delegation: dict[str, Any] | None = None
    manifest_version: int = MANIFEST_VERSION

    @property
    def input_size(self) -> int:
        if "size" in self.input:  # imported models record it: NHWC shapes end in the channels
            return int(self.input["size"])
        return int(self.input["shape"][-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_suffix(".json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: no half files."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.is_file()), path.parent)
        raise OutputError(
            f"cannot write {path}: {blocker} is a file, not a folder: choose another path"
        ) from None
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_manifest(artifact: str | Path) -> Manifest:
    """Read the manifest beside ``artifact``; one-line :class:`ArtifactError` if it is unusable
    (not JSON, not an object, missing or mistyped keys, a newer version, another file's)."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    mpath = manifest_path(artifact)
    if not mpath.is_file():
        raise ArtifactError(
            f"no manifest {mpath.name} beside {artifact.name}: artifacts carry one from "
            "'edgerobust export'; copy it along with the artifact (a model made elsewhere: "
            "'edgerobust import FILE --classes ... --input-size N')"
        )
    bad = f"manifest {mpath} is not a valid edgerobust manifest"
    again = "copy it again along with the artifact, or re-export"
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{bad}: not JSON ({exc}): {again}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{bad}: a JSON {type(data).__name__}, not an object: {again}")
    version = data.get("manifest_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{bad}: manifest_version {version!r} is not a positive integer")
    if version > MANIFEST_VERSION:
        raise ArtifactError(
            f"manifest {mpath.name} is version {version}, newer than this edgerobust reads "
            f"(up to {MANIFEST_VERSION}): upgrade edgerobust"
        )
    problems = _check_fields(data)
    if problems:
        raise ArtifactError(f"{bad}: {problems}: {again}")
    manifest = Manifest.from_dict(data)
    if manifest.file != artifact.name:
        raise ArtifactError(
            f"manifest {mpath.name} describes {manifest.file}, not {artifact.name}: "
            "keep the artifact and its manifest under the names export gave them"
        )
    return manifest


# The keys a manifest must have and the JSON types they hold (the rest have defaults).
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "precision": str,
    "arch": str,
    "class_names": list,
    "input": dict,
    "file": str,
    "sha256": str,
    "size_bytes": int,
    "params": (int, type(None)),  # None: an imported file whose parameters cannot be counted
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "engine": (str, type(None)),
    "source": dict,
    "parity": dict,
    "notes": list,
    "versions": dict,
}


def _check_fields(data: dict[str, Any]) -> str:
    """What is wrong with a manifest's keys, as one phrase ("" when nothing is)."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            return f"{key} has the wrong type ({type(data[key]).__name__})"
    shape = data["input"].get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
    ):
        return "input.shape is not a list of integers"
    if not all(isinstance(c, str) for c in data["class_names"]) or not data["class_names"]:
        return "class_names is not a non-empty list of names"
    return ""


def verify_artifact(artifact: str | Path, manifest: Manifest) -> None:
    """Check size and sha256 against the manifest before anything parses the file."""
    artifact = Path(artifact)
    size = artifact.stat().st_size
    if size != manifest.size_bytes:
        raise ArtifactError(
            f"{artifact.name} is {size} bytes but its manifest says {manifest.size_bytes}: "
            "the file is truncated or was modified; copy or re-export it"
        )
    digest = sha256_file(artifact)
    if digest != manifest.sha256:
        raise ArtifactError(
            f"{artifact.name} does not match the sha256 in its manifest: the file was modified "
            "or corrupted in transfer; copy or re-export it"
        )
