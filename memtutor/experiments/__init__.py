"""Experiment drivers: what a notebook runs, kept apart from what it teaches.

The lesson modules (``memtutor.memory``, ``memtutor.controller``, ...) hold the equations, models,
data and training steps a notebook builds and checks. The modules here run them as the notebooks'
experiments do (seed loops, grids, ablation tables, sweeps, cost measurements, the cached-result
configurations) — one module per notebook, named after it.
"""
