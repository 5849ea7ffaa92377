"""Plumbing every phase uses: one-line errors, atomic files, the device rule, and the one place names become
paths (``names``), lineages become keys and seeds (``lineage``) and text becomes inert (``text``).
"""
