"""Multimodal training data: raw waveform + transcript + label + cached teacher states, and the collate.

One :class:`MultimodalDataset` item is one utterance; :meth:`MultimodalDataset.collate` builds the
shared batch dict every model and task reads::

    {"ids": list[str],
     "labels": (B,) long (-100 where unlabelled; absent when no item has a label),
     "audio": audio_encoder.preprocess(waveforms),      # e.g. {"input_values", "attention_mask"}
     "text": text_encoder.preprocess(texts),            # e.g. {"input_ids", "attention_mask"}
     "teacher": {"audio": (B, T_a, D), "audio_mask": (B, T_a) bool, "text": ..., "text_mask": ...},
     "features": {"audio": (B, T, D), "audio_mask": ..., ...},
     "present": {"video": (B,) bool, ...},              # per-sample modality-present mask (features)
     "targets": (B,) float (NaN where missing; only with a regression target),
     "num_samples": (B,) long}

Feature modalities may be **absent** for some utterances when their store allows it
(:class:`~emofuse.features.files.FileFeatureStore`, the files named by ``Utterance.features``): such an
item contributes a sequence with no valid step (``features[m + "_mask"]`` all False, ``features[m]``
zero there) and ``present[m] = False``. A batch in which no item has ``m`` keeps one padded step
(``T = 1``, masked), so shapes stay valid. ``present`` is filled for every feature modality (all True
for stores without absence).

The CMD student reuses its teachers' input embeddings, so ``batch["audio"]``/``batch["text"]`` are
produced by the *teacher* encoders' ``preprocess`` (wav2vec 2.0 normalisation, WordPiece ids), and
the student's frames line up with the cached teacher states (spec ``cmd.md`` §1.2, §3.7).
:meth:`MultimodalDataset.lengths` gives the audio length of every item for
:class:`~emofuse.data.sampling.DynamicBatchSampler`.

Example:
    >>> import tempfile
    >>> from emofuse.testing.dummies import DummyTextEncoder, make_wav_corpus
    >>> root = tempfile.mkdtemp()
    >>> records = make_wav_corpus(root, 2)
    >>> ds = MultimodalDataset(records, ["neutral", "happy"], text_encoder=DummyTextEncoder(), root=root)
    >>> batch = ds.collate([ds[0], ds[1]])
    >>> batch["labels"].tolist(), sorted(batch["text"]), ds.lengths()
    ([0, 1], ['attention_mask', 'input_ids'], [8000, 10000])
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from emofuse.data.audio import SAMPLE_RATE, AudioError, audio_info, load_audio
from emofuse.data.labels import LabelScheme
from emofuse.data.manifest import Utterance
from emofuse.encoders.base import Encoder
from emofuse.losses.classification import IGNORE_INDEX

__all__ = ["IGNORE_LABEL", "DatasetItemError", "MultimodalDataset", "pad_sequences", "target_value"]

#: Label of unlabelled items in a batch (PyTorch's ``ignore_index`` default).
IGNORE_LABEL = IGNORE_INDEX  # one definition: losses.classification


class _Store(Protocol):
    """What the dataset needs from a :class:`~emofuse.features.FeatureStore`."""

    def get(self, utt_id: str) -> Tensor: ...  # noqa: D102

    def __contains__(self, utt_id: object) -> bool: ...


class DatasetItemError(ValueError):
    """An item cannot be built (audio unreadable, transcript or cached states missing). Names id and file.

    Attributes:
        id: Utterance id.
        reason: The message without the id.
        path: Audio file involved, if any.
    """

    def __init__(self, utt_id: str, reason: str, path: Path | None = None) -> None:
        super().__init__(f"utterance {utt_id!r}: {reason}")
        self.id = utt_id
        self.reason = reason
        self.path = path


def target_value(rec: Utterance, target: str) -> float | None:
    """The regression target of ``rec``: a record field, or ``extra.<key>`` (``None`` when missing).

    Example:
        >>> target_value(Utterance(id="a", extra={"valence": 0.5}), "extra.valence")
        0.5

    Raises:
        ValueError: The value is not a finite number (the message names id, field and value).
    """
    if target.startswith("extra."):
        value = rec.extra.get(target.removeprefix("extra."))
    elif target in Utterance.model_fields:
        value = getattr(rec, target)
    else:
        raise ValueError(f"target {target!r} is neither a record field nor 'extra.<key>'")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"utterance {rec.id!r}: target {target} = {value!r} is not a finite number")
    return float(value)


def pad_sequences(seqs: Sequence[Tensor], pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack ``(T_i, D)`` sequences into ``(B, T_max, D)`` with a ``(B, T_max)`` bool mask (True = valid).

    Example:
        >>> x, m = pad_sequences([torch.ones(2, 3), torch.ones(1, 3)])
        >>> tuple(x.shape), m.tolist()
        ((2, 2, 3), [[True, True], [True, False]])
    """
    if not seqs:
        raise ValueError("pad_sequences: no sequences")
    t_max = max(int(s.shape[0]) for s in seqs)
    out = seqs[0].new_full((len(seqs), t_max, *seqs[0].shape[1:]), pad_value)  # (B, T_max, D)
    mask = torch.zeros(len(seqs), t_max, dtype=torch.bool)  # (B, T_max)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


