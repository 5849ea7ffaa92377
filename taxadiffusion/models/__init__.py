"""Model pieces: the taxonomy condition module, base-model presets, LoRA, text-embedding cache."""
