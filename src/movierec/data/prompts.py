"""The prompt text: a user's rating history, liked / disliked, then the candidate movie.

`render_input` builds one prompt (recommend uses it for arbitrary candidates); `render_inputs` builds
many at once for `prepare`. Both produce the same bytes for the same example (tested). Example:

    The user's ratings, oldest first.
    Liked (4 stars or more):
    - Heat (1995): 4.5 stars
    Disliked (below 4 stars):
    - (none)
    Candidate movie: Fargo (1996)
    Genres: Comedy, Crime, Drama, Thriller

The hybrid options (data/hybrid.py) add lines, each only when its option is on: the user's statistics
before "Candidate movie", the candidate's statistics and the collaborative filtering estimate after
"Genres". Each line is formatted by one function below, used by both paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

HEADER = "The user's ratings, oldest first."
NONE_LINE = "- (none)"
YES, NO = "Yes", "No"


def _headings(like_threshold: float) -> tuple[str, str]:
    return f"Liked ({like_threshold:g} stars or more):", f"Disliked (below {like_threshold:g} stars):"


def _stars(rating: float) -> str:
    return f"{float(rating):.1f}"


def format_genres(genres: str) -> str:
    """'Action|Crime' -> 'Action, Crime' ('(no genres listed)' stays as it is)."""
    return genres.replace("|", ", ")


def user_stats_line(n: int, mean: float, like_rate: float) -> str:
    """All of the user's earlier ratings, not only the shown ones."""
    if n == 0:
        return "The user's earlier ratings: none"
    return f"The user's earlier ratings: {n} in all, {mean:.2f} stars on average, {like_rate:.0%} liked"


def candidate_stats_line(n: int, mean: float) -> str:
    """Everyone's ratings of the candidate before the target's time."""
    if n == 0:
        return "The candidate's earlier ratings: none"
    return f"The candidate's earlier ratings: {n} in all, {mean:.2f} stars on average"


def cf_line(p: float) -> str:
    """The collaborative model's P(like); NaN where it has none (no model yet, or a candidate it never saw)."""
    if math.isnan(p):
        return "Collaborative filtering estimate: unavailable"
    return f"Collaborative filtering estimate: {p:.2f} chance of liking"


def render_input(history_titles: Sequence[str], history_ratings: Sequence[float], target_title: str,
                 target_genres: str, like_threshold: float, user_line: str | None = None,
                 tail_lines: Sequence[str] = ()) -> str:
    """The `input` text of one example. History oldest first; genres as in movies.csv (pipe-separated);
    `user_line` and `tail_lines` from the *_line functions above (hybrid options; none by default)."""
    liked_head, disliked_head = _headings(like_threshold)
    liked = [f"- {t}: {_stars(r)} stars" for t, r in zip(history_titles, history_ratings) if r >= like_threshold]
    disliked = [f"- {t}: {_stars(r)} stars" for t, r in zip(history_titles, history_ratings) if r < like_threshold]
    return "\n".join([HEADER, liked_head, *(liked or [NONE_LINE]), disliked_head, *(disliked or [NONE_LINE]),
                      *([user_line] if user_line is not None else []),
                      f"Candidate movie: {target_title}", f"Genres: {format_genres(target_genres)}", *tail_lines])


def render_inputs(owner: np.ndarray, history_titles: np.ndarray, history_ratings: np.ndarray,
                  target_titles: np.ndarray, target_genres: np.ndarray, like_threshold: float,
                  user_lines: np.ndarray | None = None, tail_lines: Sequence[np.ndarray] = ()) -> np.ndarray:
    """`render_input` for many examples at once, as an object array of str.

    Args:
        owner: example index (0..n-1) of each history rating, examples in order, each oldest first.
        history_titles, history_ratings: one entry per history rating.
        target_titles, target_genres: one entry per example.
        user_lines, tail_lines: one str per example (hybrid options), as render_input's.
    """
    n = len(target_titles)
    # one concatenation per line: "- Title: " per distinct title, " 4.5 stars" per distinct rating
    title_code, titles = pd.factorize(np.asarray(history_titles, dtype=object))
    rating_code, ratings = pd.factorize(np.asarray(history_ratings))
    heads = np.array([f"- {t}: " for t in titles], dtype=object)
    tails = np.array([f"{_stars(r)} stars" for r in ratings], dtype=object)
    lines = heads[title_code] + tails[rating_code]
    liked = np.asarray(history_ratings) >= like_threshold
    liked_head, disliked_head = _headings(like_threshold)
    genres = pd.Series(target_genres, dtype=object).str.replace("|", ", ", regex=False).to_numpy(dtype=object)
    text = (f"{HEADER}\n{liked_head}\n" + _join_groups(lines[liked], owner[liked], n)
            + f"\n{disliked_head}\n" + _join_groups(lines[~liked], owner[~liked], n))
    if user_lines is not None:
        text = text + "\n" + user_lines
    text = text + "\nCandidate movie: " + np.asarray(target_titles, dtype=object) + "\nGenres: " + genres
    for tail in tail_lines:
        text = text + "\n" + tail
    return text


def _join_groups(lines: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Each example's lines joined by newlines (owner ascending); NONE_LINE where it has none."""
    out = np.full(n, NONE_LINE, dtype=object)
    if len(lines):
        first = np.flatnonzero(np.append(True, owner[1:] != owner[:-1]))
        pieces = lines + "\n"
        last = np.append(first[1:], len(lines)) - 1
        pieces[last] = lines[last]
        out[owner[first]] = np.add.reduceat(pieces, first)  # object add = str concatenation
    return out
