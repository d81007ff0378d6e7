"""Prompt text: the exact format, and the vectorised path equal to render_input byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from movierec.data.prompts import render_input, render_inputs


def test_render_input_format():
    text = render_input(["Heat (1995)", "Waterworld (1995)", "Amélie (2001)"], [4.5, 2.0, 4.0],
                        "Fargo (1996)", "Comedy|Crime|Drama", 4.0)
    assert text == (
        "The user's ratings, oldest first.\n"
        "Liked (4 stars or more):\n"
        "- Heat (1995): 4.5 stars\n"
        "- Amélie (2001): 4.0 stars\n"
        "Disliked (below 4 stars):\n"
        "- Waterworld (1995): 2.0 stars\n"
        "Candidate movie: Fargo (1996)\n"
        "Genres: Comedy, Crime, Drama"
    )
    empty = render_input([], [], "Toy Story (1995)", "(no genres listed)", 3.5)
    assert "Liked (3.5 stars or more):\n- (none)\nDisliked (below 3.5 stars):\n- (none)\n" in empty
    assert empty.endswith("Genres: (no genres listed)")


@pytest.mark.parametrize("threshold", [4.0, 3.5])
def test_vectorised_equals_single(threshold):
    rng = np.random.default_rng(0)
    titles = np.array(["Heat (1995)", 'Shining, The (1980)', '"Great" Expectations (1998)', "Amélie (2001)",
                       "東京 (2003)", "Face/Off (1997)"], dtype=object)
    lengths = np.array([0, 1, 10, 3, 0, 5, 10, 2])  # empty histories, all liked, all disliked, mixed
    owner = np.repeat(np.arange(len(lengths)), lengths)
    hist_titles = titles[rng.integers(0, len(titles), len(owner))]
    hist_ratings = (rng.integers(1, 11, len(owner)) / 2).astype(np.float32)
    hist_ratings[owner == 1] = 5.0
    hist_ratings[owner == 3] = 0.5
    target_titles = titles[rng.integers(0, len(titles), len(lengths))]
    target_genres = np.array(["Action|Crime|Thriller", "(no genres listed)", "Drama"] * 3, dtype=object)[:len(lengths)]
    batch = render_inputs(owner, hist_titles, hist_ratings, target_titles, target_genres, threshold)
    for i in range(len(lengths)):
        mine = owner == i
        single = render_input(list(hist_titles[mine]), list(hist_ratings[mine]), target_titles[i],
                              target_genres[i], threshold)
        assert batch[i] == single


def test_vectorised_with_no_history_at_all():
    out = render_inputs(np.array([], dtype=int), np.array([], dtype=object), np.array([], dtype=np.float32),
                        np.array(["Heat (1995)"], dtype=object), np.array(["Action"], dtype=object), 4.0)
    assert out[0] == render_input([], [], "Heat (1995)", "Action", 4.0)
