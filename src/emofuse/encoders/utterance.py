"""Utterance-level feature encoders: one vector per utterance, from one encoder or several concatenated.

CM-RoBERTa (Luo et al., specs/cm-roberta.md §2.1-2.2) feeds its dialogue model one fixed vector per utterance
and modality: ``x_a = openSMILE functionals ⊕ OpenL3 embedding`` and ``x_t = RoBERTa-large <s> of the last 4
layers``. :class:`UtteranceEncoder` wraps one or more registered encoders, takes each one's ``pooled`` output
and concatenates them; ``hidden`` is that vector as a one-step sequence ``(B, 1, D)``, so the feature cache stores
one row per utterance instead of every frame or token.

Registered names (what really runs is written into :attr:`Encoder.provenance`; ``stand_in`` is set when the
features are not the paper's):

* ``roberta-large-last4``: ``roberta-large`` with the ``<s>`` (first-token) state of each of its last 4 layers
  concatenated, 4 × 1024 = 4096-d (spec B3). The paper fine-tunes RoBERTa-large on MELD first (COSMIC recipe)
  and then uses it frozen (B4): point ``$EMOFUSE_MODELS_DIR/roberta-large-last4`` (or ``weights_dir=``) at such a
  fine-tuned checkpoint to get the paper's features. Without local / cached weights the packaged sentence
  encoders stand in (MPNet-base, then MiniLM-L6: then 4 × 384 = 1536-d, with uncased WordPiece), flagged as such.
* ``compare+whisper-tiny.en``: the audio vector standing in for ``emo_large ⊕ OpenL3`` (12696-d in the paper).
  The ``opensmile`` package does not ship ``emo_large.conf`` (its configs are eGeMAPS, GeMAPS, ComParE 2016,
  emobase and IS09-13), so the closest shipped set runs: **ComParE 2016 functionals** (6373: brute-force
  functionals of MFCC, spectral, energy and voicing LLDs with deltas, the same construction as emo_large's
  56 LLD × 3 × 39 = 6552). OpenL3 needs TensorFlow and downloads its weights, so the **Whisper tiny.en encoder,
  mean-pooled over its frames** (384-d; real pretrained weights from the packaged CTranslate2 model) stands in
  for the mean-pooled OpenL3-6144 embedding: both are pretrained audio CNN/Transformer embeddings averaged over
  time (spec B2). Total 6373 + 384 = 6757-d.
* ``whisper-tiny.en-mean``: that embedding alone (Table 3, "w/o low-level descriptors"). The openSMILE part alone
  (Table 3, "w/o openL3 embedding") is the already registered ``compare`` (functionals: one vector per utterance).
* ``tiny-roberta-last2`` (the first token of the 2 layers of ``tiny-roberta``, 64-d) and ``egemaps+tiny-whisper``
  (88 + 32 = 120-d): TEST ONLY, random by design.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from emofuse.encoders._registry import (
    EncoderSpec,
    RandomInitWarning,
    Resolution,
    create_encoder,
    get_encoder_spec,
    register_encoder,
)
from emofuse.encoders.base import Encoder, EncoderError, EncoderOutput, Modality, Provenance

__all__ = ["UtteranceEncoder"]


class UtteranceEncoder(Encoder):
    """The ``pooled`` outputs of one or more encoders of the same modality, concatenated: one vector per utterance.

    Args:
        name: Registered name.
        parts: The encoders (built, usually frozen); each sees the same raw inputs.
        provenance: Which weights run.

    Attributes:
        part_names: Registered names of the parts, in concatenation order.
        part_dims: Their output sizes (``output_dim`` is their sum).

    Example:
        >>> import torch
        >>> from emofuse.encoders.handcrafted import SpectralConfig, SpectralEncoder
        >>> mels = SpectralEncoder("logmel", SpectralConfig(kind="logmel", n_mels=4, log="natural"))
        >>> mfcc = SpectralEncoder("mfcc", SpectralConfig(kind="mfcc", n_mels=8, n_mfcc=3))
        >>> enc = UtteranceEncoder("mels+mfcc", [mels, mfcc], Provenance("mels+mfcc", "handcrafted", "doctest"))
        >>> out = enc.encode([torch.zeros(3200), torch.zeros(1600)])
        >>> tuple(out.hidden.shape), tuple(out.pooled.shape), out.mask.tolist()
        ((2, 1, 7), (2, 7), [[True], [True]])
    """

    def __init__(self, name: str, parts: Sequence[Encoder], provenance: Provenance) -> None:
        if not parts:
            raise EncoderError(f"utterance encoder {name!r} needs at least one part")
        modalities = {p.modality for p in parts}
        if len(modalities) != 1:
            raise EncoderError(f"utterance encoder {name!r} mixes modalities {sorted(modalities)}")
        super().__init__(name, sum(int(p.output_dim) for p in parts), provenance)
        self.modality = parts[0].modality  # type: ignore[misc]  # instance-level: the parts' modality
        self.parts = nn.ModuleList(parts)
        self.part_names = [p.name for p in parts]
        self.part_dims = [int(p.output_dim) for p in parts]
        limits = [p.max_input for p in parts if p.max_input is not None]
        self.max_input = min(limits) if limits else None

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Each part's ``preprocess`` of the same inputs, keys prefixed ``p<i>.``.

        Args:
            inputs: Audio: 1-D 16 kHz waveforms; text: strings (as the parts take them).

        Returns:
            ``{"p0.<key>": ..., "p1.<key>": ...}``.
        """
        out: dict[str, Tensor] = {}
        for i, part in enumerate(self.parts):
            for key, value in part.preprocess(inputs).items():  # type: ignore[operator]
                out[f"p{i}.{key}"] = value
        return out

    def forward(self, **inputs: Tensor) -> EncoderOutput:
        """Encode with every part and concatenate their pooled vectors.

        Args:
            **inputs: The output of :meth:`preprocess`.

        Returns:
            ``hidden (B, 1, D)``, ``mask (B, 1)`` all True, ``pooled (B, D)`` with ``D = sum(part_dims)``.
        """
        pooled = []
        for i, part in enumerate(self.parts):
            prefix = f"p{i}."
            kwargs = {k[len(prefix) :]: v for k, v in inputs.items() if k.startswith(prefix)}
            if not kwargs:
                raise EncoderError(f"{self.name}: no inputs for part {i} ({self.part_names[i]}); call preprocess()")
            pooled.append(part(**kwargs).pooled.float())  # (B, D_i)
        vec = torch.cat(pooled, dim=-1)  # (B, D)
        mask = torch.ones(vec.shape[0], 1, dtype=torch.bool, device=vec.device)
        return EncoderOutput(hidden=vec.unsqueeze(1), mask=mask, pooled=vec)


