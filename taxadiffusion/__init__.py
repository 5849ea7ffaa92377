"""taxadiffusion: progressive taxonomy-conditioned diffusion (TaxaDiffusion, ICCV 2025) as a DVC pipeline."""

__version__ = "0.1.0"
