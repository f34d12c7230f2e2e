"""memtutor: the helper package behind the memtutor notebooks.

One module per lesson: ``memory`` (01), ``controller`` and ``tasks`` (02), ``replay`` (03),
``meta`` (04), ``continual`` (05), ``tool_agent`` (06), ``memup`` (07); shared helpers in
``utils``; exercise checks in ``exercises``.
"""

__version__ = "0.1.0"
