"""The synthetic speech corpus: engine voices, per-utterance prosody and the corpus builder."""
