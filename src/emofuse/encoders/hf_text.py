"""Hugging Face text encoders (BERT, RoBERTa, MiniLM, MPNet) behind the :class:`~emofuse.encoders.Encoder` interface.

Registered names (architecture; packaged stand-ins tried, in order, when no local or cached weights exist):

* ``bert-base-uncased`` (``BertModel`` L12/H768): ``minilm-l6`` (a stand-in).
* ``roberta-base`` (``RobertaModel`` L12/H768) and ``roberta-large`` (L24/H1024): ``mpnet-base``, then
  ``minilm-l6`` (stand-ins).
* ``all-MiniLM-L6-v2`` (``BertModel`` L6/H384): ``minilm-l6``, which *is* this model (not a stand-in).
* ``all-mpnet-base-v2`` (``MPNetModel`` L12/H768): ``mpnet-base`` (itself), then ``minilm-l6`` (a stand-in).
* ``tiny-bert``, ``tiny-roberta`` (L2/H32): TEST ONLY. Always random init (seed 0) with a built-in tokenizer.

Stand-ins. PyPI carries no BERT-base or RoBERTa weights (specs/offline-resources.md). A pretrained sentence
encoder with another architecture is still a far better feature extractor than random weights, so RoBERTa names
fall back to MPNet-base (same width and depth as ``roberta-base``) and then to MiniLM-L6, like the BERT names.
Whenever the weights are not the named model, ``provenance.stand_in`` is True and a note says what runs (including
that the tokenizer is then uncased WordPiece, not RoBERTa's byte-level BPE), so results are never mistaken for the
paper's. Widths differ (384 for MiniLM): downstream code must read :attr:`output_dim`.

Random init (``allow_random=True``) builds the named architecture from its config written here (no download).
Without the real tokenizer it uses the uncased BERT WordPiece tokenizer of the packaged MiniLM (exactly
``bert-base-uncased``'s vocabulary), or, when that is not installed either, a built-in character-level WordPiece
vocabulary. For RoBERTa/MPNet the config's pad/bos/eos ids are then set to that tokenizer's ``[PAD]``/``[CLS]``/
``[SEP]``; the embedding table keeps the architecture's vocabulary size, so parameter counts match the paper.

Outputs: ``hidden`` is the selected hidden layer (:class:`~emofuse.layers.pooling.LayerSelector`: last, an index
into ``hidden_states`` with 0 = embeddings, or a learned weighted sum), zeroed at padding; ``mask`` is the
attention mask; ``pooled`` is the masked mean (``pooling="mean"``, as sentence-transformers does) or the first
token (``pooling="cls"``). ``layers_concat=k`` concatenates the last ``k`` layers (``output_dim = k * hidden``)
and pools the first token: CM-RoBERTa's 4096-d ``<s>`` feature (specs/cm-roberta.md, B3). Texts longer than
:attr:`max_input` tokens are truncated with a warning, and a note is added to the provenance.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from emofuse.encoders._hf import architecture, build_random, load_pretrained, read_config
from emofuse.encoders._registry import EncoderSpec, Resolution, locate_packaged, register_encoder
from emofuse.encoders.base import Encoder, EncoderError, EncoderOutput, Provenance, state_fingerprint
from emofuse.layers.pooling import LayerSelector, masked_mean

__all__ = ["BLOCK_KEYS", "HFTextEncoder", "char_tokenizer", "text_config"]

#: Parameter names of a post-LN emofuse block (:class:`~emofuse.layers.transformer.PostLNBlock`) and of the
#: BERT-style layer (``model.encoder.layer[i]``) they copy.
BLOCK_KEYS = {
    "attn.q_proj": "attention.self.query",
    "attn.k_proj": "attention.self.key",
    "attn.v_proj": "attention.self.value",
    "attn.out_proj": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "norm2": "output.LayerNorm",
}

_FAMILIES = {"bert": "BertModel", "roberta": "RobertaModel", "mpnet": "MPNetModel"}
_POSITION_OFFSET = {"bert": 0, "roberta": 2, "mpnet": 2}  # RoBERTa/MPNet positions start after padding_idx


@dataclass(frozen=True)
class _TextArch:
    family: str
    config: dict[str, Any]
    packaged: tuple[str, ...] = ()
    native: str | None = None  # the packaged provider that *is* this model
    hf_id: str | None = None
    tiny: bool = False


_ROBERTA = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_ARCHS: dict[str, _TextArch] = {
    "bert-base-uncased": _TextArch("bert", {}, ("minilm-l6",)),
    "roberta-base": _TextArch("roberta", _ROBERTA, ("mpnet-base", "minilm-l6")),
    "roberta-large": _TextArch(
        "roberta",
        {
            **_ROBERTA,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
        },
        ("mpnet-base", "minilm-l6"),
    ),
    "all-MiniLM-L6-v2": _TextArch(
        "bert",
        dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
        ("minilm-l6",),
        native="minilm-l6",
        hf_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
    "all-mpnet-base-v2": _TextArch(
        "mpnet",
        dict(max_position_embeddings=514),
        ("mpnet-base", "minilm-l6"),
        native="mpnet-base",
        hf_id="sentence-transformers/all-mpnet-base-v2",
    ),
    "tiny-bert": _TextArch("bert", {**_TINY, "max_position_embeddings": 64}, tiny=True),
    "tiny-roberta": _TextArch(
        "roberta", {**_TINY, "max_position_embeddings": 66, "type_vocab_size": 1, "layer_norm_eps": 1e-5}, tiny=True
    ),
}


def _model_class(family: str) -> type[nn.Module]:
    import transformers

    return getattr(transformers, _FAMILIES[family])


def text_config(name: str) -> Any:
    """The ``transformers`` config of a registered text architecture, written in code (no download).

    Args:
        name: A name registered by this module, e.g. ``bert-base-uncased``.
    """
    import transformers

    arch = _ARCHS[name]
    cls = getattr(transformers, _FAMILIES[arch.family].replace("Model", "Config"))
    return cls(**arch.config)


def char_tokenizer(style: str = "bert", model_max_length: int = 512) -> Any:
    """A built-in uncased WordPiece tokenizer over characters (no files): for tests and random-init fallbacks.

    Args:
        style: ``"bert"`` (``[CLS] x [SEP]``, pad id 0) or ``"roberta"`` (``<s> x </s>``, pad id 1).
        model_max_length: Longest sequence, special tokens included.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if style == "bert":
        cls, pad, sep, unk, mask = "[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"
        specials = [pad, unk, cls, sep, mask]
    elif style == "roberta":
        cls, pad, sep, unk, mask = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
        specials = [cls, pad, sep, unk, mask]
    else:
        raise ValueError(f"style must be 'bert' or 'roberta', got {style!r}")
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    words = "the a i you it is not and to of that this what was so oh my no yes okay".split()
    tokens = dict.fromkeys([*specials, *chars, *".,!?'\"-:;()", *(f"##{c}" for c in chars), *words])  # ordered, unique
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=200))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B {sep}", special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=unk,
        pad_token=pad,
        cls_token=cls,
        sep_token=sep,
        mask_token=mask,
        bos_token=cls,
        eos_token=sep,
        model_max_length=model_max_length,
    )


