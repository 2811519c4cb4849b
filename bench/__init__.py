"""Load generators and measurement for a SpeechFlow server (`speechflow bench`, the scheduling scenarios, the
soak, streaming latency, tables) and the fake engine they and the tests use. Not part of the serving image."""
