"""Prompt text: the exact format, and the vectorised path equal to render_input byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from movierec.data.prompts import (
    candidate_stats_line,
    cf_line,
    render_input,
    render_inputs,
    user_stats_line,
)


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


def test_hybrid_lines_format():
    assert user_stats_line(212, 3.6543, 0.554) == "The user's earlier ratings: 212 in all, 3.65 stars on average, 55% liked"
    assert user_stats_line(0, 0.0, 0.0) == "The user's earlier ratings: none"
    assert candidate_stats_line(7, 4.25) == "The candidate's earlier ratings: 7 in all, 4.25 stars on average"
    assert candidate_stats_line(0, 0.0) == "The candidate's earlier ratings: none"
    assert cf_line(0.7349) == "Collaborative filtering estimate: 0.73 chance of liking"
    assert cf_line(float("nan")) == "Collaborative filtering estimate: unavailable"
    text = render_input(["Heat (1995)"], [4.5], "Fargo (1996)", "Crime", 4.0, user_stats_line(1, 4.5, 1.0),
                        [candidate_stats_line(3, 3.0), cf_line(0.5)])
    assert text.endswith("- (none)\nThe user's earlier ratings: 1 in all, 4.50 stars on average, 100% liked\n"
                         "Candidate movie: Fargo (1996)\nGenres: Crime\n"
                         "The candidate's earlier ratings: 3 in all, 3.00 stars on average\n"
                         "Collaborative filtering estimate: 0.50 chance of liking")


def test_vectorised_equals_single_with_hybrid_lines():
    owner = np.array([0, 0, 2])
    titles = np.array(["Heat (1995)", "Amélie (2001)", "Face/Off (1997)"], dtype=object)
    ratings = np.array([4.5, 2.0, 3.0])
    targets = np.array(["Fargo (1996)", "東京 (2003)", "Heat (1995)"], dtype=object)
    genres = np.array(["Crime|Drama", "(no genres listed)", "Action"], dtype=object)
    users = np.array([user_stats_line(2, 3.25, 0.5), user_stats_line(0, 0, 0), user_stats_line(9, 3.0, 0.1)],
                     dtype=object)
    tails = [np.array([candidate_stats_line(n, 3.5) for n in (0, 4, 1)], dtype=object),
             np.array([cf_line(p) for p in (0.1, float("nan"), 0.97)], dtype=object)]
    batch = render_inputs(owner, titles, ratings, targets, genres, 4.0, users, tails)
    for i in range(3):
        mine = owner == i
        assert batch[i] == render_input(list(titles[mine]), list(ratings[mine]), targets[i], genres[i], 4.0, users[i],
                                        [t[i] for t in tails])
    only_tail = render_inputs(owner, titles, ratings, targets, genres, 4.0, None, tails[1:])
    assert only_tail[1] == render_input([], [], targets[1], genres[1], 4.0, None, [tails[1][1]])
