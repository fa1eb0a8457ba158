"""Synthetic noise and music in MUSAN layout, for the embedded corpus where MUSAN is absent.

Writes ``<out>/noise/synthetic/*.wav`` (white, pink and brown noise, mains hum, a fan) and
``<out>/music/synthetic/*.wav`` (pieces built from random note sequences: a melody, chords
and a bass line of harmonic tones with envelopes, over a drum pattern), 16 kHz mono 16-bit.
The ``speech/`` folder of the same dir (babble voices) is left to whoever makes it.
Everything is generated from one seed, so the same seed gives the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from espnet_probe.audio.io import SAMPLE_RATE, write_wav

SR = SAMPLE_RATE
NOISE_KINDS = ("white", "pink", "brown", "hum", "fan")


def _normalise(x: np.ndarray, rms_dbfs: float, peak: float = 0.9) -> np.ndarray:
    """Scale to an RMS level, then further down if the peak would pass ``peak``."""
    x = x - x.mean()
    x = x * (10 ** (rms_dbfs / 20) / np.sqrt(np.mean(x ** 2)))
    top = np.max(np.abs(x))
    return (x * (peak / top) if top > peak else x).astype(np.float32)


def _shaped_noise(n: int, rng: np.random.Generator, gain_of_freq) -> np.ndarray:
    """White Gaussian noise filtered in the frequency domain by ``gain_of_freq(f_hz)``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    return np.fft.irfft(spec * gain_of_freq(f), n)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator,
                   f_low: float = 20.0) -> np.ndarray:
    """Power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown); nothing below ``f_low``
    so the low end cannot drift like a random walk."""
    def gain(f):
        g = np.zeros_like(f)
        keep = f >= f_low
        g[keep] = f[keep] ** (-exponent / 2)
        return g
    return _shaped_noise(n, rng, gain)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with decaying harmonics, slowly wavering, over a faint hiss."""
    f0 = float(rng.choice([50.0, 60.0]))
    t = np.arange(n) / SR
    x = np.zeros(n)
    for k in range(1, 13):
        drift = 1 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t)  # grid wander
        amp = rng.uniform(0.5, 1.0) / k ** 1.2
        x += amp * np.sin(2 * np.pi * k * f0 * drift * t + rng.uniform(0, 2 * np.pi))
    x *= 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    hiss = coloured_noise(n, 1.0, rng)
    return x / np.std(x) + 0.05 * hiss / np.std(hiss)


def fan(n: int, rng: np.random.Generator) -> np.ndarray:
    """A fan: broadband airflow noise peaking in the low-mids, a blade-pass tone, a slow swish."""
    centre = rng.uniform(300, 700)
    air = _shaped_noise(n, rng, lambda f: 1 / (1 + ((np.log2(np.maximum(f, 1) / centre)) / 1.3) ** 2)
                        * (f > 40))
    air /= np.std(air)
    t = np.arange(n) / SR
    rot = rng.uniform(8, 20)           # revolutions per second
    blades = int(rng.integers(3, 8))
    tone = sum(np.sin(2 * np.pi * h * rot * blades * t + rng.uniform(0, 2 * np.pi)) / h ** 1.5
               for h in range(1, 5))
    swish = 1 + 0.25 * np.sin(2 * np.pi * rot * t)
    return air * swish + 0.3 * tone


def synth_noise(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(round(seconds * SR))
    if kind in ("white", "pink", "brown"):
        x = coloured_noise(n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)
    elif kind == "hum":
        x = hum(n, rng)
    elif kind == "fan":
        x = fan(n, rng)
    else:
        raise ValueError(f"unknown noise kind '{kind}' (known: {', '.join(NOISE_KINDS)})")
    return _normalise(x, rms_dbfs=-26.0)


# ----------------------------------------------------------------------------- music

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _envelope(n_on: int, n_total: int, attack: float, decay: float, sustain: float,
              release: float) -> np.ndarray:
    """ADSR: rise, fall to the sustain level while the key is held, then an exponential tail."""
    t = np.arange(n_total) / SR
    a = max(attack, 1e-3)
    env = np.where(t < a, t / a, sustain + (1 - sustain) * np.exp(-(t - a) / max(decay, 1e-3)))
    held = n_on / SR
    level_at_release = env[min(n_on, n_total - 1)]
    after = t >= held
    env[after] = level_at_release * np.exp(-(t[after] - held) / max(release, 1e-3))
    return env


def _tone(freq: float, dur: float, timbre: dict, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone: partials k*f with amplitude k**-tilt, below Nyquist, under an ADSR."""
    tail = 4 * timbre["release"]
    n_total = int((dur + tail) * SR)
    t = np.arange(n_total) / SR
    vib = timbre.get("vibrato", 0.0) * np.sin(2 * np.pi * 5.5 * t) * np.minimum(t / 0.3, 1)
    phase = 2 * np.pi * freq * (t + np.cumsum(vib) / SR)
    x = np.zeros(n_total)
    for k in range(1, timbre["partials"] + 1):
        if k * freq >= 0.45 * SR:
            break
        x += k ** -timbre["tilt"] * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    env = _envelope(int(dur * SR), n_total, timbre["attack"], timbre["decay"],
                    timbre["sustain"], timbre["release"])
    return x * env


