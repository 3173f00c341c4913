"""The model manifest: everything inference must know about an exported model.

The training package writes ``manifest.json`` next to the ONNX files; the inference core reads
it, so input size, normalisation, landmark scheme, output names and the mean 3D face travel with
the weights instead of being hard-coded on either side. File hashes let a robot refuse a
truncated or mismatched model at start-up with a message naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headpose_ros.core.crop import BOX_MARGIN, Normalisation
from headpose_ros.core.landmarks import IBUG68, LandmarkScheme

__all__ = [
    "INT8_SUFFIX",
    "MANIFEST_FORMAT_VERSION",
    "ModelFile",
    "ModelFileError",
    "ModelManifest",
    "OutputNames",
    "load_manifest",
    "sha256_of",
]

MANIFEST_FORMAT_VERSION = 1
#: Role suffix of a network file quantised to int8 for the CPU ("mnn_int8", "encoder_int8").
INT8_SUFFIX = "_int8"
_SCHEMES: dict[str, LandmarkScheme] = {IBUG68.name: IBUG68}


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable, truncated or does not match its manifest."""


@dataclass(frozen=True)
class OutputNames:
    """ONNX tensor names; order and meaning follow paper-notes.md "Network outputs"."""

    image: str = "image"
    heatmaps: str = "heatmaps"
    pose_ed: str = "pose_ed"
    pose_ae: str = "pose_ae"
    visibility: str = "visibility"


@dataclass(frozen=True)
class ModelFile:
    """One artefact of the model, relative to the manifest's folder, with its SHA-256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ModelManifest:
    """Typed view of ``manifest.json``.

    ``files`` maps a role ("mnn", "encoder", "or"; optionally "mnn_int8" and "encoder_int8",
    the same networks quantised for the CPU) to its artefact. ``mean_face_mm`` is the
    68x3 mean 3D face in the head frame of :mod:`headpose_ros.core.geometry`, in millimetres.
    ``heatmap_size`` is the side of the decoder's heatmaps (they cover the whole crop).
    ``face_presence`` holds this model's two thresholds on a crop's mean heatmap peak (as a
    multiple of a flat map's value): below ``min`` a tracked face counts as lost for the frame,
    above ``clear`` the crop clearly shows a face whatever a detector says. They depend on how
    sharp the model's heatmaps are, so training measures them on validation faces and
    face-free crops (``headpose_training.calibration``); older manifests get 65 and 80, measured
    by hand for the first shipped model.
    """

    name: str
    input_size: int
    heatmap_size: int
    landmark_scheme: str
    normalisation: Normalisation
    mean_face_mm: tuple[tuple[float, float, float], ...]
    files: dict[str, ModelFile]
    outputs: OutputNames = OutputNames()
    crop_margin: float = BOX_MARGIN
    face_presence: dict[str, float] = field(default_factory=lambda: {"min": 65.0, "clear": 80.0})
    licence: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT_VERSION

    def __post_init__(self) -> None:
        """Validate shapes and ranges so a bad manifest fails at load, not on the first frame."""
        if self.format_version != MANIFEST_FORMAT_VERSION:
            raise ModelFileError(
                f"manifest format {self.format_version} is not supported"
                f" (expected {MANIFEST_FORMAT_VERSION})"
            )
        if self.landmark_scheme not in _SCHEMES:
            raise ModelFileError(
                f"unknown landmark scheme {self.landmark_scheme!r}; known: {sorted(_SCHEMES)}"
            )
        if not (16 <= self.input_size <= 1024 and 1 <= self.heatmap_size <= self.input_size):
            raise ModelFileError(
                f"implausible sizes: input {self.input_size}, heatmaps {self.heatmap_size}"
            )
        face = np.asarray(self.mean_face_mm, dtype=np.float64)
        if face.shape != (self.scheme.num_points, 3) or not np.all(np.isfinite(face)):
            raise ModelFileError(
                f"mean_face_mm must be {self.scheme.num_points}x3 finite values, got {face.shape}"
            )
        low, high = self.face_presence.get("min"), self.face_presence.get("clear")
        if set(self.face_presence) != {"min", "clear"} or not 0 < low <= high:
            raise ModelFileError(f"face_presence needs 0 < min <= clear, got {self.face_presence}")
        if "mnn" not in self.files and "encoder" not in self.files:
            raise ModelFileError("manifest lists neither an 'mnn' nor an 'encoder' model file")
        for role in self.files:
            if role.endswith(INT8_SUFFIX) and role.removesuffix(INT8_SUFFIX) not in self.files:
                raise ModelFileError(f"manifest lists '{role}' without its float model")

    @property
    def scheme(self) -> LandmarkScheme:
        """The landmark scheme object named by ``landmark_scheme``."""
        return _SCHEMES[self.landmark_scheme]

    @property
    def mean_face_m(self) -> np.ndarray:
        """The mean 3D face in metres, (L, 3) float64, ready for projection and PnP."""
        return np.asarray(self.mean_face_mm, dtype=np.float64) / 1000.0

    def to_json(self) -> str:
        """Serialise in the layout :func:`load_manifest` reads."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        """Build from parsed JSON, converting nested tables to their types."""
        try:
            fields = dict(data)
            norm = fields["normalisation"]
            fields["normalisation"] = Normalisation(
                channel_order=norm["channel_order"],
                mean=tuple(float(v) for v in norm["mean"]),
                std=tuple(float(v) for v in norm["std"]),
            )
            fields["outputs"] = OutputNames(**fields.get("outputs", {}))
            fields["files"] = {role: ModelFile(**entry) for role, entry in fields["files"].items()}
            fields["mean_face_mm"] = tuple(
                tuple(float(v) for v in row) for row in fields["mean_face_mm"]
            )
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"manifest is malformed: {error}") from error


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, streamed so large models do not load twice into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(
    path: Path | str, verify_hashes: bool = True
) -> tuple[ModelManifest, dict[str, Path]]:
    """Read and validate a manifest; return it with the absolute path of every listed file.

    Raises :class:`ModelFileError` naming the offending file when the manifest or any listed
    artefact is missing, unreadable or (with ``verify_hashes``) differs from its recorded hash.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model manifest not found: {path}")
    try:
        manifest = ModelManifest.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ModelFileError(f"model manifest {path} is not valid JSON: {error}") from error
    resolved: dict[str, Path] = {}
    for role, entry in manifest.files.items():
        file_path = (path.parent / entry.path).resolve()
        if not file_path.is_file():
            raise ModelFileError(f"{role} model file listed in {path} is missing: {file_path}")
        if verify_hashes and sha256_of(file_path) != entry.sha256:
            raise ModelFileError(
                f"{role} model file {file_path} does not match the hash in {path}"
                " (truncated or replaced?)"
            )
        resolved[role] = file_path
    return manifest, resolved
