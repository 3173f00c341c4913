"""Offline training of the MNN head-pose network: data, model, losses, export and evaluation.

Depends on :mod:`headpose_ros.core` for everything the robot also does (crop, geometry,
landmark scheme, manifest, decoding, metrics), so training and inference cannot disagree.
"""