def _drum(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "kick":   # a sine sweeping down, fast decay
        t = np.arange(int(0.3 * SR)) / SR
        f = 45 + 90 * np.exp(-t / 0.04)
        return np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / 0.12)
    if kind == "snare":  # noise burst plus a short body tone
        t = np.arange(int(0.25 * SR)) / SR
        noise = np.diff(rng.standard_normal(t.size + 1))  # tilt towards the highs
        return (0.6 * noise * np.exp(-t / 0.06)
                + 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05))
    if kind == "hat":    # very short, very bright noise
        t = np.arange(int(0.08 * SR)) / SR
        noise = np.diff(rng.standard_normal(t.size + 2), 2)
        return 0.25 * noise * np.exp(-t / 0.015)
    raise ValueError(kind)


def _add(buf: np.ndarray, sig: np.ndarray, start_s: float, gain: float) -> None:
    i = int(start_s * SR)
    if i >= buf.size:
        return
    j = min(buf.size, i + sig.size)
    buf[i:j] += gain * sig[:j - i]


INSTRUMENTS = {  # additive "patches": number of partials, spectral tilt, ADSR, vibrato depth
    "organ": dict(partials=8, tilt=1.0, attack=0.02, decay=0.3, sustain=0.8, release=0.08),
    "string": dict(partials=14, tilt=1.0, attack=0.12, decay=0.4, sustain=0.7, release=0.25,
                   vibrato=0.004),
    "pluck": dict(partials=12, tilt=1.6, attack=0.004, decay=0.25, sustain=0.0, release=0.2),
    "flute": dict(partials=4, tilt=2.2, attack=0.06, decay=0.2, sustain=0.8, release=0.1,
                  vibrato=0.006),
    "bass": dict(partials=6, tilt=1.4, attack=0.01, decay=0.2, sustain=0.5, release=0.1),
}


def synth_music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A random piece: chord progression, melody and bass in one key, over a drum pattern."""
    n = int(round(seconds * SR))
    buf = np.zeros(n + SR)  # room for release tails, cropped at the end
    beat = 60.0 / rng.uniform(80, 140)
    scale = MAJOR if rng.random() < 0.5 else MINOR
    root = int(rng.integers(48, 60))  # C3..B3
    lead = str(rng.choice(["flute", "string", "pluck", "organ"]))
    pad = str(rng.choice(["organ", "string"]))

    def degree(d: int, octave: int = 0) -> int:
        return root + 12 * (octave + d // 7) + scale[d % 7]

    # chords: one per bar of 4 beats, from degrees I, IV, V, vi, ii
    bar, t_bar = 0, 0.0
    while t_bar < seconds:
        d = 0 if bar % 4 == 0 else int(rng.choice([1, 3, 4, 5]))
        for k, step in enumerate((0, 2, 4)):
            _add(buf, _tone(_midi_hz(degree(d + step)), 4 * beat * 0.95, INSTRUMENTS[pad], rng),
                 t_bar, 0.12)
        for b in (0, 2):  # bass on beats 1 and 3
            _add(buf, _tone(_midi_hz(degree(d, -1)), 1.8 * beat, INSTRUMENTS["bass"], rng),
                 t_bar + b * beat, 0.35)
        bar, t_bar = bar + 1, t_bar + 4 * beat

    # melody: a random walk over the scale, one to two octaves above the root
    t, d = 0.0, int(rng.integers(7, 12))
    while t < seconds:
        dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0])) * beat
        if rng.random() > 0.1:  # occasional rest
            _add(buf, _tone(_midi_hz(degree(d)), dur * 0.9, INSTRUMENTS[lead], rng), t, 0.3)
        d = int(np.clip(d + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), 5, 16))
        t += dur

    # drums: kick on 1 and 3, snare on 2 and 4, hi-hat on every eighth
    kick, snare = _drum("kick", rng), _drum("snare", rng)
    for i in range(int(seconds / beat) + 1):
        _add(buf, kick if i % 2 == 0 else snare, i * beat, 0.5 if i % 2 == 0 else 0.35)
        for half in (0.0, 0.5):
            _add(buf, _drum("hat", rng), (i + half) * beat, 0.5)
    return _normalise(buf[:n], rms_dbfs=-20.0)


# ----------------------------------------------------------------------------- writer

def make_synthetic_noise(out: str | Path, *, seed: int = 0, seconds: float = 30.0,
                         n_music: int = 4) -> dict[str, list[Path]]:
    """Write the synthetic noise and music folders under ``out``; returns the files written."""
    if seconds <= 0 or n_music < 1:
        raise ValueError("seconds must be > 0 and n_music >= 1")
    out = Path(out)
    written: dict[str, list[Path]] = {"noise": [], "music": []}
    for i, kind in enumerate(NOISE_KINDS):
        rng = np.random.default_rng([seed, 0, i])  # one stream per file: stable if kinds grow
        path = out / "noise" / "synthetic" / f"{kind}.wav"
        write_wav(path, synth_noise(kind, seconds, rng))
        written["noise"].append(path)
    for i in range(n_music):
        rng = np.random.default_rng([seed, 1, i])
        path = out / "music" / "synthetic" / f"piece{i + 1:02d}.wav"
        write_wav(path, synth_music(seconds, rng))
        written["music"].append(path)
    return written
