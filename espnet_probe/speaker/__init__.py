"""Speaker encoders that turn (resynthesised) speech into embeddings for verification scoring."""
