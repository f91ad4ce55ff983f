"""Segmentation strategies: pure logic over a predictor (`set_image(image, key)`, `predict(boxes)`).

A strategy never knows which model it drives.
"""
