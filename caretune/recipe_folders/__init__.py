"""The recipe folders under recipes/: their generator and the rules every folder keeps."""
