"""``expblip rate``: the human rating of the paper's Table 5 (correctness 1-10, most complete).

``kit`` (no web imports) reads the predictions and the test records and draws the items;
``store`` keeps the kit and every rating in one SQLite file (WAL, committed per request);
``report`` computes the table (means with 95% CIs, most-complete shares, Krippendorff's
alpha); ``app`` and ``page`` are the FastAPI routes and the rating page; ``cli`` runs either.
Nothing here imports torch or LAVIS.
"""
