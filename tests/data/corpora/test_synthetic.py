import hashlib
import json
import re
import time
from collections import Counter, defaultdict

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from emofuse.data.audio import load_audio, trim_silence  # noqa: E402
from emofuse.data.corpora import get_recipe  # noqa: E402
from emofuse.data.corpora import synthetic as syn  # noqa: E402
from emofuse.data.corpora.synthetic import EMOTION_WORDS, EMOTIONS, VOICES, prepare_synthetic  # noqa: E402
from emofuse.data.labels import get_scheme  # noqa: E402

SMALL = dict(num_speakers=2, per_class=2, progress=False)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """The default-size corpus (4 speakers x 4 classes x 12), generated once for this module."""
    root = tmp_path_factory.mktemp("synthetic")
    start = time.perf_counter()
    prep = prepare_synthetic(root, progress=False)
    return prep, root, time.perf_counter() - start


def _words(text):
    return set(re.findall(r"[a-z']+", text.lower()))


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.wav")}


def _relative(prep, root):
    return [r.model_copy(update={"audio": str(r.audio_path().relative_to(root))}).model_dump() for r in prep.records]


# --- size, balance, speakers, records ----------------------------------------------------------


def test_default_size_balance_and_speed(default):
    prep, root, seconds = default
    assert len(prep.records) == 192
    assert prep.name == "synthetic" and prep.scheme == "synthetic4" and prep.classes == EMOTIONS
    assert prep.label_counts() == {e: 48 for e in EMOTIONS}
    assert prep.report.ok, prep.report.summary()
    assert seconds < 30, f"default generation took {seconds:.1f} s"
    per_speaker = Counter((r.speaker, r.label) for r in prep.records)
    assert set(per_speaker.values()) == {12}


def test_speakers_are_distinct_voices(default):
    prep, _, _ = default
    speakers = {r.speaker: (r.extra["voice"], r.extra["gender"]) for r in prep.records}
    assert sorted(speakers) == ["spk0", "spk1", "spk2", "spk3"]
    voices = [v for v, _ in speakers.values()]
    assert len(set(voices)) == 4
    assert {g for _, g in speakers.values()} == {"female", "male"}
    assert all(r.session == r.speaker and r.dialogue is None and r.split is None for r in prep.records)


def test_records_point_at_16k_mono_pcm16_wavs(default):
    prep, root, _ = default
    for r in prep.records:
        path = r.audio_path()
        assert path.is_absolute() and path.parent == root / "wav" / r.speaker
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - r.extra["duration"]) < 1e-3
        assert r.raw_label == r.label and r.text.strip()
    assert len(list((root / "wav").rglob("*.wav"))) == 192


def test_ids_do_not_reveal_the_label(default):
    prep, _, _ = default
    for r in prep.records:
        assert re.fullmatch(r"spk\d_\d{3}", r.id)
    # within a speaker, the order of classes is shuffled
    first = [r.label for r in prep.records if r.speaker == "spk0"][:12]
    assert len(set(first)) > 1


def test_registry_and_scheme():
    assert get_recipe("synthetic") is prepare_synthetic
    assert get_scheme("synthetic4").classes == ("neutral", "happy", "sad", "angry")


# --- text and conflicts ---------------------------------------------------------------------


def test_conflicts_follow_the_label_rule(default):
    prep, _, _ = default
    per_class = Counter()
    kinds = Counter()
    for r in prep.records:
        x = r.extra
        if not x["conflict"]:
            assert x["conflict_type"] is None
            assert x["text_emotion"] == x["prosody_emotion"] == r.label
            continue
        per_class[r.label] += 1
        kinds[x["conflict_type"]] += 1
        if x["conflict_type"] == "text":  # the words disagree, the voice carries the label
            assert x["prosody_emotion"] == r.label != x["text_emotion"]
        else:  # the voice disagrees, the words carry the label
            assert x["conflict_type"] == "prosody"
            assert x["text_emotion"] == r.label != x["prosody_emotion"]
    assert per_class == {e: round(0.2 * 48) for e in EMOTIONS}
    assert abs(kinds["text"] - kinds["prosody"]) <= 4
    # neither modality alone gives the label every time
    text_acc = np.mean([r.extra["text_emotion"] == r.label for r in prep.records])
    prosody_acc = np.mean([r.extra["prosody_emotion"] == r.label for r in prep.records])
    assert 0.8 < text_acc < 1.0 and 0.8 < prosody_acc < 1.0


