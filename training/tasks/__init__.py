"""Task datasets and objectives: pre-training masks and objective, enhancement and separation, TTS."""
