"""``emofuse analyze``: modality dominance (Table 6) and token importance (Table 7) of one trained CMD run.

The argument is a run folder written by ``emofuse train`` (``RUN_DIR``; ``--fold``/``--seed`` pick the run,
default the first finished one), one run's ``<fold>/seed<k>`` folder, a stage folder or a ``.safetensors``
checkpoint. With a run, its ``config.yaml`` says how the inputs were built (encoders, silence trimming, crop);
a bare checkpoint without a ``config.yaml`` in its folder or the two above uses its teachers' ``preprocess``
(no trimming, no crop). See :mod:`emofuse.evaluation.analysis` for the gradients.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from emofuse.cli._common import console, err_console, handle_errors, parse_device

__all__ = ["analyze"]

_MODALITIES = ("audio", "text")


def _resolve(path: Path, fold: str | None, seed: int | None) -> tuple[Path, Path | None, str | None]:
    """``(checkpoint, config.yaml or None, fold name or None)`` of the run / checkpoint ``path`` points at."""
    from emofuse.models.checkpoint import find_checkpoint
    from emofuse.runs import Run, RunDir, find_config

    one = Run(path)
    info = one.done_info() or {}
    if "checkpoint" in info:  # one run's <fold>/seed<k> folder (a stage's DONE names no checkpoint)
        ckpt = one.path / str(info["checkpoint"])
        return ckpt, find_config(ckpt), one.fold
    if RunDir(path).is_run_folder() and not list(path.glob("*.safetensors")):
        runs = RunDir(path).finished()
        picked = [r for r in runs if (fold is None or r.fold == fold) and (seed is None or r.seed == seed)]
        if not picked:
            have = ", ".join(f"{r.fold}/seed{r.seed}" for r in runs) or "none"
            raise FileNotFoundError(f"{path}: no finished run matches --fold {fold} --seed {seed} (finished: {have})")
        ckpt = picked[0].path / str((picked[0].done_info() or {}).get("checkpoint", ""))
        return ckpt, find_config(ckpt), picked[0].fold
    ckpt = find_checkpoint(path)
    return ckpt, find_config(ckpt), fold


def _dataset(cfg: Any, model: Any, meta: dict[str, Any], records: list[Any], classes: list[str], manifest: Path) -> Any:
    """The dataset the run was tested on (its config), or the model's teachers' preprocessing."""
    if cfg is not None:
        from emofuse.training.components import DefaultComponents

        cfg = cfg.model_copy(deep=True)
        cfg.data.manifest = manifest.resolve()  # relative audio paths are relative to the analysed manifest
        stage = cfg.resolved_stages()[-1]
        return DefaultComponents(progress=False).dataset(cfg, stage, model, records, classes, "test")
    from emofuse.encoders import create_encoder
    from emofuse.pipeline import MultimodalDataset

    encoders = {}
    for m in _MODALITIES:
        name = model.config.get(f"{m}_teacher")
        if name is None:
            raise ValueError(f"{model.model_name!r} names no {m} teacher; pass a run folder (its config builds inputs)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoders[m] = create_encoder(str(name), frozen=True, allow_random=True)
        trained = (meta.get("encoders") or {}).get(m) or {}
        here = encoders[m].provenance.to_dict()
        if trained.get("fingerprint") and trained["fingerprint"] != here.get("fingerprint"):
            err_console.print(
                f"warning: {m} encoder {name!r} resolves to {here.get('source')!r} here, not what training used "
                f"({trained.get('source')!r}); its preprocessing (tokenizer) may differ",
                highlight=False,
                markup=False,
            )
    return MultimodalDataset(
        records, classes, audio_encoder=encoders["audio"], text_encoder=encoders["text"], root=manifest.parent
    )


def _test_ids(cfg: Any, fold: str | None) -> set[str]:
    """Test ids of the run's fold, recomputed from its own manifest and protocol."""
    from emofuse.data.manifest import read_manifest
    from emofuse.training.rundir import resolve_classes, resolve_folds

    _, kept = resolve_classes(cfg, read_manifest(cfg.data.manifest))
    folds = [f for f in resolve_folds(cfg, kept) if fold is None or f.name == fold]
    if not folds:
        raise ValueError(f"the run's protocol has no fold {fold!r}")
    return set(folds[0].test)


