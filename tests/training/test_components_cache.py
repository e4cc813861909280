"""The runner's feature caches: a cache extracted for fewer utterances is extended, not a mid-run error."""

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.training.components import DefaultComponents


def _recs(n: int) -> list[Utterance]:
    words = ["happy", "sad", "day", "night"]
    return [Utterance(id=f"u{i}", text=f"{words[i % 4]} {words[(i + 1) % 4]}", label="happy") for i in range(n)]


def test_a_grown_manifest_extends_the_cache_and_reuses_what_is_stored(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("happy 1 0 0\nsad 0 1 0\nday 0 0 1\nnight 1 1 1\n")
    manifest = tmp_path / "m.jsonl"
    write_manifest(_recs(6), manifest)
    cfg = load_config(
        None, [f"data.manifest={manifest}", "encoders.text=glove", f"encoders.text_options={{path: {glove}}}"]
    )

    c = DefaultComponents(progress=False)
    small = c.store(cfg, c.encoder(cfg, "text", "glove"), _recs(2))  # e.g. extracted for two speakers first
    assert len(small) == 2 and "u5" not in small

    c = DefaultComponents(progress=False)  # a later experiment on the whole manifest, same cache folder
    big = c.store(cfg, c.encoder(cfg, "text", "glove"), _recs(6))
    assert big.path == small.path and len(big) == 6
    assert big.meta["counts"]["reused"] == 2 and big.meta["counts"]["computed"] == 4
    assert big.get("u5").tolist() == [[0.0, 1, 0], [0, 0, 1]]  # "sad day"

    c = DefaultComponents(progress=False)  # nothing missing: the cache is opened as it is, not rewritten
    again = c.store(cfg, c.encoder(cfg, "text", "glove"), _recs(3))
    assert len(again) == 6 and again.meta["counts"]["computed"] == 4
