"""Encoders with the weights of a fine-tuned emofuse checkpoint: ``create_encoder(name, checkpoint=RUN)``.

A ``finetuned_encoder`` run (``task: finetune_encoder``, :mod:`emofuse.models.finetuned_encoder`) trains a
registered encoder end to end on a corpus. Its checkpoint is then also an encoder: the COSMIC recipe that
CM-RoBERTa follows (specs/cm-roberta.md §2.2) fine-tunes the text encoder on the corpus first and extracts
features from its states. :func:`load_finetuned` rebuilds the encoder the checkpoint was fine-tuned from (same
registered name, weights folder and tokenizer), with the caller's options (``layer``, ``layers_concat``,
``pooling``, ...), and loads the fine-tuned weights into it::

    encoders:
      text: all-MiniLM-L6-v2
      text_options: {checkpoint: runs/meld-minilm}     # a run folder, a stage folder or a .safetensors file

The provenance then says ``resolved: local``, names the checkpoint, and its fingerprint hashes the fine-tuned
weights, so feature caches of different checkpoints never mix. A checkpoint is a ``.safetensors`` file, a folder
with ``best.safetensors``, or a run folder holding exactly one ``best.safetensors`` below it. This module reads
the checkpoint format of :mod:`emofuse.models.checkpoint` (safetensors, JSON document under the header key
``"emofuse"``) itself: encoders sit below models and never import them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from emofuse.encoders._registry import RandomInitWarning, create_encoder, get_encoder_spec
from emofuse.encoders.base import Encoder, EncoderError, Provenance, state_fingerprint

__all__ = ["FINETUNED_MODEL", "finetuned_checkpoint", "load_finetuned"]

#: Registered name of the model whose checkpoints are fine-tuned encoders.
FINETUNED_MODEL = "finetuned_encoder"
_PREFIX = "encoder."
_STUDENT_PREFIX = "branches.audio."  # an audio CMD student's branch (its copied front-end, blocks and norm)


def finetuned_checkpoint(path: str | Path) -> Path:
    """The checkpoint file at ``path``: the file, ``path/best.safetensors``, or the one ``best.safetensors`` below.

    Raises:
        EncoderError: Nothing there, or several candidates (listed: name one).
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise EncoderError(f"fine-tuned encoder checkpoint not found: {path}")
    if (path / "best.safetensors").is_file():
        return path / "best.safetensors"
    found = sorted(path.rglob("best.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise EncoderError(f"{path}: no best.safetensors below it (expected a finetune_encoder run folder)")
    listed = ", ".join(str(p.relative_to(path)) for p in found[:6])
    raise EncoderError(f"{path}: {len(found)} checkpoints below it ({listed}); name one of them")


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(document, source, encoder tensors)`` of a checkpoint whose weights form an encoder.

    ``source`` says which encoder to rebuild: ``encoder`` (registered name), ``modality``, ``weights_dir``,
    ``encoder_options`` and ``provenance`` (the stored provenance of the weights it started from). The tensors are
    named as that encoder's own state dict (``model.*``).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            doc = json.loads((f.metadata() or {}).get("emofuse", "{}"))
            wanted = _PREFIX if doc.get("model_name") == FINETUNED_MODEL else _STUDENT_PREFIX  # the encoder's part only
            keys = [k for k in f.keys() if k.startswith(wanted)]  # noqa: SIM118 - safe_open has no __iter__
            tensors = {k: f.get_tensor(k) for k in keys}
    except (OSError, ValueError) as e:
        raise EncoderError(f"{path}: not a readable emofuse checkpoint ({e})") from None
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise EncoderError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    cfg = doc.get("model_config")
    if not isinstance(cfg, dict):
        raise EncoderError(f"{path}: not an emofuse model checkpoint (no model_config)")
    if doc.get("model_name") == FINETUNED_MODEL:
        state = {k[len(_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_PREFIX)}
        if not any(k.startswith("model.") for k in state):
            raise EncoderError(f"{path}: holds no encoder weights ({_PREFIX}model.*)")
        source = {
            "encoder": cfg.get("encoder"),
            "modality": cfg.get("modality"),
            "weights_dir": cfg.get("weights_dir"),
            "encoder_options": cfg.get("encoder_options") or {},
            "provenance": (doc.get("encoders") or {}).get(f"model.{cfg.get('modality')}") or {},
            "verb": "fine-tuned end to end",
        }
        return doc, source, state
    if int(cfg.get("teacher_layers") or 0) > 0 and cfg.get("modalities") == ["audio"]:
        return doc, *_whisper_student(path, doc, cfg, tensors)
    raise EncoderError(
        f"{path}: a {doc.get('model_name')!r} checkpoint, not an encoder (a {FINETUNED_MODEL} checkpoint, made by a "
        "finetune_encoder stage, or an audio CMD student with teacher_layers > 0)"
    )


def _whisper_student(
    path: Path, doc: dict[str, Any], cfg: dict[str, Any], tensors: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A CMD audio student whose blocks are Whisper layers (``teacher_layers = K``), as a K-layer Whisper encoder.

    Its copied front-end, blocks and output norm map back onto the teacher's names (the block key bias, which
    Whisper lacks, is dropped: it shifts every attention score of a query equally, so it never changes the output).
    """
    from emofuse.encoders.whisper import BLOCK_KEYS

    prefix, k = _STUDENT_PREFIX, int(cfg["teacher_layers"])
    state: dict[str, Any] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if rest.startswith("embedding.module."):
            state["model." + rest[len("embedding.module.") :]] = value
        elif rest.startswith("out_norm."):
            state["model.layer_norm." + rest.split(".", 1)[1]] = value
        elif rest.startswith("self_blocks."):
            _, i, part = rest.split(".", 2)
            block_part, kind = part.rsplit(".", 1)
            if block_part not in BLOCK_KEYS:
                raise EncoderError(f"{path}: unexpected student block weight {name!r}")
            if (block_part, kind) != ("attn.k_proj", "bias"):
                state[f"model.layers.{i}.{BLOCK_KEYS[block_part]}.{kind}"] = value
    if "model.conv1.weight" not in state or "model.layer_norm.weight" not in state:
        raise EncoderError(f"{path}: not a Whisper-teacher student (no copied conv front-end / output norm)")
    source = {
        "encoder": cfg.get("audio_teacher"),
        "modality": "audio",
        "weights_dir": None,
        "encoder_options": {"num_layers": k},
        "provenance": (doc.get("encoders") or {}).get("embedding.audio") or {},
        "verb": f"a CMD student (first {k} teacher layers) trained",
    }
    return source, state


def load_finetuned(
    name: str,
    checkpoint: str | Path,
    *,
    layer: int | str | None = None,
    frozen: bool = True,
    allow_random: bool = False,
    **options: Any,
) -> Encoder:
    """The encoder a ``finetuned_encoder`` checkpoint fine-tuned, with its fine-tuned weights.

    Args:
        name: The registered name asked for (recorded; when it differs from the checkpoint's encoder, the
            fine-tuned encoder stands in for it and the provenance says so).
        checkpoint: A ``.safetensors`` file, a stage folder or a run folder (see :func:`finetuned_checkpoint`).
        layer: Hidden layer (``None``: last), an index, or ``"weighted"``.
        frozen: Freeze the parameters (feature extraction).
        allow_random: Passed on when rebuilding the base encoder (its weights are replaced anyway; the tokenizer
            must be the one fine-tuning used, which the stored provenance checks).
        **options: Encoder options over the checkpoint's (``layers_concat``, ``pooling``, ``max_length``, ...).

    Raises:
        EncoderError: Not a fine-tuned encoder checkpoint, or its weights do not fit the rebuilt encoder.
    """
    path = finetuned_checkpoint(checkpoint)
    doc, source, state = _read(path)
    base_name = str(source["encoder"])
    modality = source["modality"]
    wanted = get_encoder_spec(name).modality
    if modality != wanted:
        raise EncoderError(f"{path}: holds a fine-tuned {modality} encoder ({base_name}); {name!r} is {wanted}")
    stored = source["provenance"]
    trained_random = stored.get("resolved") == "random"
    with warnings.catch_warnings():
        if trained_random:  # fine-tuned from random init (tests): the same fallback tokenizer, no new warning
            warnings.simplefilter("ignore", RandomInitWarning)
        enc = create_encoder(
            base_name,
            layer=layer,
            frozen=frozen,
            weights_dir=source["weights_dir"],
            allow_random=allow_random or trained_random,
            **{**source["encoder_options"], **options},
        )
    base = enc.provenance
    if stored and (stored.get("resolved"), stored.get("architecture")) != (base.resolved, base.architecture):
        warnings.warn(
            f"{path}: {base_name!r} was fine-tuned from weights resolved as {stored.get('resolved')} "
            f"({stored.get('architecture')}), here it resolves as {base.resolved} ({base.architecture}); "
            "its tokenizer / preprocessing may differ",
            UserWarning,
            stacklevel=2,
        )
    model = getattr(enc, "model", None)
    if model is None:
        raise EncoderError(f"{path}: encoder {base_name!r} has no network to load fine-tuned weights into")
    own = enc.state_dict()
    # the network exactly; a learned layer weighting too when both have one (else the layer asked for is used)
    state = {k: v for k, v in state.items() if k.startswith("model.") or k in own}
    try:
        missing, unexpected = enc.load_state_dict(state, strict=False)
        bad = [k for k in [*missing, *unexpected] if k.startswith("model.")]
        if bad:
            raise RuntimeError(f"mismatched keys {bad[:5]}")
    except RuntimeError as e:
        raise EncoderError(f"{path}: fine-tuned weights do not fit encoder {base_name!r}: {e}") from None
    enc.freeze(frozen)
    task = doc.get("task") or {}
    how = f"{task.get('name', 'finetune_encoder')} stage {task.get('stage', '?')}"
    if isinstance(doc.get("score"), (int, float)):
        how += f", {doc.get('monitor')} = {doc['score']:.4g} at epoch {doc.get('epoch')}"
    notes = [f"{source['verb']} by emofuse ({how}; classes {doc.get('classes')}) from {base_name} [{base.source}]"]
    if name != base_name:
        notes.insert(0, f"the fine-tuned {base_name!r} stands in for {name!r}")
    enc.name = name
    enc.provenance = Provenance(
        name=name,
        resolved="local",
        source=f"fine-tuned checkpoint {path}",
        architecture=base.architecture,
        stand_in=base.stand_in or name != base_name,
        fingerprint=state_fingerprint(enc, extra=f"finetuned|{base.fingerprint}|{sorted(options.items())}"),
        notes=notes + base.notes,
    )
    return enc
