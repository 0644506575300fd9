"""The model card: what is known about a saved model, in ``<stem>.card.json`` beside its ``.keras`` file.

:class:`ModelCard` is the only code that reads or writes a card. Training writes every field;
everything else reads them through :class:`catdog.bundle.Bundle`. Paths in the card
(``manifest``, ``history``) are stored relative to the card's folder, so a model folder can be
moved or committed and still find its data.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from catdog.conventions import CLASS_NAMES, FEATURES_LAYER, LOGIT_LAYER
from catdog.paths import atomic_write

OUTPUT = (f"sigmoid p(dog); logit layer '{LOGIT_LAYER}', pooled features layer '{FEATURES_LAYER}'; "
          "confidence = calibrated p of the predicted class")
INPUT = "RGB uint8/float pixels 0..255, resized to image_size (preprocessing is inside the model)"


def card_path(model_path: str | Path) -> Path:
    """The card JSON that sits beside a ``.keras`` file: ``<stem>.card.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".card.json")


@dataclass
class ModelCard:
    """Facts about one saved model; ``folder`` (not stored) is where the card lives."""

    model_file: str
    backbone: str
    image_size: int
    temperature: float = 1.0  # calibrated p(dog) = sigmoid(logit / temperature), fitted on validation
    threshold: float = 0.5  # predicted dog when calibrated p(dog) >= threshold
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    output: str = OUTPUT
    input: str = INPUT
    manifest: str | None = None  # the data manifest it was trained on, relative to the card
    manifest_sha256: str | None = None
    history: str | None = None  # training history CSV, relative to the card
    split_sizes: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)  # split -> catdog.metrics.compute_metrics
    phases: dict[str, dict] = field(default_factory=dict)  # training phases: epochs, seconds, best val loss
    total_seconds: float | None = None
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig as a dict; an ensemble: {"members": [...]}
    members: list[str] = field(default_factory=list)  # an ensemble's member models (file names as trained)
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    folder: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0
                and math.isfinite(self.temperature)):
            raise ValueError(f"model card of {self.model_file}: temperature must be a positive number, "
                             f"got {self.temperature!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"model card of {self.model_file}: threshold must be in [0, 1], got {self.threshold!r}")
        if tuple(self.class_names) != CLASS_NAMES:
            raise ValueError(f"model card of {self.model_file}: class order {self.class_names} is not {CLASS_NAMES}")
        self.temperature, self.threshold, self.image_size = (float(self.temperature), float(self.threshold),
                                                             int(self.image_size))

    # ------------------------------------------------------------ reading and writing
    @classmethod
    def read(cls, model_path: str | Path) -> ModelCard | None:
        """The card beside ``model_path``; None if there is none. A card that is not valid JSON is an error."""
        path = card_path(model_path)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a valid model card ({exc})") from None
        known = {f.name for f in fields(cls)} - {"folder"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown model card field(s) {', '.join(unknown)}")
        try:
            return cls(**data, folder=path.parent)
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"{path}: incomplete model card ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """The card as stored (without ``folder``)."""
        out = asdict(self)
        out.pop("folder")
        return out

    def save(self, model_path: str | Path) -> Path:
        """Write the card beside ``model_path`` (replacing atomically); paths stay relative to it."""
        self.folder = Path(model_path).parent
        return atomic_write(card_path(model_path), json.dumps(self.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------ resolved paths
    def _resolve(self, relative: str | None) -> Path | None:
        if not relative:
            return None
        return ((self.folder or Path(".")) / relative).resolve()

    @property
    def architecture(self) -> str:
        """The backbone, or for an ensemble its members' backbones and input sizes (from their recorded configs)."""
        members = self.config.get("members") if self.backbone == "ensemble" else None
        if not members:
            return self.backbone
        return "ensemble of " + " + ".join(f"{m.get('backbone', '?')} at {m.get('image_size', '?')} px"
                                           for m in members)

    @property
    def manifest_path(self) -> Path | None:
        """The training manifest as an absolute path (None if the card names none)."""
        return self._resolve(self.manifest)

    @property
    def history_path(self) -> Path | None:
        """The training history CSV as an absolute path (None if the card names none)."""
        return self._resolve(self.history)