class HFTextEncoder(Encoder):
    """A ``transformers`` text model (+ its tokenizer) as an :class:`~emofuse.encoders.Encoder`.

    Args:
        model: ``BertModel``, ``RobertaModel`` or ``MPNetModel`` (anything returning ``hidden_states``).
        tokenizer: Its tokenizer.
        name: Registered name.
        provenance: Which weights run.
        layer: ``None`` = last layer, an index into ``hidden_states`` (0 = embeddings), or ``-1`` / ``"weighted"``.
        pooling: ``"mean"`` (masked mean) or ``"cls"`` (first token). Default: ``"cls"`` with
            ``layers_concat``, else ``"mean"``.
        layers_concat: Concatenate the last ``k`` layers instead of selecting one (``output_dim = k * hidden``).
        max_length: Truncation length in tokens (default and maximum: :attr:`max_input`).

    Example:
        >>> import warnings
        >>> from emofuse.encoders import create_encoder
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     enc = create_encoder("tiny-bert", allow_random=True)
        >>> out = enc.encode(["I can't believe it!", "okay"])
        >>> out.hidden.shape[0], out.mask.dtype, out.pooled.shape
        (2, torch.bool, torch.Size([2, 32]))
    """

    modality = "text"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        provenance: Provenance,
        layer: int | str | None = None,
        pooling: str | None = None,
        layers_concat: int | None = None,
        max_length: int | None = None,
    ) -> None:
        config: Any = model.config
        if layers_concat is not None:
            if layer is not None:
                raise ValueError("choose either layer= or layers_concat=, not both")
            if not 1 <= layers_concat <= config.num_hidden_layers:
                raise ValueError(f"layers_concat must be in 1..{config.num_hidden_layers}, got {layers_concat}")
        pooling = pooling or ("cls" if layers_concat else "mean")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        super().__init__(name, config.hidden_size * (layers_concat or 1), provenance)
        self.model: Any = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.layers_concat = layers_concat
        self.selector = None if layers_concat else LayerSelector(config.num_hidden_layers + 1, layer)
        limit = config.max_position_embeddings - _POSITION_OFFSET.get(config.model_type, 0)
        tok_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < limit:
            limit = tok_max
        if max_length is not None and not 2 < max_length <= limit:
            raise ValueError(f"max_length must be in 3..{limit} for {name!r}, got {max_length}")
        self.max_length: int = max_length or limit
        self.max_input = self.max_length
        self._takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
        self._truncation_noted = False
        self.train()

    def preprocess(self, inputs: Sequence[str]) -> dict[str, Tensor]:
        """Tokenise a batch of transcripts (padded to the longest, truncated at :attr:`max_input` tokens).

        Args:
            inputs: ``B`` non-empty strings.

        Returns:
            ``input_ids`` and ``attention_mask`` ``(B, L)`` (plus ``token_type_ids`` for BERT).

        Raises:
            EncoderError: An item is not a string or is empty (its index is named).
        """
        if isinstance(inputs, str):
            raise EncoderError(f"encoder {self.name!r} takes a batch (list) of strings, got a single string")
        texts = list(inputs)
        if not texts:
            raise EncoderError(f"encoder {self.name!r} got an empty batch")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise EncoderError(f"transcript {i} is a {type(t).__name__}, not a string")
            if not t.strip():
                raise EncoderError(f"transcript {i} is empty: encoder {self.name!r} cannot encode an empty text")
        n = self.max_length
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        long = [i for i, k in enumerate(lengths) if k > n]
        if long:
            msg = f"inputs longer than {n} tokens are truncated to their first {n} tokens"
            warnings.warn(f"encoder {self.name!r}: {msg} (items {long[:10]})", UserWarning, stacklevel=3)
            if not self._truncation_noted:
                self.provenance.notes.append(msg)
                self._truncation_noted = True
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=n, return_tensors="pt")
        keys = ("input_ids", "attention_mask") + (("token_type_ids",) if self._takes_token_types else ())
        return {k: batch[k] for k in keys if k in batch}

    def forward(  # type: ignore[override]
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> EncoderOutput:
        """Encode token ids.

        Args:
            input_ids: ``(B, L)``.
            attention_mask: ``(B, L)``, 1 at real tokens (all ones when omitted).
            token_type_ids: ``(B, L)`` segment ids (BERT only; ignored by models without them).

        Returns:
            ``hidden (B, L, output_dim)`` zeroed at padding, ``mask (B, L)`` bool, ``pooled (B, output_dim)``.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs: dict[str, Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        states = self.model(**kwargs, output_hidden_states=True).hidden_states  # L+1 x (B, L, H)
        if self.selector is None:
            hidden = torch.cat(states[-int(self.layers_concat or 1) :], dim=-1)  # (B, L, k*H)
        else:
            hidden = self.selector(states)  # (B, L, H)
        mask = attention_mask.bool()
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, mask)
        return EncoderOutput(hidden=hidden, mask=mask, pooled=pooled)

    def input_embedding(self) -> nn.Module:
        """The model's embedding layer (word, position (, segment) embeddings + LayerNorm); shared, not copied."""
        return self.model.embeddings


def _fallback_tokenizer(arch: _TextArch, max_length: int) -> tuple[Any, str]:
    """Tokenizer for a random-init model: packaged MiniLM WordPiece, else the built-in character vocabulary."""
    if arch.tiny:
        return char_tokenizer(arch.family if arch.family == "roberta" else "bert", max_length), "built-in tokenizer"
    from transformers import AutoTokenizer

    path = locate_packaged("minilm-l6")
    if path is not None:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True), (
            f"tokenizer: uncased BERT WordPiece from the packaged MiniLM ({path})"
        )
    return char_tokenizer("bert", max_length), "tokenizer: built-in character-level WordPiece (no real tokenizer)"