def _same_file(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


@handle_errors
def analyze(
    run_dir_or_checkpoint: Path = typer.Argument(
        ..., help="RUN_DIR, a run's <fold>/seed<k> folder, a stage folder or a .safetensors checkpoint."
    ),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="Prepared manifest to analyse (default: the run's own; required for a bare checkpoint).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for dominance.json/.md, token_importance.html/.json."),
    fold: str | None = typer.Option(None, "--fold", help="Fold of RUN_DIR to analyse (default: the first)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of RUN_DIR to analyse (default: the first)."),
    max_utterances: int | None = typer.Option(
        None, "--max-utterances", min=1, help="Analyse only the first N utterances (manifest order)."
    ),
    split: str = typer.Option(
        "auto",
        "--split",
        help="test: the run's fold test split (a bare checkpoint: records with split=test); "
        "all: every labelled record; auto: test for the run's own manifest, else all.",
    ),
    method: str = typer.Option("grad_x_input", "--method", help="Token score: grad_x_input, grad_cam or grad_norm."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Utterances per forward/backward pass."),
    html_per_class: int = typer.Option(10, "--html-per-class", min=0, help="Utterances per class in the HTML."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no table."),
) -> None:
    """Which modality's logit gradient dominates each test utterance, and which tokens matter (CMD §5.4–5.5)."""
    from emofuse.config import load_config
    from emofuse.data.manifest import read_manifest
    from emofuse.evaluation import (
        dominance_summary,
        dominance_table_markdown,
        modality_dominance,
        render_token_importance_html,
        token_importance,
    )
    from emofuse.models.checkpoint import load_checkpoint
    from emofuse.pipeline.dataset import DatasetItemError
    from emofuse.utils.io import atomic_write, atomic_write_json
    from emofuse.utils.progress import track

    if split not in ("auto", "test", "all"):
        raise ValueError(f"--split must be auto, test or all, got {split!r}")
    if method not in ("grad_x_input", "grad_cam", "grad_norm"):
        raise ValueError(f"--method must be grad_x_input, grad_cam or grad_norm, got {method!r}")
    ckpt, cfg_path, run_fold = _resolve(run_dir_or_checkpoint, fold, seed)
    cfg = load_config(cfg_path) if cfg_path is not None else None
    run_manifest = Path(cfg.data.manifest) if cfg is not None and cfg.data.manifest is not None else None
    manifest = manifest or run_manifest
    if manifest is None:
        raise ValueError(f"{ckpt} has no run config.yaml nearby: pass --manifest")
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    dev = parse_device(device)
    model, meta = load_checkpoint(ckpt, map_location=dev)
    if set(model.modalities) != set(_MODALITIES) or not model.config.get("with_head", True):
        raise ValueError(f"{ckpt}: the analyses need a fine-tuned audio+text model, got {model.model_name!r}")
    records = [r for r in read_manifest(manifest) if r.label is not None]
    if cfg is not None:  # the run's transcripts (data.text_field: gold text or ASR)
        from emofuse.training.rundir import text_inputs

        records = text_inputs(records, cfg.data, manifest)
    found = {str(r.label) for r in records}
    classes = [str(c) for c in meta.get("classes") or sorted(found)]
    unknown = sorted(found - set(classes))
    if unknown:
        raise ValueError(f"{manifest} has labels {unknown} the model was not trained on (its classes: {classes})")
    use_test = split == "test" or (split == "auto" and cfg is not None and _same_file(manifest, run_manifest))
    if use_test and cfg is not None:
        test = _test_ids(cfg, meta.get("fold") or run_fold)
        records = [r for r in records if r.id in test]
    elif use_test:
        records = [r for r in records if r.split == "test"]
    records = records[:max_utterances] if max_utterances else records
    if not records:
        raise ValueError(f"{manifest}: no labelled utterances to analyse (split: {'test' if use_test else 'all'})")

    dataset = _dataset(cfg, model, meta, records, classes, manifest)
    tokenizer = getattr(dataset.text_encoder, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("the text inputs have no tokenizer (cached features?): token importance needs raw text")
    texts = {}
    for r in records:
        try:
            texts[r.id] = dataset.text_of(r)
        except DatasetItemError:
            pass
    dominance: list[dict[str, Any]] = []
    tokens: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    chunks = [range(i, min(i + batch_size, len(records))) for i in range(0, len(records), batch_size)]
    for chunk in track(chunks, "analysing", disable=quiet):
        items = []
        for i in chunk:
            try:
                items.append(dataset[i])
            except DatasetItemError as e:
                skipped[e.id] = e.reason
        if not items:
            continue
        batch = dataset.collate(items)
        dominance += modality_dominance(model, [batch], tokenizer, texts)["records"]
        tokens += token_importance(model, batch, tokenizer, classes, method)
    for rec in dominance:
        rec["label"], rec["pred"] = classes[rec["label"]], classes[rec["pred"]]
    summary = dominance_summary(dominance)
    source = {
        "checkpoint": str(ckpt),
        "model": meta.get("model_name"),
        "fold": meta.get("fold") or run_fold,
        "seed": meta.get("seed"),
        "manifest": str(manifest),
        "split": "test" if use_test else "all",
        "n_utterances": len(records),
        "skipped": skipped,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "dominance.json", {**source, "classes": classes, "summary": summary, "records": dominance})
    data = cfg.name if cfg is not None else manifest.name.split(".")[0]
    md = f"# Modality dominance: {data}\n\n{source['model']} from `{ckpt}`, {len(dominance)} utterances.\n\n"
    md += dominance_table_markdown(summary, data)
    if "words" in summary:
        md += "\n" + dominance_table_markdown(summary, data, unit="words")
    atomic_write(out / "dominance.md", md)
    atomic_write_json(out / "token_importance.json", {**source, "classes": classes, "method": method, "items": tokens})
    shown: list[dict[str, Any]] = []
    for c in classes:
        shown += [it for it in tokens if it["label"] == c][:html_per_class]
    run = f", {source['fold']}/seed{source['seed']}" if source["fold"] is not None else ""
    title = f"Token importance: {data} ({source['model']}{run})"
    atomic_write(out / "token_importance.html", render_token_importance_html(shown, title))
    if not quiet:
        console.print(dominance_table_markdown(summary, data), highlight=False, markup=False)
    if skipped:
        err_console.print(f"skipped {len(skipped)} unreadable utterance(s), listed in dominance.json", highlight=False)
    err_console.print(f"wrote dominance.json, dominance.md, token_importance.json/.html to {out}", highlight=False)
