"""Pipeline phase *report*: stage ``report`` (``build``: ``reports/index.html``) and its charts (``charts``).
"""
