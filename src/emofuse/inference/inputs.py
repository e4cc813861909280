"""A checkpoint's inputs rebuilt at inference: the encoders it was trained with, their policy and standardisation.

Training feeds a model in one of two ways, as the model declares (:attr:`~emofuse.models.base.EmotionModel.input_kind`):

* ``raw``: ``batch[m]`` is the ``m`` encoder's ``preprocess`` output (waveform, token ids), which the model embeds
  itself (CMD students, MGCMA, ConflictNET). Only the preprocessing is rebuilt (no encoder weights are kept).
* ``features``: ``batch["features"][m]`` holds the states of a frozen encoder, cached at training time (MulT, probes,
  CM-RoBERTa). :class:`ModelInputs` runs that encoder (same name, layer, options, audio crop and storage dtype as
  the feature cache) on each clip *on its own*, z-scores with the statistics the checkpoint carries
  (``encoders.standardize``), and collates with the training datasets (:class:`~emofuse.pipeline.MultimodalDataset`,
  :class:`~emofuse.pipeline.dialogue.DialogueDataset`), so padding and masks are the ones training used.

What a run fed its model is read from the checkpoint's ``inputs`` entry (the run's ``encoders`` section, written
since this module exists), else from the run's ``config.yaml`` next to it, else the model's own declarations.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emofuse.data.audio import SAMPLE_RATE
from emofuse.data.manifest import Utterance
from emofuse.models.checkpoint import CheckpointError
from emofuse.utils.tensors import to_device

__all__ = ["MemoryStore", "ModelInputs"]

_MODALITIES = ("audio", "text")
_DTYPES = {"float16": torch.float16, "float32": torch.float32}


class MemoryStore:
    """Encoder outputs of the clips being scored, served like a :class:`~emofuse.features.FeatureStore`.

    Args:
        output_dim: Feature size ``D``.
    """

    def __init__(self, output_dim: int) -> None:
        self.output_dim = int(output_dim)
        self.items: dict[str, tuple[Tensor, Tensor]] = {}
        self.failed: dict[str, str] = {}

    def put(self, utt: str, hidden: Tensor, pooled: Tensor) -> None:
        """Store one clip's ``hidden`` ``(T, D)`` and ``pooled`` ``(D,)``."""
        self.items[utt] = (hidden, pooled)

    def get(self, utt: str) -> Tensor:
        """``(T, D)`` float32 frames."""
        return self.items[utt][0].to(torch.float32)

    def get_pooled(self, utt: str) -> Tensor:
        """``(D,)`` float32 utterance vector."""
        return self.items[utt][1].to(torch.float32)

    def __contains__(self, utt: object) -> bool:
        return utt in self.items


def _encoder_names(model: Any, recipe: Mapping[str, Any]) -> dict[str, str]:
    """Encoder per modality: the run's ``encoders.<m>``, else the model's own (as the training components chose)."""
    own = model.encoder_names()
    return {m: str(n) for m in model.modalities if (n := recipe.get(m) or own.get(m)) is not None}


