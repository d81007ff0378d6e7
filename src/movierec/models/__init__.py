"""Models: the offline tiny Qwen3, per-architecture parameter counts, export of a merged model."""
