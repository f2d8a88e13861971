"""ReviewOps: the listing-photo review platform, one sub-package per stage of the flow.

    data -> train -> release -> deploy          (the model's way to production)
    serve                                       (what the reviewer Bento runs: numpy, OpenCV, onnxruntime, faiss)
    active_learning                             (uncertain photos to annotators and back as a batch)
    app                                         (the task functions the Airflow DAGs call, the CLI, the demo)

``params`` is the one typed loader of params.yaml that every stage reads.
"""

__version__ = "0.1.0"
