"""memtutor: the helper package behind the memtutor notebooks.

One module per lesson, holding what the lesson teaches: ``memory`` (01), ``controller`` and
``tasks`` (02), ``replay`` (03), ``meta`` (04), ``continual`` (05), ``tool_agent`` (06),
``memup`` (07). The experiments each notebook runs live in ``experiments`` (``nb01_memory`` ...
``nb07_memup``); shared helpers (seeding, threads, progress, cached results) in ``utils``;
exercise checks in ``exercises``; the course kit in ``course``.
"""

__version__ = "0.1.0"
