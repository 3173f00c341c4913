"""ROS-free core: crop, geometry, landmarks, model manifest and inference stages.

Nothing under this package may import rclpy or any ROS message package (a test enforces it), so
the training package and offline tools use it on machines without ROS.
"""