def test_neutral_conflicts_leave_one_channel_uninformative():
    """``conflict_mode="neutral"``: the disagreeing channel is neutral, only emotional classes conflict."""
    p = syn._check_params(0, 4, 10, 0.4, None, "neutral")
    items = syn._plan(p)
    per_class, kinds = Counter(), Counter()
    for it in items:
        if it.conflict_type is None:
            assert it.text_emotion == it.prosody_emotion == it.label
            continue
        per_class[it.label] += 1
        kinds[it.conflict_type] += 1
        carrier, other = (
            (it.prosody_emotion, it.text_emotion)
            if it.conflict_type == "text"
            else (
                it.text_emotion,
                it.prosody_emotion,
            )
        )
        assert carrier == it.label != "neutral" and other == "neutral"
    assert per_class == {e: round(0.4 * 40) for e in EMOTIONS if e != "neutral"}
    assert kinds["text"] == kinds["prosody"] == 24
    # each channel alone confuses the other channel's emotions with neutral; together they give every label
    assert all(it.label == (it.text_emotion if it.text_emotion != "neutral" else it.prosody_emotion) for it in items)
    # the default ("other") is unchanged: its parameters and plan are what they were before the option
    assert "conflict_mode" not in syn._check_params(0, 4, 10, 0.4, None).to_json()
    assert syn._plan(syn._check_params(0, 4, 10, 0.4, None)) != items


def test_texts_carry_their_emotion_words(default):
    prep, _, _ = default
    vocab = {e: set(w["adj"]) | set(w["noun"]) for e, w in EMOTION_WORDS.items()}
    for r in prep.records:
        words = _words(r.text)
        te = r.extra["text_emotion"]
        assert words & set(EMOTION_WORDS[te]["adj"]), r.text
        assert words & set(EMOTION_WORDS[te]["noun"]), r.text
        for other in EMOTIONS:
            if other != te:
                assert not words & vocab[other], (r.text, other)
        if r.label == "happy" and not r.extra["conflict"]:
            assert words & vocab["happy"]
    assert len({r.text for r in prep.records}) > 150  # seeded choices vary the sentences


# --- the prosody is really in the signal (measured) -----------------------------------------


