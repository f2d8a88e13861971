"""Serving: everything the reviewer Bento runs, importing only params, numpy, OpenCV/Pillow, onnxruntime and faiss.

photo_input (upload -> RGB or a 4xx), bundle (a registered family's files), models (ONNX Runtime
sessions and YOLO decoding), gallery_index (the SKU gallery's search: exact, or faiss's IVF index for a
large gallery), decision (the one decision rule and the log record).
"""
