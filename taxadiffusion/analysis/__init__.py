"""Multi-experiment analysis (no stage of its own; run after ``dvc exp run``): ``taxadiffusion aggregate``
(``aggregate``, ``seed_tables``, ``snapshot``) and ``taxadiffusion sweep`` (``sweep``), both reading
``dvc exp show --json`` through ``expshow``.
"""
