"""The engines' voices: more espeak-ng variants for a larger speaker population, and every voice's gender.

espeak-ng variants are files under ``espeak-ng-data/voices/!v`` and are looked up by file name, case-sensitively:
``en-us+Linda`` finds no file (it is ``linda``), and espeak-ng then silently speaks the base voice. Five variants of
the original corpus list (Linda, Paul, Rob, Steph, Zac) are such names, so those speakers are the accent's base
voice with their own pitch, rate and warp; they stay as they are (a seed's corpus must not change), and the extra
variants below are spelt as their files. Each was checked on espeak-ng 1.51 to exist, to sound unlike the base voice
and to give the base voice's phone sequence. Left out: whispered or unvoiced ones (whisper, whisperf, caleb), the
robotic and effect voices (robosoft*, UniRobot, anikaRobot, Demonic, announcer, Tweaky, croak, RicishayMax*), very
breathy ones (grandpa, Storm: under 20 % voiced frames), ``fast`` (a test voice) and ``Mr serious`` (a space).

Gender, "male" / "female" / None: an espeak-ng variant's from the ``gender`` line of its file (None where the file
has none: the voice may still sound either way, zac speaks at ~340 Hz); a variant espeak-ng does not find speaks
the accent's base voice, which espeak-ng lists as male; flite and festival voices from the talkers they were
recorded from.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from pathlib import Path

# Names in `training.synthetic.corpus.ESPEAK_VARIANTS` that espeak-ng does not find (their files are linda, paul, ...).
MISSPELT_VARIANTS = ("Linda", "Paul", "Rob", "Steph", "Zac")
# Spelt as their files; with the original list's working variants they make the pool of extra espeak speakers.
EXTRA_ESPEAK_VARIANTS = ["m8", "linda", "paul", "rob", "steph", "steph2", "steph3", "zac", "Alex", "Alicia", "Andrea",
                         "AnxiousAndy", "adam", "antonio", "aunty", "belinda", "benjamin", "boris", "david", "Diogo",
                         "ed", "edward", "edward2", "Gene2", "grandma", "gustave", "Henrique", "Hugo", "iven2",
                         "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
                         "klatt6", "Marco", "Mario", "michel", "Michael", "miguel", "marcelo", "norbert", "Nguyen",
                         "pablo", "pedro", "quincy", "robert", "sandro", "shelby", "travis", "victor"]
# flite: kal16, awb, rms are male talkers, slt female; festival: kal and ked male diphones, slt (arctic) female.
CLI_VOICE_GENDER = {"kal16": "male", "awb": "male", "rms": "male", "slt": "female", "kal_diphone": "male",
                    "ked_diphone": "male", "cmu_us_slt_arctic_hts": "female"}
_DATA_DIRS = ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/lib/aarch64-linux-gnu/espeak-ng-data",
              "/usr/share/espeak-ng-data", "/usr/lib/espeak-ng-data", "/usr/local/share/espeak-ng-data")


@functools.cache
def espeak_variant_dir() -> Path | None:
    """``espeak-ng-data/voices/!v`` where it is found (``ESPEAK_DATA_PATH`` first, as espeak-ng does), else None."""
    env = os.environ.get("ESPEAK_DATA_PATH")
    candidates = [*([env, os.path.join(env, "espeak-ng-data")] if env else []), *_DATA_DIRS,
                  *sorted(glob.glob("/usr/lib/*/espeak-ng-data"))]
    for root in candidates:
        path = Path(root) / "voices" / "!v"
        if path.is_dir():
            return path
    return None


def variant_exists(variant: str) -> bool | None:
    """Whether espeak-ng finds this variant's file; None when its data directory is not found."""
    root = espeak_variant_dir()
    return None if root is None else (root / variant).is_file()


@functools.cache
def espeak_variant_gender(variant: str) -> str | None:
    """The gender of an espeak-ng variant (see the module's docstring); None when unknown."""
    root = espeak_variant_dir()
    if root is None:
        return None
    path = root / variant
    if not path.is_file():
        return "male"  # espeak-ng ignores the variant: the English base voices, all listed as male, speak
    for line in path.read_text(errors="ignore").splitlines():
        if m := re.match(r"\s*gender\s+(\w+)", line, re.IGNORECASE):
            gender = m.group(1).lower()
            return gender if gender in ("male", "female") else None
    return None


def voice_gender(engine: str, voice: str) -> str | None:
    """A corpus speaker's gender from its engine and voice ("en-gb+f3", "slt", "kal_diphone")."""
    if engine == "espeak":
        return espeak_variant_gender(voice.partition("+")[2]) if "+" in voice else "male"
    return CLI_VOICE_GENDER.get(voice)
