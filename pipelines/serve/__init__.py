"""Serving: everything the reviewer Bento runs, importing only params, numpy, OpenCV/Pillow and onnxruntime.

photo_input (upload -> RGB or a 4xx), bundle (a registered family's files), models (ONNX Runtime
sessions and YOLO decoding), decision (the one decision rule and the log record).
"""
