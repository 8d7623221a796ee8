"""Data: where examples come from (sources), how they become tensors (text, images), how they are batched
(sampling)."""