@dataclass(frozen=True)
class _Composite:
    modality: Modality
    parts: tuple[tuple[str, dict[str, Any]], ...]
    description: str
    note: str = ""  # why this is (or is not) the paper's feature
    stand_in: bool = False  # the features stand in for the paper's, whatever weights run
    packaged: tuple[str, ...] = ()
    hf_id: str | None = None
    test_only: bool = False
    fine_tuned_in_paper: bool = False  # the paper fine-tunes the part on the corpus first (COSMIC): flag when not


_COMPOSITES: dict[str, _Composite] = {
    "roberta-large-last4": _Composite(
        "text",
        (("roberta-large", {"layers_concat": 4, "pooling": "cls"}),),
        "CM-RoBERTa text: roberta-large <s> of the last 4 layers concatenated (4096-d)",
        note="the paper fine-tunes roberta-large on MELD first (COSMIC recipe); un-fine-tuned weights differ",
        packaged=("mpnet-base", "minilm-l6"),
        hf_id="roberta-large",
        fine_tuned_in_paper=True,
    ),
    "compare+whisper-tiny.en": _Composite(
        "audio",
        (("compare", {}), ("openai/whisper-tiny.en", {})),
        "CM-RoBERTa audio stand-in: ComParE 2016 functionals (6373) ⊕ mean-pooled Whisper tiny.en (384)",
        note=(
            "stands in for emo_large (6552, not shipped by opensmile) ⊕ OpenL3-6144 (needs TensorFlow): "
            "ComParE 2016 functionals and a mean-pooled Whisper tiny.en encoder run instead"
        ),
        stand_in=True,
        packaged=("whisper-tiny.en-ct2",),
        hf_id="openai/whisper-tiny.en",
    ),
    "whisper-tiny.en-mean": _Composite(
        "audio",
        (("openai/whisper-tiny.en", {}),),
        "OpenL3 stand-in: Whisper tiny.en encoder mean-pooled over frames (384-d)",
        note="stands in for the mean-pooled OpenL3-6144 embedding (OpenL3 needs TensorFlow)",
        stand_in=True,
        packaged=("whisper-tiny.en-ct2",),
        hf_id="openai/whisper-tiny.en",
    ),
    "tiny-roberta-last2": _Composite(
        "text",
        (("tiny-roberta", {"layers_concat": 2, "pooling": "cls"}),),
        "TEST ONLY: tiny-roberta first token of its 2 layers (64-d)",
        test_only=True,
        fine_tuned_in_paper=True,  # the test double of roberta-large-last4
    ),
    "egemaps+tiny-whisper": _Composite(
        "audio",
        (("egemaps", {}), ("tiny-whisper", {})),
        "TEST ONLY: eGeMAPS functionals (88) ⊕ mean-pooled tiny random Whisper (32)",
        test_only=True,
    ),
}


