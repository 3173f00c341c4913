"""headpose_ros: multi-task head pose, landmarks and visibility (MNN+OR) for ROS 2.

``headpose_ros.core`` is the ROS-free algorithmic core shared with the training package; the
modules directly under ``headpose_ros`` adapt it to ROS messages and nodes.
"""
