"""The app layer: the task functions the Airflow DAGs call, the ``reviewops`` CLI and ``make demo``."""
