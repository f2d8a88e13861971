"""Procedural listing photos: catalogue, backgrounds, products, defects and the scene that composes them."""
