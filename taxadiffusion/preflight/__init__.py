"""Pipeline phase *preflight* (stage ``preflight``, the first of the DAG): every problem that can be known before any
data is prepared or anything trained, reported together in one message. ``run`` (the stage: the message and
``data/preflight.json``), ``weights`` (the metric backbones' weights, found as ``evaluate`` finds them), ``base_model``
(``model.pretrained`` and its native resolution), ``plan`` (the data as ``prepare`` would read it, the generation plan
and the disk it needs).
"""