class MultimodalDataset(Dataset[dict[str, Any]]):
    """Utterances as raw waveform, transcript, label index and cached tensors.

    Args:
        records: Utterances, in the order to serve them.
        classes: Class names (index = position) or a :class:`LabelScheme`; ``None``: unlabelled.
        audio_encoder: Encoder whose ``preprocess`` turns waveforms into ``batch["audio"]`` (the
            audio teacher for CMD). ``None``: no ``batch["audio"]``.
        text_encoder: Encoder whose ``preprocess`` turns transcripts into ``batch["text"]``.
        teacher_stores: Cached teacher states per modality (``batch["teacher"]``).
        feature_stores: Cached input features per modality for feature-based models (``batch["features"]``).
        text_field: ``"text"`` (gold transcript) or another field, looked up on the record and then in
            its ``extra`` dict (``"asr_text"`` for the ASR variants of the paper).
        trim_silence: Trim leading/trailing silence when loading (the authors' preprocessing; the
            teacher cache must have been extracted the same way, which the distillation task checks).
        trim_db: Silence threshold for trimming (60 dB, ``librosa.effects.trim``'s default).
        root: Folder that relative audio paths are relative to (the manifest's folder).
        sample_rate: Rate to load audio at.
        max_duration: Crop audio to its first ``max_duration`` seconds (``None``: no crop; A25).
        load_waveform: Load audio in ``__getitem__``; default: only when ``audio_encoder`` is given.
        target: Continuous regression target, as a record field (``"turn"``) or ``"extra.<key>"``
            (``"extra.valence"``, ``"extra.conflict"``); ``None``: no ``batch["targets"]``.

    Raises:
        ValueError: A record's label is not one of ``classes``, or its target is not a number.
    """

    def __init__(
        self,
        records: Sequence[Utterance],
        classes: Sequence[str] | LabelScheme | None = None,
        audio_encoder: Encoder | None = None,
        text_encoder: Encoder | None = None,
        teacher_stores: Mapping[str, _Store] | None = None,
        feature_stores: Mapping[str, _Store] | None = None,
        text_field: str = "text",
        trim_silence: bool = False,
        trim_db: float = 60.0,
        root: str | Path | None = None,
        sample_rate: int = SAMPLE_RATE,
        max_duration: float | None = None,
        load_waveform: bool | None = None,
        target: str | None = None,
    ) -> None:
        self.records = list(records)
        self.classes = tuple(classes.classes if isinstance(classes, LabelScheme) else classes or ())
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.teacher_stores = dict(teacher_stores or {})
        self.feature_stores = dict(feature_stores or {})
        self.text_field = text_field
        self.trim_silence = trim_silence
        self.trim_db = trim_db
        self.root = Path(root) if root is not None else None
        self.sample_rate = sample_rate
        self.max_duration = max_duration
        self.load_waveform = audio_encoder is not None if load_waveform is None else load_waveform
        index = {c: i for i, c in enumerate(self.classes)}
        self._labels: list[int | None] = []
        for rec in self.records:
            if not self.classes or rec.label is None:
                self._labels.append(None)
            elif rec.label not in index:
                raise ValueError(f"utterance {rec.id!r} has label {rec.label!r}, not one of the classes {self.classes}")
            else:
                self._labels.append(index[rec.label])
        self._lengths: list[int] | None = None
        self.target = target
        self._targets: list[float | None] = [target_value(r, target) for r in self.records] if target else []

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        """Utterance ids in dataset order."""
        return [r.id for r in self.records]

    def text_of(self, rec: Utterance) -> str:
        """The transcript used for ``rec`` (field :attr:`text_field`, then ``rec.extra[text_field]``)."""
        value = getattr(rec, self.text_field, None) if self.text_field in Utterance.model_fields else None
        if value is None:
            value = rec.extra.get(self.text_field)
        if not isinstance(value, str):
            raise DatasetItemError(rec.id, f"no transcript in field {self.text_field!r} (record or extra)")
        return value

    def _path(self, rec: Utterance) -> Path:
        path = rec.audio_path(self.root)
        if path is None:
            raise DatasetItemError(rec.id, "has no audio file")
        return path

    def load_waveform_of(self, rec: Utterance) -> np.ndarray:
        """The record's waveform ``(num_samples,)`` float32, or a :class:`DatasetItemError` naming id and file."""
        path = self._path(rec)
        try:
            wav = load_audio(path, self.sample_rate, rec.start, rec.end, trim=self.trim_silence, trim_db=self.trim_db)
        except AudioError as e:
            raise DatasetItemError(rec.id, f"cannot load audio: {e}", path) from e
        if self.max_duration is not None:
            wav = wav[: int(round(self.max_duration * self.sample_rate))]
        return wav

    def _cached(self, stores: Mapping[str, _Store], rec: Utterance, what: str) -> dict[str, Tensor | None]:
        out: dict[str, Tensor | None] = {}
        for m, store in stores.items():
            if getattr(store, "allow_missing", False) and rec.id not in store:
                out[m] = None  # absent modality: masked in the batch, never zeros pretending to be data
                continue
            try:
                out[m] = store.get(rec.id)
            except KeyError as e:
                raise DatasetItemError(rec.id, f"no cached {what} for {m!r}: {e.args[0] if e.args else e}") from None
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One item.

        Returns:
            ``{"id", "index", "waveform": (L,) float32 | None, "num_samples": int, "text": str | None,
            "label": int | None, "target": float | None, "teacher": {m: (T, D)},
            "features": {m: (T, D) | None}}`` (``None``: the modality is absent for this utterance).

        Raises:
            DatasetItemError: The audio cannot be loaded, or the transcript / cached states are missing.
        """
        rec = self.records[i]
        wav = self.load_waveform_of(rec) if self.load_waveform else None
        if wav is not None:
            num_samples = len(wav)
        else:
            num_samples = self._lengths[i] if self._lengths is not None and rec.audio is not None else 0
        need_text = self.text_encoder is not None or self.text_field != "text"
        return {
            "id": rec.id,
            "index": i,
            "waveform": wav,
            "num_samples": num_samples,
            "text": self.text_of(rec) if need_text else rec.text,
            "label": self._labels[i],
            "target": self._targets[i] if self.target else None,
            "teacher": self._cached(self.teacher_stores, rec, "teacher states"),
            "features": self._cached(self.feature_stores, rec, "features"),
        }

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Build the shared batch dict (see the module docstring) from items of this dataset."""
        if not items:
            raise ValueError("cannot collate an empty batch")
        batch: dict[str, Any] = {"ids": [it["id"] for it in items]}
        labels = [it["label"] for it in items]
        if any(lab is not None for lab in labels):
            batch["labels"] = torch.tensor([IGNORE_LABEL if lab is None else lab for lab in labels], dtype=torch.long)
        if self.audio_encoder is not None:
            missing = [it["id"] for it in items if it["waveform"] is None]
            if missing:
                raise DatasetItemError(missing[0], "no waveform to preprocess (load_waveform=False or no audio)")
            batch["audio"] = self.audio_encoder.preprocess([it["waveform"] for it in items])
        if self.text_encoder is not None:
            batch["text"] = self.text_encoder.preprocess([it["text"] for it in items])
        if self.target:
            batch["targets"] = torch.tensor(
                [float("nan") if it["target"] is None else it["target"] for it in items], dtype=torch.float32
            )
        for key in ("teacher", "features"):
            if items[0][key]:
                group: dict[str, Tensor] = {}
                present: dict[str, Tensor] = {}
                for m in items[0][key]:
                    seqs = [it[key][m] for it in items]
                    present[m] = torch.tensor([x is not None for x in seqs], dtype=torch.bool)
                    group[m], group[f"{m}_mask"] = self._pad_present(seqs, m, key)
                batch[key] = group
                if key == "features":
                    batch["present"] = present
        batch["num_samples"] = torch.tensor([it["num_samples"] for it in items], dtype=torch.long)
        return batch

    def _pad_present(self, seqs: Sequence[Tensor | None], modality: str, key: str) -> tuple[Tensor, Tensor]:
        """Pad sequences where absent items (``None``) get no valid step; at least one (masked) step."""
        real = [x for x in seqs if x is not None]
        if real:
            ref = real[0]
        else:
            stores = self.feature_stores if key == "features" else self.teacher_stores
            ref = torch.zeros(0, int(stores[modality].output_dim))  # type: ignore[attr-defined]
        empty = ref.new_zeros((0, *ref.shape[1:]))
        x, mask = pad_sequences([empty if s is None else s for s in seqs])
        if x.shape[1] == 0:  # nobody has the modality: one masked step keeps (B, T, D) usable
            x = x.new_zeros((x.shape[0], 1, *x.shape[2:]))
            mask = mask.new_zeros((mask.shape[0], 1))
        return x, mask

    def _length(self, rec: Utterance) -> int:
        if rec.audio is None:
            text = self.text_of(rec) if self.text_field != "text" else rec.text
            return len(text)
        if rec.start is not None and rec.end is not None:
            seconds = rec.end - rec.start
        else:
            path = self._path(rec)
            try:
                duration = float(audio_info(path)["duration"])
            except AudioError as e:
                raise DatasetItemError(rec.id, f"cannot read the audio header: {e}", path) from e
            if not np.isfinite(duration):
                raise DatasetItemError(rec.id, f"unknown duration of {path}", path)
            end = duration if rec.end is None else min(rec.end, duration)
            seconds = max(end - (rec.start or 0.0), 0.0)
        if self.max_duration is not None:
            seconds = min(seconds, self.max_duration)
        return int(round(seconds * self.sample_rate))

    def lengths(self) -> list[int]:
        """Audio length of every item in samples at :attr:`sample_rate`, for the batch sampler.

        Read from ``start``/``end`` or the file header (no decoding), cropped to ``max_duration``.
        With ``trim_silence`` this is an upper bound, so a batch never exceeds its budget. Records
        without audio count the characters of their transcript (for text-only data, set the
        sampler's budget in characters). Computed once and cached.

        Raises:
            DatasetItemError: A header cannot be read (the message names the id and the file).
        """
        if self._lengths is None:
            self._lengths = [self._length(rec) for rec in self.records]
        return list(self._lengths)

    def validate(self, decode: bool = True) -> dict[str, str]:
        """Pre-check every item without stopping at the first problem.

        Args:
            decode: Decode each audio file completely (slow, finds corrupt data); ``False`` reads
                headers only.

        Returns:
            ``{id: reason}`` for every item that would fail (empty when all are fine).
        """
        bad: dict[str, str] = {}
        for rec in self.records:
            reasons = []
            if self.load_waveform or rec.audio is not None:
                try:
                    if self.load_waveform and decode:
                        self.load_waveform_of(rec)
                    else:
                        self._length(rec)
                except DatasetItemError as e:
                    reasons.append(e.reason)
            if self.text_encoder is not None or self.text_field != "text":
                try:
                    self.text_of(rec)
                except DatasetItemError as e:
                    reasons.append(e.reason)
            for what, stores in (("teacher states", self.teacher_stores), ("features", self.feature_stores)):
                absent = [m for m, s in stores.items() if rec.id not in s and not getattr(s, "allow_missing", False)]
                if absent:
                    reasons.append(f"no cached {what} for {absent}")
                for m, s in stores.items():
                    missing = s.missing_file(rec.id) if hasattr(s, "missing_file") else None
                    if missing is not None:
                        reasons.append(f"{m} feature file not found: {missing}")
            if reasons:
                bad[rec.id] = "; ".join(reasons)
        return bad

    def without(self, ids: Collection[str]) -> MultimodalDataset:
        """A copy without the given ids (e.g. ``ds.without(ds.validate())``); encoders and stores are shared."""
        drop = set(ids)
        keep = [i for i, r in enumerate(self.records) if r.id not in drop]
        new = copy.copy(self)
        new.records = [self.records[i] for i in keep]
        new._labels = [self._labels[i] for i in keep]
        new._targets = [self._targets[i] for i in keep] if self.target else []
        new._lengths = None if self._lengths is None else [self._lengths[i] for i in keep]
        return new
