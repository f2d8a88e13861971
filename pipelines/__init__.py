"""ReviewOps pipelines: data generation, validation, versioning and the model families."""

__version__ = "0.1.0"
