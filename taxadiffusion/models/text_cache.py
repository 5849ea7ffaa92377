"""Frozen text encoder with a cache: each distinct string is encoded once, not once per sample per step."""

from __future__ import annotations

import torch


class TextEmbeddingCache:
    """Maps strings to ``last_hidden_state`` ``[T, D]`` of a frozen text encoder, memoised."""

    def __init__(self, text_encoder, tokenizer, device: torch.device | str = "cpu", batch_size: int = 256):
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}
        self.encoder_calls = 0  # number of strings actually pushed through the encoder (for tests/benchmarks)

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        ids = tokens.input_ids.to(self.text_encoder.device)
        self.encoder_calls += len(texts)
        return self.text_encoder(ids)[0].float()

    def warm(self, texts) -> None:
        missing = sorted({t for t in texts if t not in self._cache})
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            states = self._encode(chunk).to(self.device)
            for text, state in zip(chunk, states):
                self._cache[text] = state

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """``texts`` (N strings) -> ``[N, T, D]`` on ``self.device``."""
        self.warm(texts)
        return torch.stack([self._cache[t] for t in texts])

    def lineages(self, batch_texts: list[list[str]]) -> torch.Tensor:
        """``B`` lists of ``L`` level texts -> ``[B, L, T, D]``."""
        flat = [t for row in batch_texts for t in row]
        states = self(flat)
        return states.view(len(batch_texts), len(batch_texts[0]), *states.shape[1:])

    def __len__(self) -> int:
        return len(self._cache)
