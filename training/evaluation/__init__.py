"""The parts of the evaluations behind `training.evaluate` (enhancement, separation) and `training.evaluate_tts`.

Split by concern so each piece can be read on its own: test sets (`cases`, `tts_cases`), metrics and scoring
(`scoring`, `tts_metrics`, `tts_scoring`), reports (`report`, `tts_report`) and what both evaluations share
(`common`: manifest and number helpers, JSON; `markdown`: table rows, spectrogram pictures). Import the public API
from `training.evaluate` / `training.evaluate_tts`.
"""
