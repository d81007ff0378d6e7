"""MovieLens data: reading and checks (movielens), synthetic data (synth), download, the
temporal split (split), prompt text (prompts) and the `prepare` stage that ties them together."""