def _stand_in_note(name: str, config: Any, family: str, source: str) -> str:
    note = (
        f"{source} ({_FAMILIES[config.model_type]} L{config.num_hidden_layers}/H{config.hidden_size}) stands in for "
        f"{name!r}: results are not comparable to the paper's"
    )
    if family == "roberta" and config.model_type != "roberta":
        note += "; its tokenizer is uncased WordPiece, not RoBERTa's cased byte-level BPE"
    return note


def _build_text(spec: EncoderSpec, resolution: Resolution, **options: Any) -> HFTextEncoder:
    encoder_options = {k: options[k] for k in ("layer", "pooling", "layers_concat", "max_length") if k in options}
    unknown = set(options) - set(encoder_options)
    if unknown:
        raise TypeError(f"unknown option(s) for text encoder {spec.name!r}: {', '.join(sorted(unknown))}")
    arch = _ARCHS[spec.name]
    ref = text_config(spec.name)
    notes: list[str] = []
    if resolution.resolved == "random":
        offset = _POSITION_OFFSET[arch.family]
        tokenizer, tok_note = _fallback_tokenizer(arch, ref.max_position_embeddings - offset)
        if arch.family != "bert" and not arch.tiny:  # a WordPiece tokenizer drives a RoBERTa/MPNet table
            ref.pad_token_id, ref.bos_token_id = tokenizer.pad_token_id, tokenizer.cls_token_id
            ref.eos_token_id = tokenizer.sep_token_id
        if arch.tiny:
            ref.vocab_size = len(tokenizer)
            ref.pad_token_id = tokenizer.pad_token_id
        model = build_random(_model_class(arch.family), ref, seed=0 if arch.tiny else None, add_pooling_layer=False)
        source = "tiny test config, random init (seed 0)" if arch.tiny else f"random init from the {spec.name} config"
        notes.append("TEST-ONLY encoder: tiny random model" if arch.tiny else tok_note)
        stand_in = False
    else:
        assert resolution.path is not None
        path = resolution.path
        packaged = resolution.packaged
        expected = _FAMILIES if packaged else {arch.family: _FAMILIES[arch.family]}
        config = read_config(path, spec.name, expected)
        model, notes = load_pretrained(_model_class(config.model_type), path, spec.name, add_pooling_layer=False)
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - missing or broken tokenizer files
            raise EncoderError(f"weights folder {path} for encoder {spec.name!r} has no usable tokenizer ({e})") from e
        source = resolution.source
        if packaged:
            stand_in = packaged != arch.native
        else:
            same = (config.model_type, config.hidden_size, config.num_hidden_layers)
            stand_in = same != (arch.family, ref.hidden_size, ref.num_hidden_layers)
        if stand_in:
            notes.insert(0, _stand_in_note(spec.name, config, arch.family, packaged or str(path)))
    extra = f"{tokenizer.name_or_path}|{sorted(encoder_options.items())}"
    provenance = Provenance(
        name=spec.name,
        resolved=resolution.resolved,
        source=source,
        architecture=architecture(model),
        stand_in=stand_in,
        fingerprint=state_fingerprint(model, extra=extra),
        notes=notes,
    )
    return HFTextEncoder(model, tokenizer, name=spec.name, provenance=provenance, **encoder_options)


def _describe(name: str, arch: _TextArch) -> str:
    if arch.tiny:
        return f"TEST ONLY: tiny random {_FAMILIES[arch.family]} (L2/H32, built-in tokenizer)"
    return f"{_FAMILIES[arch.family]} {name}; packaged fallbacks: {', '.join(arch.packaged)}"


def _register() -> None:
    for name, arch in _ARCHS.items():
        register_encoder(
            EncoderSpec(
                name=name,
                modality="text",
                builder=_build_text,
                packaged=arch.packaged,
                hf_id=arch.hf_id,
                description=_describe(name, arch),
                test_only=arch.tiny,
                native=(arch.native,) if arch.native else (),
            )
        )


_register()
