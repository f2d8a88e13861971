"""Active learning: the photos the models are least sure of go to annotators; their labels come back as a batch.

``pool`` (the unlabelled photos) -> ``scores`` (probability, uncertainty, embedding) -> ``select`` (the
choice, ``select_queue``) -> ``label_studio`` (the queue folder, Label Studio's files) ... annotators ...
-> ``answers`` (their export back as a batch in ``data/incoming/``). The prediction log as a pool is read by
the app layer (``pipelines/app/active_learning.py``): this package does not import ``monitoring``.
"""
