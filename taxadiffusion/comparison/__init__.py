"""Pipeline phase *comparison* (the paper's baseline and ablation tables): stages ``method_train@<m>`` (``train``),
``method@<m>`` (``sample``) and ``compare`` (``table``); what each method is: ``methods``.
"""
