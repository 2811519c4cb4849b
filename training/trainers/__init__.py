"""The training loop and one entry point per model (pre-training, fine-tuning, vocoder, duration, aligner), the
data-path benchmark and the end-to-end recipe."""
