"""Offline tools (console commands): run the estimator on images, videos, cameras and bags."""
