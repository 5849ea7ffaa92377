"""One-off tools: ``taxadiffusion paramcount`` (Table S1 counts) and ``taxadiffusion pretrain`` (the tiny base).
"""