def _f0(wav, sr=16000):
    """Median autocorrelation pitch (Hz) over the loud frames."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    frames = np.stack([wav[i : i + frame] for i in range(0, len(wav) - frame, hop)])
    rms = np.sqrt((frames**2).mean(axis=1))
    lo, hi = sr // 400, sr // 60
    out = []
    for f in frames[rms > 0.3 * rms.max()]:
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[frame - 1 :]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5:
            out.append(sr / lag)
    return float(np.median(out)) if out else float("nan")


@pytest.fixture(scope="module")
def measures(default):
    prep, _, _ = default
    m = defaultdict(lambda: defaultdict(list))
    for r in prep.records:
        speech = trim_silence(load_audio(r.audio), top_db=35)
        e, s = r.extra["prosody_emotion"], r.speaker
        m[e]["rms"].append(float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))))
        m[e]["sec_per_word"].append(len(speech) / 16000 / len(r.text.split()))
        m[e][s].append(_f0(speech))
    return m


def test_loudness_follows_prosody(measures):
    rms = {e: np.mean(measures[e]["rms"]) for e in EMOTIONS}
    assert rms["angry"] > 1.3 * rms["neutral"]
    assert rms["happy"] > 1.3 * rms["neutral"]
    assert rms["neutral"] > 1.3 * rms["sad"]


def test_speaking_rate_follows_prosody(measures):
    spw = {e: np.mean(measures[e]["sec_per_word"]) for e in EMOTIONS}
    assert spw["sad"] > 1.3 * spw["neutral"]
    assert spw["neutral"] > spw["happy"] > spw["angry"]
    assert spw["sad"] > 1.6 * spw["angry"]


def test_pitch_follows_prosody(measures):
    for spk in ("spk0", "spk1", "spk2", "spk3"):
        f0 = {e: np.nanmedian(measures[e][spk]) for e in EMOTIONS}
        assert f0["happy"] > 1.15 * f0["neutral"], (spk, f0)
        assert f0["happy"] > 1.3 * f0["sad"], (spk, f0)
    # averaged over speakers (log ratio), sad is lower than neutral
    speakers = ("spk0", "spk1", "spk2", "spk3")
    ratio = np.mean([np.log(np.nanmedian(measures["sad"][s]) / np.nanmedian(measures["neutral"][s])) for s in speakers])
    assert ratio < -0.1


# --- determinism, caching, refusal ----------------------------------------------------------


def test_same_seed_gives_identical_corpus(tmp_path):
    a = prepare_synthetic(tmp_path / "a", **SMALL)
    b = prepare_synthetic(tmp_path / "b", **SMALL)
    assert len(a.records) == 16
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    assert _relative(a, tmp_path / "a") == _relative(b, tmp_path / "b")
    c = prepare_synthetic(tmp_path / "c", seed=1, **SMALL)
    assert _hashes(tmp_path / "c") != _hashes(tmp_path / "a")
    assert [r.text for r in c.records] != [r.text for r in a.records]


def test_second_call_uses_the_cache(tmp_path, monkeypatch):
    first = prepare_synthetic(tmp_path, **SMALL)
    cache = json.loads((tmp_path / "synthetic.json").read_text())
    assert cache["version"] == syn.GENERATOR_VERSION and cache["complete"] is True
    assert cache["params"]["seed"] == 0 and len(cache["records"]) == 16
    assert not cache["records"][0]["audio"].startswith("/")  # relative inside the folder
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")}

    def boom(item):
        raise AssertionError("synthesised again")

    monkeypatch.setattr(syn, "_render", boom)
    second = prepare_synthetic(tmp_path, **SMALL)
    assert second.records == first.records
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")} == mtimes
    assert any("nothing synthesised" in n for n in second.report.notes)


def test_missing_wav_is_remade_identically(tmp_path, monkeypatch):
    first = prepare_synthetic(tmp_path, **SMALL)
    before = _hashes(tmp_path)
    victim = first.records[5].audio_path()
    victim.unlink()
    calls = []
    render = syn._render
    monkeypatch.setattr(syn, "_render", lambda item: calls.append(item.id) or render(item))
    again = prepare_synthetic(tmp_path, **SMALL)
    assert calls == [first.records[5].id]
    assert _hashes(tmp_path) == before
    assert again.records == first.records


def test_other_parameters_refused_without_overwrite(tmp_path):
    prepare_synthetic(tmp_path, **SMALL)
    with pytest.raises(FileExistsError, match=r"per_class: 2 -> 1.*overwrite=True"):
        prepare_synthetic(tmp_path, num_speakers=2, per_class=1, progress=False)
    smaller = prepare_synthetic(tmp_path, num_speakers=2, per_class=1, progress=False, overwrite=True)
    assert len(smaller.records) == 8
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav"))
    assert on_disk == sorted(r.audio_path().relative_to(tmp_path).as_posix() for r in smaller.records)
    assert json.loads((tmp_path / "synthetic.json").read_text())["params"]["per_class"] == 1


def test_foreign_folder_is_never_silently_used(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_synthetic(tmp_path, **SMALL)
    assert not (tmp_path / "wav").exists()
    prep = prepare_synthetic(tmp_path, overwrite=True, **SMALL)
    assert len(prep.records) == 16 and mine.read_text() == "user data"


def test_no_temporary_files_left(tmp_path):
    prepare_synthetic(tmp_path, **SMALL)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


# --- options --------------------------------------------------------------------------------


def test_no_conflicts_and_no_noise(tmp_path):
    prep = prepare_synthetic(tmp_path, conflict_rate=0.0, noise_snr_db=None, **SMALL)
    assert not any(r.extra["conflict"] for r in prep.records)
    assert all(r.extra["snr_db"] is None for r in prep.records)


def test_noise_is_added_at_the_requested_snr(tmp_path):
    clean = prepare_synthetic(tmp_path / "clean", noise_snr_db=None, **SMALL)
    noisy = prepare_synthetic(tmp_path / "noisy", noise_snr_db=10.0, **SMALL)
    for c, n in zip(clean.records[:4], noisy.records[:4], strict=True):
        assert n.extra["snr_db"] == 10.0 and c.text == n.text
        a, b = load_audio(c.audio), load_audio(n.audio)
        noise = b - a
        speech = trim_silence(a, top_db=40)
        snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert 8.5 < snr < 11.5


def test_more_speakers_use_more_voices(tmp_path):
    prep = prepare_synthetic(tmp_path, num_speakers=len(VOICES), per_class=1, progress=False)
    assert len({r.extra["voice"] for r in prep.records}) == len(VOICES)


def test_other_label_scheme_drops_and_counts(tmp_path):
    prep = prepare_synthetic(tmp_path, labels="iemocap4", **SMALL)  # maps 'sad' but not 'happy' etc.
    assert prep.scheme == "iemocap4" and {r.label for r in prep.records} == {"sad"}
    assert prep.dropped == {"neutral": 4, "happy": 4, "angry": 4}


def test_progress_bar(tmp_path):
    prep = prepare_synthetic(tmp_path, num_speakers=1, per_class=1, progress=True)
    assert len(prep.records) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_speakers": 0}, "num_speakers"),
        ({"num_speakers": 9}, "num_speakers"),
        ({"per_class": 0}, "per_class"),
        ({"conflict_rate": 1.5}, "conflict_rate"),
        ({"noise_snr_db": (30.0, 10.0)}, "noise_snr_db"),
        ({"seed": -1}, "seed"),
        ({"conflict_mode": "opposite"}, "conflict_mode must be one of other, neutral"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_synthetic(tmp_path, progress=False, **kwargs)
    assert not any(tmp_path.iterdir())


def test_root_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        prepare_synthetic(f, **SMALL)


# --- continuous targets (regression) ----------------------------------------------------------


def test_vocal_arousal_hand_computed():
    from emofuse.data.corpora.synthetic import vocal_arousal

    # spans: rate 110-210, volume 70-200, range 20-80
    assert vocal_arousal({"rate": 210, "volume": 200, "range": 80}) == 1.0
    assert vocal_arousal({"rate": 110, "volume": 70, "range": 20}) == -1.0
    # neutral table prosody: rate 0, volume 2 * 40 / 130 - 1, range 0
    assert vocal_arousal({"rate": 160, "volume": 110, "range": 50}) == round((2 * 40 / 130 - 1) / 3, 4)
    assert vocal_arousal({"rate": 400, "volume": 200, "range": 100}) == 1.0  # clipped
    with pytest.raises(KeyError):
        vocal_arousal({"rate": 160, "volume": 110})


def test_records_carry_continuous_targets(default):
    from emofuse.data.corpora.synthetic import AFFECT, vocal_arousal

    prep, _, _ = default
    for r in prep.records:
        assert (r.extra["valence"], r.extra["arousal"]) == AFFECT[r.label]
        assert r.extra["vocal_arousal"] == vocal_arousal(r.extra["prosody"])
        assert -1.0 <= r.extra["vocal_arousal"] <= 1.0
    # the vocal arousal follows the voice's emotion (sad lowest, angry highest) and varies within a class
    by = {e: [r.extra["vocal_arousal"] for r in prep.records if r.extra["prosody_emotion"] == e] for e in EMOTIONS}
    means = {e: float(np.mean(v)) for e, v in by.items()}
    assert means["sad"] < means["neutral"] < means["happy"] < means["angry"]
    assert all(np.std(v) > 0.02 for v in by.values())
