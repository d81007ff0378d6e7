"""Field names of the prepared records (train / eval / validation examples, ranking lists) and of the
per-example predictions, spelled once: prepare writes them, evaluate, baselines, recommend and the
callbacks read them."""

USER_ID, MOVIE_ID, LABEL, WARM = "user_id", "movie_id", "label", "warm"  # and TIMESTAMP: data.movielens'
LIST_ID, RELEVANT = "list_id", "relevant"  # ranking lists: one list per user, relevant = a liked eval target
P_YES = "p_yes"  # predictions: the model's P(Yes)
