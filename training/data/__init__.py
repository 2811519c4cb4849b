"""Training data: the cut format, manifests and Shar shards, data loading, real corpora, phone alignments and labels."""
