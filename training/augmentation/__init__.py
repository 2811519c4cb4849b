"""Seeded augmentation: noise, levels, mixing, reverberation, colouration and who is mixed with whom."""
