"""Network architectures robaug builds itself (ADM, EDM) for the papers' own checkpoints."""
