"""DimeRec Explorer: DimeRec (diffusion with multi-interest enhanced recommendation), its baselines,
and tools to see it work."""
__version__ = "0.1.0"
