"""OpenAI's names for this server's models and voices, accepted so that OpenAI clients work unchanged, and the
figures of OpenAI's speech API that /v1/audio/speech follows."""

from __future__ import annotations

TTS_MODEL_ID = "tts"  # the id /v1/models lists for the TTS model
# accepted as aliases of the TTS model (and listed by /v1/models, so that clients that check the list find them)
OPENAI_SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
# OpenAI's voice names; each is an alias of one built-in voice (in order, round robin)
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar")
OPENAI_SAMPLE_RATE = 24_000  # every format of OpenAI's speech, pcm included (16-bit little-endian, no header)
OPENAI_MAX_INPUT_CHARS = 4096  # the longest input OpenAI's speech endpoint takes


def openai_aliases(voices: list[str]) -> dict[str, str]:
    """OpenAI voice name -> built-in voice id (none when there are no built-in voices)."""
    ordered = sorted(voices)
    return {name: ordered[i % len(ordered)] for i, name in enumerate(OPENAI_VOICES)} if ordered else {}
