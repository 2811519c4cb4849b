"""The evaluations: enhancement and separation (`evaluate`), zero-shot TTS (`evaluate_tts`), vocoders (`vocoder`),
the speech metrics and classical peers they share (`metrics`) and the quality-vs-cost report (`sampling_report`).

The parts of `evaluate` and `evaluate_tts` are split by concern so each piece can be read on its own: test sets
(`cases`, `tts_cases`), metrics and scoring (`scoring`, `tts_metrics`, `tts_scoring`), reports (`report`,
`tts_report`) and what both evaluations share (`common`: manifest and number helpers, JSON; `markdown`: table rows,
spectrogram pictures). Import the public API from `training.evaluation.evaluate` / `training.evaluation.evaluate_tts`.
"""