def _build_utterance(spec: EncoderSpec, resolution: Resolution, **options: Any) -> UtteranceEncoder:
    checkpoint = options.pop("checkpoint", None)
    if options:
        unknown = ", ".join(sorted(options))
        raise TypeError(
            f"utterance encoder {spec.name!r} fixes its parts' settings; unknown option(s): {unknown} "
            "(it takes only checkpoint=: a fine-tuned encoder run for its pretrained part)"
        )
    comp = _COMPOSITES[spec.name]
    pretrained = [get_encoder_spec(name).pretrained for name, _ in comp.parts]
    if checkpoint is not None and sum(pretrained) != 1:
        raise EncoderError(
            f"utterance encoder {spec.name!r} has {sum(pretrained)} pretrained parts: checkpoint= needs one"
        )
    allow_random = resolution.resolved == "random"
    weights_dir = resolution.path if resolution.resolved == "local" and checkpoint is None else None
    parts: list[Encoder] = []
    with warnings.catch_warnings():
        if allow_random:  # create_encoder already warned for the composite
            warnings.simplefilter("ignore", RandomInitWarning)
        for (part_name, part_options), weighted in zip(comp.parts, pretrained, strict=True):
            extra = {"checkpoint": checkpoint} if weighted and checkpoint is not None else {}
            parts.append(
                create_encoder(
                    part_name,
                    frozen=True,
                    allow_random=allow_random,
                    weights_dir=weights_dir if weighted else None,
                    **part_options,
                    **extra,
                )
            )
    provs = [p.provenance for p in parts]
    weighted_provs = [p for p in provs if p.resolved != "handcrafted"]
    resolved = weighted_provs[0].resolved if weighted_provs else "handcrafted"
    notes, stand_in = _paper_notes(comp, spec, resolution, checkpoint)
    notes += [f"{p.name}: {n}" for p in provs for n in p.notes]
    blob = "|".join(f"{p.name}:{p.fingerprint}:{p.architecture}" for p in provs)
    provenance = Provenance(
        name=spec.name,
        resolved=resolved,
        source=" ⊕ ".join(f"{p.name} [{p.source}]" for p in provs),
        architecture=" ⊕ ".join(f"{p.name} pooled ({e.output_dim})" for p, e in zip(provs, parts, strict=True)),
        stand_in=stand_in or any(p.stand_in for p in provs),
        fingerprint=hashlib.sha256(f"utterance/v1|{blob}".encode()).hexdigest()[:16],
        notes=notes,
    )
    return UtteranceEncoder(spec.name, parts, provenance)


def _paper_notes(
    comp: _Composite, spec: EncoderSpec, resolution: Resolution, checkpoint: Any
) -> tuple[list[str], bool]:
    """Provenance notes and stand-in flag of a composite: un-fine-tuned weights are not the paper's features."""
    if checkpoint is not None:
        return [
            f"fine-tuned on the corpus first (COSMIC recipe): weights of the checkpoint {checkpoint}"
        ], comp.stand_in
    notes = [comp.note] if comp.note else []
    if not comp.fine_tuned_in_paper or resolution.resolved == "local":  # a user's folder: the documented fine-tuned
        return notes, comp.stand_in
    msg = (
        f"{spec.name}: NOT the paper's features: these weights were not fine-tuned on the corpus (the paper fine-tunes "
        "the text encoder on it first, COSMIC recipe); fine-tune one with a finetune_encoder run and pass it as "
        "encoders.text_options.checkpoint"
    )
    if not comp.test_only:
        warnings.warn(msg, UserWarning, stacklevel=4)
    return [msg, *notes], True


for _name, _comp in _COMPOSITES.items():
    register_encoder(
        EncoderSpec(
            name=_name,
            modality=_comp.modality,
            builder=_build_utterance,
            packaged=_comp.packaged,
            hf_id=_comp.hf_id,
            description=_comp.description,
            test_only=_comp.test_only,
            always_stand_in=_comp.stand_in,
            takes_checkpoint=True,
        )
    )