class ModelInputs:
    """Builds a model's batch from waveforms and transcripts the way its training run did.

    Args:
        model: The trained model.
        meta: Its checkpoint document (``encoders`` provenance, ``inputs``).
        recipe: The run's ``encoders`` section (``inputs``, names, layers, options, ``max_duration``, ...).
        where: The checkpoint, for error messages.
        device: Where the encoders run.

    Raises:
        CheckpointError: A modality the model reads cannot be computed from audio or text (feature files, video),
            or no encoder is known for it.
    """

    def __init__(
        self,
        model: Any,
        meta: Mapping[str, Any],
        recipe: Mapping[str, Any],
        where: object = "model",
        device: str | torch.device = "cpu",
    ) -> None:
        self.model, self.meta, self.where = model, meta, where
        self.kind: str = model.input_kind
        files = [m for m in model.modalities if m in (recipe.get("files") or [])]
        other = [m for m in model.modalities if m not in _MODALITIES]
        if files or other:
            raise CheckpointError(
                f"{where}: model {model.model_name!r} reads {sorted(set(files + other))} features from feature files "
                "(encoders.files / video), which cannot be computed from audio and text: predict with "
                "`emofuse evaluate` on a manifest that names those files"
            )
        names = _encoder_names(model, recipe)
        absent = [m for m in model.modalities if m not in names]
        if absent:
            raise CheckpointError(f"{where}: no {absent} encoder recorded for model {model.model_name!r}")
        self.names = names
        self.recipe = dict(recipe)
        self.max_duration: float | None = recipe.get("max_duration")
        self.dtype = _DTYPES.get(str(recipe.get("dtype") or "float16"), torch.float16)
        self.device = torch.device(device)
        self.encoders = {m: self._build(m, n) for m, n in names.items()}

    # ------------------------------------------------------------------------------------------------ encoders

    def _build(self, modality: str, name: str) -> Any:
        from emofuse.encoders import create_encoder

        cfg = self.model.config
        layer = self.recipe.get(f"{modality}_layer")
        options = dict(self.recipe.get(f"{modality}_options") or {})
        stored = (self.meta.get("encoders") or {}).get(modality) or {}
        own = self.model.input_encoders()
        if self.kind == "raw" and modality in own:  # a fine-tuned encoder preprocesses its own inputs, as in training
            return own[modality]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.kind == "raw" and name == cfg.get(f"{modality}_teacher"):
                from emofuse.models.cmd_student import build_teacher

                enc = build_teacher(name, str(cfg.get("teacher_weights", "auto")), allow_random=True, fast=True)
            else:
                enc = create_encoder(name, layer=layer, frozen=True, allow_random=True, **options)
        if stored and (stored.get("resolved"), stored.get("architecture")) != (
            enc.provenance.resolved,
            enc.provenance.architecture,
        ):
            warnings.warn(
                f"{modality} encoder: the model was trained with {name!r} resolved as {stored.get('resolved')} "
                f"({stored.get('architecture')}), here it resolves as {enc.provenance.resolved} "
                f"({enc.provenance.architecture}); its inputs may differ",
                UserWarning,
                stacklevel=3,
            )
        if self.kind == "raw":
            return enc.to("meta")  # preprocess needs the tokenizer / feature settings only: drop the weights
        return enc.to(self.device).eval()

    def provenance(self) -> dict[str, dict[str, Any]]:
        """Which encoders this predictor runs (or preprocesses with), per modality."""
        return {m: e.provenance.to_dict() for m, e in self.encoders.items()}

    # --------------------------------------------------------------------------------------------------- batch

    def _crop(self, wav: np.ndarray) -> np.ndarray:
        if self.max_duration is None:
            return wav
        return wav[: int(round(float(self.max_duration) * SAMPLE_RATE))]

    def batch(self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None]) -> dict[str, Any]:
        """The model's batch for ``B`` utterances.

        Args:
            waveforms: 16 kHz mono waveforms ``(S_i,)`` (ignored by text-only models).
            texts: Their transcripts (``None`` for audio-only models).

        Returns:
            The batch dict training built (``batch[m]`` for raw input, ``batch["features"]`` for features).

        Raises:
            EncoderError: A clip too short or a transcript empty for the encoder.
        """
        if self.kind == "raw":
            out: dict[str, Any] = {}
            if "audio" in self.encoders:
                out["audio"] = self.encoders["audio"].preprocess([self._crop(w) for w in waveforms])
            if "text" in self.encoders:
                out["text"] = self.encoders["text"].preprocess([t or "" for t in texts])
            return {m: {k: v.to(self.device) for k, v in b.items()} for m, b in out.items()}
        return self._feature_batch(waveforms, texts, dialogue=False)

    def dialogue_batch(self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None]) -> dict[str, Any]:
        """The batch of one dialogue: the utterances in turn order (dialogue-level models)."""
        return self._feature_batch(waveforms, texts, dialogue=True)

    def _feature_batch(self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None], dialogue: bool) -> Any:
        from emofuse.pipeline import MultimodalDataset
        from emofuse.pipeline.dialogue import DialogueDataset
        from emofuse.pipeline.standardize import standardize_stores

        if self.kind != "features":
            raise CheckpointError(f"{self.where}: a dialogue-level model reads utterance vectors (features input)")
        n = len(texts)
        ids = [f"u{i:06d}" for i in range(n)]
        stores: dict[str, Any] = {}
        for m, enc in self.encoders.items():
            store = MemoryStore(enc.output_dim)
            for i in range(n):  # one clip at a time: padding never changes another clip's features
                x = self._crop(waveforms[i]) if m == "audio" else (texts[i] or "")
                with torch.inference_mode():
                    out = enc.encode([x])
                h = out.hidden[0][out.mask[0].bool()].to("cpu", torch.float32)  # (T, D)
                p = out.pooled[0].to("cpu", torch.float32)  # (D,)
                store.put(ids[i], h.to(self.dtype), p.to(self.dtype))  # the cache's storage precision
            stores[m] = store
        stores = standardize_stores(stores, self.model.feature_stats)
        if dialogue:
            records = [Utterance(id=u, dialogue="d", turn=k) for k, u in enumerate(ids)]
            ds: Any = DialogueDataset(records, None, stores)
        else:
            ds = MultimodalDataset([Utterance(id=u) for u in ids], [], feature_stores=stores)
        batch = ds.collate([ds[i] for i in range(len(ds))])
        return to_device(batch, self.device)
