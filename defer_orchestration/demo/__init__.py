"""The demo: the bundled project's synthetic sources (``synthetic_data``, the ``raw_tables``
assets in ``assets``) and the end-to-end script behind ``make demo`` (``__main__``:
``python -m defer_orchestration.demo``). Registered only for the bundled project."""
