"""Who is mixed with whom: speaker engine and gender, and the partner choice of a dynamic two-speaker mixture.

The synthetic corpus names its speakers ``<engine>-<voice...>`` (``espeak-en-gb-f3``, ``flite-slt-0``,
``festival-kal_diphone-1``; `training.synthetic.corpus.make_speakers`). A cut whose supervision carries a gender wins: a
corpus built with any of the richer options (or ``--gender``) writes each speaker's ("male" / "female", from
`training.synthetic.engine_voices`), as do LibriTTS and VCTK through Lhotse's recipes (their engine is unknown, None:
for real talkers the hard case is the same gender only). Otherwise the gender is inferred from the name: espeak-ng
variants from the ``gender`` line of their variant files (and their names where the file has none), flite and festival
voices from the talkers they were recorded from. The original list's misspelt variants (``Linda``, ``Steph``, ...:
`training.synthetic.engine_voices.MISSPELT_VARIANTS`) are male whatever the name says: espeak-ng finds no file for them
and speaks the accent's male base voice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from lhotse.cut import Cut

from model.errors import ConfigError
from training.data.cuts import cut_speaker
from training.synthetic.engine_voices import CLI_VOICE_GENDER, MISSPELT_VARIANTS

ENGINES = ("espeak", "flite", "festival")
# espeak-ng variants: m1-m7 / f1-f5 and the named ones; Andy, Annie, Denis, Lee and anika say so in their files.
_FEMALE_VARIANTS = {"f1", "f2", "f3", "f4", "f5", "annie", "linda", "steph", "anika"}
_MALE_VARIANTS = {"m1", "m2", "m3", "m4", "m5", "m6", "m7", "andy", "denis", "gene", "jacky", "lee", "mike", "paul",
                  "rob", "zac", "iven", "max"}
_VOICE_GENDER = {voice: gender[0] for voice, gender in CLI_VOICE_GENDER.items()}  # flite / festival: "m" / "f"


def speaker_engine(speaker: str | None) -> str | None:
    """The synthesis engine a corpus speaker name starts with, or None (a real talker, an unknown name)."""
    prefix = (speaker or "").split("-", 1)[0]
    return prefix if prefix in ENGINES else None


def speaker_gender(speaker: str | None) -> str | None:
    """"m" / "f" for a synthetic corpus speaker's voice, None when the name does not say."""
    engine = speaker_engine(speaker)
    if engine is None or speaker is None:
        return None
    parts = speaker.split("-")
    if engine == "espeak":
        if parts[-1] in MISSPELT_VARIANTS:
            return "m"  # no such variant file: espeak-ng speaks the base voice
        variant = parts[-1].lower()
        return "f" if variant in _FEMALE_VARIANTS else "m" if variant in _MALE_VARIANTS else None
    return _VOICE_GENDER.get("-".join(parts[1:-1]))  # <engine>-<voice>-<k>


def _gender(cut: Cut, speaker: str | None) -> str | None:
    """The supervision's gender ("male", "F", ...) as "m" / "f" where it has one, else the name's."""
    sup = cut.supervisions[0] if cut.supervisions else None
    given = (getattr(sup, "gender", None) or "").strip().lower()[:1] if sup is not None else ""
    return given if given in ("m", "f") else speaker_gender(speaker)


def speaker_keys(cuts: list[Cut]) -> list[tuple[str, str | None, str | None]]:
    """(speaker, engine, gender) per cut; a cut without a speaker is a speaker of its own (its id)."""
    keys = []
    for cut in cuts:
        speaker = cut_speaker(cut)
        keys.append((speaker or cut.id, speaker_engine(speaker), _gender(cut, speaker)))
    return keys


def pick_partner(rng: np.random.Generator, i: int, keys: list[tuple[str, str | None, str | None]],
                 p_hard: float) -> tuple[int, str]:
    """The index of cut i's partner among `keys` and the kind of pair: with probability p_hard "hard" (another
    speaker of the same engine and gender; where either is unknown, what is known must match), else "any" other
    speaker. A hard pair that the batch cannot offer falls back to "engine" (same engine, any gender), then "any";
    a batch of one speaker pairs different cuts ("self"), a batch of one cut the cut with itself."""
    speaker, engine, gender = keys[i]
    others = [k for k, key in enumerate(keys) if key[0] != speaker]
    kind = "any"
    if others and p_hard > 0.0 and rng.random() < p_hard:
        hard = [k for k in others if keys[k][1] == engine and keys[k][2] == gender]
        same_engine = [k for k in others if engine is not None and keys[k][1] == engine]
        if hard and (engine is not None or gender is not None):
            others, kind = hard, "hard"
        elif same_engine:
            others, kind = same_engine, "engine"
    if not others:
        others, kind = [k for k in range(len(keys)) if k != i] or [i], "self"
    return int(others[int(rng.integers(len(others)))]), kind


@dataclass(frozen=True)
class MixtureConfig:
    """What a synthetic two-speaker training mixture draws from (`training.tasks.enhance_separate.MixtureDataset`).

    - p_hard: the share of mixtures whose partner is another speaker of the same engine and gender (the case the
      evaluation finds hardest: +0.05 dB SI-SDRi for two espeak-ng voices), when the batch holds one; the rest
      take any other speaker of the batch (which is itself often the same engine: espeak-ng has most speakers);
    - rel_db: relative level of the two talkers (dB); max_offset: the later talker's start, at most this share of
      the crop;
    - level_dbfs: range of the mixture's active level (dBFS; sources scaled alike), None keeps the corpus's level.
    """

    p_hard: float = 0.5
    rel_db: tuple[float, float] = (-5.0, 5.0)
    max_offset: float = 0.5
    level_dbfs: tuple[float, float] | None = (-45.0, -12.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_hard <= 1.0 or not 0.0 <= self.max_offset <= 1.0:
            raise ConfigError(f"p_hard and max_offset must be in [0, 1], got {self.p_hard}, {self.max_offset}")
        for name in ("rel_db", "level_dbfs"):
            value = getattr(self, name)
            if value is not None and not value[0] <= value[1]:
                raise ConfigError(f"{name} must be a (low, high) range, got {value}")
        if self.level_dbfs is not None and self.level_dbfs[1] > 0.0:
            raise ConfigError(f"level_dbfs must stay below full scale, got {self.level_dbfs}")
